// SPDX-License-Identifier: Apache-2.0
#include "service/model_fetcher.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <spdlog/spdlog.h>

#include "common/text.h"
#include "common/unique_fd.h"
#include "models/model.h"
#include "models/registry.h"

namespace estimator::service {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

// Distinct model-server queries remembered at once; the request path is fed by clients,
// so the table must not grow with whatever they send.
constexpr std::size_t kMaxQueries = 256;
constexpr std::size_t kMaxFeatures = 256;
constexpr std::size_t kMaxFieldBytes = 256;
constexpr long kMaxRedirects = 5;

std::uint64_t fnv1a(std::string_view s) {
  std::uint64_t h = 1469598103934665603ULL;
  for (const char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ULL;
  }
  return h;
}

std::string hex16(std::uint64_t v) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i) {
    out[static_cast<std::size_t>(i)] = kDigits[v & 0xFU];
    v >>= 4U;
  }
  return out;
}

// A server's error text, safe and short enough for one log line.
std::string excerpt(std::string_view body) {
  std::string out;
  for (const char c : body.substr(0, 200)) {
    out += (c >= ' ' && c < 0x7f) ? c : '?';
  }
  if (body.size() > 200) out += "...";
  return out;
}

// A name that is safe as one path component (it becomes a folder name).
std::string path_component(std::string_view s, std::string_view fallback) {
  std::string out;
  for (const char c : s.substr(0, 64)) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_';
    out += ok ? c : '_';
  }
  return out.empty() ? std::string(fallback) : out;
}

bool plain_field(std::string_view s) {
  return s.size() <= kMaxFieldBytes &&
         std::none_of(s.begin(), s.end(), [](unsigned char c) { return c < ' ' || c == 0x7f; });
}

// ---- RAII for the OS and libcurl resources of one transfer -------------------------

struct CurlEasyDeleter {
  void operator()(CURL* h) const { curl_easy_cleanup(h); }
};
using CurlEasy = std::unique_ptr<CURL, CurlEasyDeleter>;
struct CurlSlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
using CurlSlist = std::unique_ptr<curl_slist, CurlSlistDeleter>;

// A private directory removed with its contents when it goes out of scope.
class ScratchDir {
 public:
  explicit ScratchDir(fs::path p) : path_(std::move(p)) {}
  ~ScratchDir() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

Status errno_status(std::string_view doing, const fs::path& p) {
  const int err = errno;
  return Status(err == EACCES || err == EPERM || err == EROFS ? Code::kPermissionDenied
                                                              : Code::kInternal,
                std::string(doing) + " " + p.string() + ": " + std::strerror(err));
}

Status write_all(const fs::path& p, std::string_view bytes) {
  UniqueFd fd(::open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (fd.get() < 0) return errno_status("cannot create", p);
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd.get(), bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_status("cannot write", p);
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  // The rename that publishes the file must not become visible before its contents do.
  if (::fsync(fd.get()) != 0) return errno_status("cannot fsync", p);
  if (fd.reset() != 0) return errno_status("cannot close", p);
  return Status::Ok();
}

void fsync_dir(const fs::path& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() >= 0) ::fsync(fd.get());
}

// ---- one transfer ----------------------------------------------------------------

struct Transfer {
  std::string body;
  std::size_t limit = 0;
  bool too_large = false;
  const std::atomic<bool>* stop = nullptr;
  // Progress lines for long downloads: what is being fetched, and when the last line was.
  const std::string* what = nullptr;
  std::chrono::milliseconds progress_every{0};
  std::chrono::steady_clock::time_point started{};
  std::chrono::steady_clock::time_point last_report{};
  std::string attachment_name;  // Content-Disposition's filename (the model server's zips)
};

// Keeps the file name of a "Content-Disposition: attachment; filename=..." header.
std::size_t on_header(char* data, std::size_t size, std::size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const std::size_t n = size * count;
  const std::string line = lower(std::string_view(data, std::min<std::size_t>(n, 1024)));
  if (line.starts_with("http/")) t->attachment_name.clear();  // a new response (redirects)
  if (line.starts_with("content-disposition:")) {
    const std::size_t at = line.find("filename=");
    if (at != std::string::npos) {
      std::string_view name(data + at + 9, std::min<std::size_t>(n, 1024) - at - 9);
      const std::size_t end = name.find_first_of(";\r\n");
      name = name.substr(0, end);
      while (!name.empty() && (name.front() == '"' || name.front() == ' ')) name.remove_prefix(1);
      while (!name.empty() && (name.back() == '"' || name.back() == ' ')) name.remove_suffix(1);
      t->attachment_name = std::string(name);
    }
  }
  return n;
}

// The landed file's name: the name the source gave it (its model name when the file has
// none inside, as Kepler's weight files), reduced to safe characters, with the extension
// of what the body is; `fallback` when nothing usable is left.
std::string file_name(std::string_view candidate, std::string_view ext, std::string_view fallback) {
  const std::size_t slash = candidate.find_last_of('/');
  if (slash != std::string_view::npos) candidate.remove_prefix(slash + 1);
  std::string safe;
  for (const char c : candidate.substr(0, 100)) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.';
    safe += ok ? c : '_';
  }
  while (!safe.empty() && safe.front() == '.') safe.erase(0, 1);  // never hidden
  std::string stem = safe.substr(0, safe.rfind('.'));
  if (stem.empty() || stem == "metadata") stem = std::string(fallback);
  return stem + std::string(ext);
}

// The last path component of a URL, without query or fragment.
std::string_view url_basename(std::string_view url) {
  url = url.substr(0, url.find_first_of("?#"));
  const std::size_t scheme = url.find("://");
  if (scheme != std::string_view::npos) url.remove_prefix(scheme + 3);
  const std::size_t slash = url.find('/');
  if (slash == std::string_view::npos) return {};
  return url.substr(url.find_last_of('/') + 1);
}

std::size_t on_data(char* data, std::size_t size, std::size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const std::size_t n = size * count;
  if (t->body.size() + n > t->limit) {
    t->too_large = true;
    return 0;  // aborts the transfer with CURLE_WRITE_ERROR
  }
  t->body.append(data, n);
  return n;
}

// Called about once a second even while a server sends nothing: the stop flag aborts a
// transfer that would otherwise hold the destructor until its timeout. A download that
// takes long (Kepler's users waited minutes behind slow links without a word) says how far
// it got every progress_every.
int on_progress(void* user, curl_off_t dltotal, curl_off_t dlnow, curl_off_t, curl_off_t) {
  auto* t = static_cast<Transfer*>(user);
  if (t->stop->load()) return 1;
  const auto now = std::chrono::steady_clock::now();
  if (t->progress_every.count() > 0 && now - t->last_report >= t->progress_every) {
    t->last_report = now;
    const double seconds = std::chrono::duration<double>(now - t->started).count();
    const double rate_kib = seconds > 0 ? static_cast<double>(dlnow) / 1024.0 / seconds : 0.0;
    if (dltotal > 0) {
      spdlog::info("fetch {}: {} of {} bytes ({:.0f}%) after {:.1f} s, {:.1f} KiB/s", *t->what,
                   static_cast<long long>(dlnow), static_cast<long long>(dltotal),
                   100.0 * static_cast<double>(dlnow) / static_cast<double>(dltotal), seconds,
                   rate_kib);
    } else {
      spdlog::info("fetch {}: {} bytes (size unknown) after {:.1f} s, {:.1f} KiB/s", *t->what,
                   static_cast<long long>(dlnow), seconds, rate_kib);
    }
  }
  return 0;
}

bool transient(CURLcode rc) {
  switch (rc) {
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_READ_ERROR:
    case CURLE_FILE_COULDNT_READ_FILE:  // a mounted file that is not there yet
    case CURLE_AGAIN:
      return true;
    default:
      return false;
  }
}

// What validation found in a body: the model it holds, or why it is refused.
struct Checked {
  Status status;
  std::string model_name;
  std::string output_type;
  std::string source;
};

// Reads `dir` as the model directory's scanner will and loads what it finds: exactly one
// loadable model, nothing refused.
Checked check_scanned(const fs::path& dir) {
  std::vector<models::Refusal> refused;
  auto folders = models::Registry::scan_directory(dir, refused);
  if (!folders.ok()) return {folders.status(), {}, {}, {}};
  if (!refused.empty()) return {refused.front().reason, {}, {}, {}};
  if (folders->empty()) {
    return {Status(Code::kInvalidArgument,
                   "a JSON document that is not a Kepler weight file (no component with "
                   "All_Weights or CurveFit_Weights)"),
            {}, {}, {}};
  }
  Checked out;
  for (const models::ModelFolder& f : *folders) {
    auto m = models::load_model(f);
    if (!m.ok()) return {m.status(), {}, {}, {}};
    out.model_name = (*m)->info().name;
    out.output_type = (*m)->info().output_type;
    out.source = (*m)->info().source;
  }
  return out;
}

}  // namespace

// ---- CurlGlobal, ModelQuery -----------------------------------------------------------

CurlGlobal::CurlGlobal() {
  const CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
  ok_ = rc == CURLE_OK;
  if (!ok_) spdlog::error("curl_global_init failed: {}", curl_easy_strerror(rc));
}

CurlGlobal::~CurlGlobal() {
  if (ok_) curl_global_cleanup();
}

std::string ModelQuery::key() const {
  std::set<std::string> unique(features.begin(), features.end());
  std::string k;
  for (const std::string& f : unique) k += f + ",";
  k += "|" + (output_type.empty() ? std::string() : models::canonical_output_type(output_type));
  k += "|" + (source.empty() ? std::string() : models::canonical_source(source));
  k += "|" + trainer + "|" + filter + "|" + (weight ? "w" : "z");
  return k;
}

std::string model_request_body(const ModelQuery& q, int node_type, bool send_spec) {
  // The fields of the model server's ModelRequest. Its constructor takes keyword
  // arguments, so a key it does not know fails the whole request: the machine description
  // goes under "spec", the name the server (and Kepler's Python estimator) uses.
  std::set<std::string> unique(q.features.begin(), q.features.end());
  nlohmann::json body = {
      {"metrics", std::vector<std::string>(unique.begin(), unique.end())},
      {"output_type", q.output_type.empty() ? "AbsPower" : models::canonical_output_type(q.output_type)},
      {"source", q.source.empty() ? "rapl-sysfs" : models::canonical_source(q.source)},
      {"node_type", node_type},
      {"weight", q.weight},
      {"trainer_name", q.trainer},
      {"filter", q.filter}};
  if (send_spec) {
    const unsigned cores = std::thread::hardware_concurrency();
    if (cores > 0) body["spec"] = {{"cores", cores}};
  }
  return body.dump();
}

// ---- ModelFetcher ---------------------------------------------------------------------

ModelFetcher::ModelFetcher(FetchConfig config, fs::path model_dir, Start when)
    : config_(std::move(config)),
      model_dir_(std::move(model_dir)),
      landing_root_(model_dir_ / "fetched"),
      // Never zero: xorshift would stay there.
      rng_state_(std::random_device{}() | (std::uint64_t{std::random_device{}()} << 32U) | 1U) {
  const auto now = Clock::now();
  for (const PrefixConfig& p : config_.prefixes) {
    if (p.init_url.empty()) continue;
    Job job;
    job.kind = Job::Kind::kInitUrl;
    job.url = p.init_url;
    job.label = "init_" + lower(p.prefix);
    job.source = std::string(p.source);
    job.output_type = std::string(p.output_type);
    job.due = now;
    jobs_.push_back(std::move(job));
  }
  if (config_.model_server_enable) {
    const bool any = std::any_of(config_.prefixes.begin(), config_.prefixes.end(),
                                 [](const PrefixConfig& p) { return p.configured(); });
    for (const PrefixConfig& p : config_.prefixes) {
      if (any && !p.configured()) continue;
      ModelQuery q{.features = config_.start_features,
                   .output_type = std::string(p.output_type),
                   .source = std::string(p.source),
                   .trainer = p.trainer,
                   .filter = p.filters,
                   .weight = false};
      std::lock_guard lock(mu_);
      (void)enqueue_locked(std::move(q), now);  // identical prefixes collapse into one
    }
  }
  if (when == Start::kNow) start();
}

void ModelFetcher::start() {
  if (thread_.joinable()) return;
  // Scratch folders of a process that died mid-fetch.
  std::error_code ec;
  for (fs::directory_iterator it(landing_root_, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().filename().string().starts_with(".incoming-")) {
      std::error_code rec;
      fs::remove_all(it->path(), rec);
    }
  }
  {
    std::lock_guard lock(mu_);
    spdlog::info("model fetcher: {} transfers queued, landing in {}", jobs_.size(),
                 landing_root_.string());
  }
  thread_ = std::thread([this] { run(); });
}

ModelFetcher::~ModelFetcher() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool ModelFetcher::idle() const {
  std::lock_guard lock(mu_);
  return jobs_.empty() && in_flight_ == 0;
}

bool ModelFetcher::wait_idle(std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mu_);
  return idle_cv_.wait_for(lock, timeout, [&] { return jobs_.empty() && in_flight_ == 0; });
}

ModelFetcher::Want ModelFetcher::want(const ModelQuery& q) {
  if (!config_.model_server_enable) return Want::kDisabled;
  if (q.features.empty() || q.features.size() > kMaxFeatures ||
      !std::all_of(q.features.begin(), q.features.end(),
                   [](const std::string& f) { return !f.empty() && plain_field(f); }) ||
      !plain_field(q.output_type) || !plain_field(q.source) || !plain_field(q.trainer) ||
      !plain_field(q.filter)) {
    return Want::kRefused;
  }
  Want w;
  {
    std::lock_guard lock(mu_);
    if (stop_) return Want::kRefused;
    w = enqueue_locked(q, Clock::now());
  }
  if (w == Want::kQueued) cv_.notify_all();
  return w;
}

ModelFetcher::Want ModelFetcher::enqueue_locked(ModelQuery q, Clock::time_point now) {
  // The model server's defaults, made explicit so that the question, its key and its
  // landing folder agree.
  if (q.output_type.empty()) q.output_type = "AbsPower";
  if (q.source.empty()) q.source = "rapl-sysfs";
  std::string key = q.key();
  auto it = queries_.find(key);
  if (it == queries_.end()) {
    if (queries_.size() >= kMaxQueries) {
      std::erase_if(queries_, [&](const auto& e) { return !e.second.busy && e.second.rest_until <= now; });
    }
    if (queries_.size() >= kMaxQueries) {
      spdlog::debug("model fetcher: {} distinct queries already tracked; query dropped", kMaxQueries);
      return Want::kRefused;
    }
    it = queries_.emplace(key, QueryState{}).first;
  }
  QueryState& state = it->second;
  if (state.busy) return Want::kDuplicate;
  if (now < state.rest_until) return state.refusals > 0 || state.failed ? Want::kResting : Want::kDuplicate;
  state.busy = true;

  Job job;
  job.kind = Job::Kind::kServer;
  job.label = "server_" + hex16(fnv1a(key));
  job.source = path_component(models::canonical_source(q.source), "any");
  job.output_type = path_component(models::canonical_output_type(q.output_type), "any");
  job.query = std::move(q);
  job.query_key = std::move(key);
  job.due = now;
  jobs_.push_back(std::move(job));
  return Want::kQueued;
}

std::chrono::milliseconds ModelFetcher::retry_delay(int attempt) {
  // Exponential, capped, then "equal jitter" (half fixed, half random) so that the
  // exporters of a whole cluster restarted together do not retry in lock step.
  double delay = static_cast<double>(config_.backoff.count());
  for (int i = 1; i < attempt && delay < static_cast<double>(config_.backoff_max.count()); ++i) {
    delay *= 2;
  }
  delay = std::min(delay, static_cast<double>(config_.backoff_max.count()));
  rng_state_ ^= rng_state_ << 13U;
  rng_state_ ^= rng_state_ >> 7U;
  rng_state_ ^= rng_state_ << 17U;
  const double unit = static_cast<double>(rng_state_ >> 11U) / 9007199254740992.0;  // [0, 1)
  return std::chrono::milliseconds(static_cast<std::int64_t>(delay / 2 + unit * delay / 2));
}

void ModelFetcher::run() {
  std::unique_lock lock(mu_);
  while (!stop_) {
    if (jobs_.empty()) {
      cv_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
      continue;
    }
    auto next = std::min_element(jobs_.begin(), jobs_.end(),
                                 [](const Job& a, const Job& b) { return a.due < b.due; });
    if (next->due > Clock::now()) {
      cv_.wait_until(lock, next->due);  // woken early by new work or stop
      continue;
    }
    Job job = std::move(*next);
    jobs_.erase(next);
    ++in_flight_;
    lock.unlock();

    ++job.attempt;
    const std::uint64_t refused_before = stats_->refused.load();
    const Outcome outcome = attempt(job);
    if ((outcome == Outcome::kRetry || outcome == Outcome::kFailed) &&
        stats_->refused.load() == refused_before) {
      stats_->errors.fetch_add(1);
    }

    lock.lock();
    --in_flight_;
    if (outcome == Outcome::kRetry && job.attempt <= config_.retries && !stop_) {
      job.due = Clock::now() + retry_delay(job.attempt);
      jobs_.push_back(std::move(job));
    } else {
      finish(job, outcome == Outcome::kRetry ? Outcome::kFailed : outcome);
    }
    idle_cv_.notify_all();
  }
  // Pending work is dropped; waiters see the fetcher idle.
  jobs_.clear();
  idle_cv_.notify_all();
}

void ModelFetcher::finish(const Job& job, Outcome outcome) {
  if (outcome == Outcome::kFailed) stats_->failed.fetch_add(1);
  if (job.kind != Job::Kind::kServer) return;
  auto it = queries_.find(job.query_key);
  if (it == queries_.end()) return;
  QueryState& state = it->second;
  state.busy = false;
  const auto now = Clock::now();
  switch (outcome) {
    case Outcome::kLanded:
      state.refusals = 0;
      state.failed = false;
      state.rest_until = now + config_.refresh;
      break;
    case Outcome::kNoModel: {
      ++state.refusals;
      state.failed = false;
      const int doublings = std::min(state.refusals - 1, 4);
      state.rest_until = now + config_.not_found_backoff * (1 << doublings);
      break;
    }
    case Outcome::kFailed:
    case Outcome::kRetry:
      state.failed = true;
      state.rest_until = now + config_.backoff_max;
      break;
    case Outcome::kStopped:
      break;
  }
}

ModelFetcher::Outcome ModelFetcher::attempt(Job& job) {
  stats_->attempts.fetch_add(1);
  const bool server = job.kind == Job::Kind::kServer;
  const std::string url =
      server ? config_.model_server_url + config_.model_server_req_path : job.url;
  const std::string shown = redact_url(url);
  std::string what;
  if (server) {
    what = "model server " + shown + " (" + job.source + " " + job.output_type +
           (job.query.trainer.empty() ? "" : ", trainer " + job.query.trainer) + ")";
  } else {
    std::string prefix = job.label.substr(5);
    std::transform(prefix.begin(), prefix.end(), prefix.begin(),
                   [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    what = prefix + "_INIT_URL " + shown;
  }
  const int attempts = config_.retries + 1;
  auto retry_or_fail = [&](const std::string& why) {
    if (job.attempt < attempts) {
      spdlog::warn("fetch {}: {} (attempt {} of {}; retrying)", what, why, job.attempt, attempts);
    } else {
      spdlog::error("fetch {}: {}; giving up after {} attempts", what, why, attempts);
    }
    return Outcome::kRetry;
  };

  CurlEasy h(curl_easy_init());
  if (!h) return retry_or_fail("curl_easy_init failed");
  Transfer t;
  t.limit = config_.max_bytes;
  t.stop = &stop_;
  t.what = &what;
  t.progress_every = config_.progress_interval;
  t.started = std::chrono::steady_clock::now();
  t.last_report = t.started;
  char error[CURL_ERROR_SIZE] = {};
  const std::string body = server ? model_request_body(job.query, config_.node_type, config_.send_spec) : "";
  CurlSlist headers;
  CURL* c = h.get();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https,file");
  curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");  // never to a local file
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(c, CURLOPT_MAXREDIRS, kMaxRedirects);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(config_.connect_timeout.count()));
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(config_.total_timeout.count()));
  curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(config_.max_bytes));
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
  curl_easy_setopt(c, CURLOPT_XFERINFODATA, &t);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error);
  curl_easy_setopt(c, CURLOPT_USERAGENT, "estimatord");
  if (server) {
    headers.reset(curl_slist_append(nullptr, "Content-Type: application/json"));
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.c_str());
  }

  const CURLcode rc = curl_easy_perform(c);
  stats_->bytes.fetch_add(t.body.size(), std::memory_order_relaxed);
  stats_->record_duration(std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::steady_clock::now() - t.started));
  if (stop_) return Outcome::kStopped;
  if (t.too_large || rc == CURLE_FILESIZE_EXCEEDED) {
    stats_->refused.fetch_add(1);
    spdlog::error("fetch {}: refused: the answer is over the limit of {} bytes", what,
                  config_.max_bytes);
    return Outcome::kFailed;
  }
  if (rc != CURLE_OK) {
    const std::string why = error[0] != '\0' ? std::string(error) : curl_easy_strerror(rc);
    if (transient(rc)) return retry_or_fail(why);
    spdlog::error("fetch {}: {}", what, why);
    return Outcome::kFailed;
  }
  long code = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
  const bool file = url.size() > 7 && lower(std::string_view(url).substr(0, 7)) == "file://";
  if (!file && code != 200) {
    const std::string why = "HTTP " + std::to_string(code) +
                            (t.body.empty() ? "" : ": " + excerpt(t.body));
    if (server && (code == 400 || code == 404)) {
      stats_->no_model.fetch_add(1);
      // Log the first "no model" of a query; repeats (after its rest) only at debug.
      bool first = true;
      {
        std::lock_guard lock(mu_);
        auto it = queries_.find(job.query_key);
        first = it == queries_.end() || it->second.refusals == 0;
      }
      if (first) {
        std::string features;
        for (const std::string& f : job.query.features) features += (features.empty() ? "" : ",") + f;
        spdlog::warn("fetch {}: the model server has no model for features [{}]: {}", what,
                     features, why);
      } else {
        spdlog::debug("fetch {}: still no model: {}", what, why);
      }
      return Outcome::kNoModel;
    }
    if (code == 408 || code == 429 || code >= 500) return retry_or_fail(why);
    spdlog::error("fetch {}: {}", what, why);
    return Outcome::kFailed;
  }

  // Validate where the scanner cannot see it: a hidden folder inside the landing root
  // (same file system, so the final rename is atomic), laid out as the final path so
  // that source and output type come from the same path components.
  const bool zip = t.body.size() >= 4 && t.body.compare(0, 2, "PK") == 0;
  const auto first_char = std::find_if(t.body.begin(), t.body.end(), [](unsigned char ch) {
    return std::isspace(ch) == 0;
  });
  if (!zip && (first_char == t.body.end() || *first_char != '{')) {
    stats_->refused.fetch_add(1);
    spdlog::error("fetch {}: refused: neither a zip archive nor a JSON document ({} bytes "
                  "starting \"{}\")",
                  what, t.body.size(), excerpt(t.body.substr(0, 32)));
    return Outcome::kFailed;
  }
  const std::string ext = zip ? ".zip" : ".json";
  std::error_code ec;
  fs::create_directories(landing_root_, ec);
  if (ec) {
    spdlog::error("fetch {}: cannot create {}: {}", what, landing_root_.string(), ec.message());
    return Outcome::kFailed;
  }
  std::string scratch_template = (landing_root_ / ".incoming-XXXXXX").string();
  if (::mkdtemp(scratch_template.data()) == nullptr) {
    const Status s = errno_status("cannot create a scratch folder in", landing_root_);
    spdlog::error("fetch {}: {}", what, s.message());
    return Outcome::kFailed;
  }
  const ScratchDir scratch{fs::path(scratch_template)};
  const fs::path rel = fs::path(job.source) / job.output_type / job.label;
  std::string_view given = server ? std::string_view(t.attachment_name) : url_basename(url);
  if (given.empty() && server) given = job.query.trainer;
  const std::string name = file_name(given, ext, "model");
  fs::create_directories(scratch.path() / rel, ec);
  const fs::path staged = scratch.path() / rel / name;
  if (Status s = ec ? Status(Code::kInternal, ec.message()) : write_all(staged, t.body); !s.ok()) {
    spdlog::error("fetch {}: {}", what, s.message());
    return Outcome::kFailed;
  }
  const Checked checked = check_scanned(scratch.path());
  if (!checked.status.ok()) {
    stats_->refused.fetch_add(1);
    // The scanner names the scratch copy; the reader wants the URL and the file's place.
    std::string why = checked.status.to_string();
    const std::string scratch_prefix = scratch.path().string() + "/";
    for (std::size_t at = why.find(scratch_prefix); at != std::string::npos;
         at = why.find(scratch_prefix, at)) {
      why.erase(at, scratch_prefix.size());
    }
    spdlog::error("fetch {}: refused ({} bytes): {}", what, t.body.size(), why);
    return Outcome::kFailed;
  }
  if (!checked.output_type.empty() && checked.output_type != job.output_type && job.output_type != "any") {
    spdlog::warn("fetch {}: model {} is {} but was fetched for {}; it serves as {}", what,
                 checked.model_name, checked.output_type, job.output_type, checked.output_type);
  }

  const fs::path dest_dir = landing_root_ / rel;
  fs::create_directories(dest_dir, ec);
  const fs::path dest = dest_dir / name;
  if (ec || ::rename(staged.c_str(), dest.c_str()) != 0) {
    const Status s = ec ? Status(Code::kInternal, "cannot create " + dest_dir.string() + ": " + ec.message())
                        : errno_status("cannot rename into", dest);
    spdlog::error("fetch {}: {}", what, s.message());
    return Outcome::kFailed;
  }
  // The folder holds what this INIT_URL or query fetched last: the new file replaces
  // whatever came before under another name or format.
  for (fs::directory_iterator it(dest_dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code rec;
    if (it->path().filename() != name) fs::remove_all(it->path(), rec);
  }
  fsync_dir(dest_dir);
  stats_->landed.fetch_add(1);
  spdlog::info("fetch {}: model {} ({} {}) landed in {}", what, checked.model_name,
               checked.source.empty() ? job.source : checked.source,
               checked.output_type.empty() ? job.output_type : checked.output_type, dest.string());
  return Outcome::kLanded;
}

}  // namespace estimator::service
