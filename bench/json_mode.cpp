// JSON mode: the protocol the ring replaces, as Kepler v0.9 speaks it. A forked child runs
// the daemon's Kepler-compatible endpoint (service::KeplerEndpoint: its epoll thread, JSON
// reader and writer, and the same RequestHandler behind them) on the benchmark's models;
// this process is a client that does what Kepler's Go client does for every request:
// encode the v0.9 document ({"metrics", "values", "output_type", "source"}), connect to
// the unix socket, write the document, read until the reply document ends, close, and
// decode the reply ({"powers": {component: [...]}, "msg", "core_ratio"}) into floats.
//
// Why it is fair: everything Kepler pays is inside the timed window - encoding, the
// connect (one connection per request: the protocol has no framing that would allow
// more), the server's parse and write, and decoding - and nothing else: the reply is
// compared with the local handler's answer after the clock stops. Send and receive are
// bounded by the timeout (two setsockopt calls per connection, which Kepler does not make;
// they cost well under a microsecond).
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <string>
#include <string_view>

#include "bench/child.h"
#include "bench/modes.h"
#include "service/kepler_endpoint.h"

namespace estimator::bench {
namespace {

constexpr std::size_t kMaxReplyBytes = 16U << 20U;  // a longer reply fails the run

std::string errno_text(int err) { return std::strerror(err); }

void append_float(std::string& out, float v) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

void append_string(std::string& out, std::string_view s) {  // names need no escaping
  out += '"';
  out += s;
  out += '"';
}

// The v0.9 request of `c`, written into `out` as Go's encoding/json would lay it out.
void encode_request(const Case& c, std::string& out) {
  out.clear();
  out += "{\"metrics\":[";
  const auto names = feature_names(c.cols);
  for (std::size_t j = 0; j < names.size(); ++j) {
    if (j != 0) out += ',';
    append_string(out, names[j]);
  }
  out += "],\"values\":[";
  for (std::uint32_t r = 0; r < c.rows; ++r) {
    if (r != 0) out += ',';
    out += '[';
    for (std::uint32_t j = 0; j < c.cols; ++j) {
      if (j != 0) out += ',';
      append_float(out, c.matrix[std::size_t{r} * c.cols + j]);
    }
    out += ']';
  }
  out += "],\"output_type\":";
  append_string(out, kOutputType);
  out += ",\"source\":";
  append_string(out, kSource);
  if (c.by_name) {
    out += ",\"model_name\":";
    append_string(out, c.model_name);
  }
  out += ",\"system_features\":[],\"system_values\":[]}";
}

// Where a JSON document ends, tracked across reads: bracket depth outside strings.
class DocumentEnd {
 public:
  // Feeds `bytes`; true once the outermost value has closed.
  bool feed(std::string_view bytes) {
    for (const char ch : bytes) {
      if (in_string_) {
        if (escaped_) {
          escaped_ = false;
        } else if (ch == '\\') {
          escaped_ = true;
        } else if (ch == '"') {
          in_string_ = false;
        }
        continue;
      }
      if (ch == '"') {
        in_string_ = true;
      } else if (ch == '{' || ch == '[') {
        ++depth_;
        started_ = true;
      } else if (ch == '}' || ch == ']') {
        if (--depth_ == 0 && started_) return true;
      }
    }
    return false;
  }

 private:
  int depth_ = 0;
  bool started_ = false;
  bool in_string_ = false;
  bool escaped_ = false;
};

// A decoded v0.9 reply. Views point into the reply text.
struct JsonReply {
  std::vector<std::string_view> components;
  std::vector<std::uint32_t> counts;  // values per component
  std::vector<float> values;          // component after component
  std::string_view msg;
  double core_ratio = 0;
};

// A reader of exactly the reply's shape; anything else is an error naming the offset.
class ReplyReader {
 public:
  explicit ReplyReader(std::string_view s) : s_(s) {}

  Status read(JsonReply& out) {
    out.components.clear();
    out.counts.clear();
    out.values.clear();
    out.msg = {};
    if (!take('{')) return fail("expected an object");
    bool first = true;
    while (!take('}')) {
      if (!first && !take(',')) return fail("expected ',' or '}'");
      first = false;
      std::string_view key;
      if (!string(key) || !take(':')) return fail("expected a key");
      if (key == "powers") {
        if (Status st = powers(out); !st.ok()) return st;
      } else if (key == "msg") {
        if (!string(out.msg)) return fail("msg: expected a string");
      } else if (key == "core_ratio") {
        if (!number(out.core_ratio)) return fail("core_ratio: expected a number");
      } else {
        return fail("unexpected key '" + std::string(key) + "'");
      }
    }
    ws();
    if (i_ != s_.size()) return fail("bytes after the document");
    return Status::Ok();
  }

 private:
  Status powers(JsonReply& out) {
    if (!take('{')) return fail("powers: expected an object (a list is the error shape)");
    bool first = true;
    while (!take('}')) {
      if (!first && !take(',')) return fail("powers: expected ',' or '}'");
      first = false;
      std::string_view name;
      if (!string(name) || !take(':') || !take('[')) return fail("powers: expected name: [");
      out.components.push_back(name);
      std::uint32_t n = 0;
      bool first_value = true;
      while (!take(']')) {
        if (!first_value && !take(',')) return fail("powers: expected ',' or ']'");
        first_value = false;
        double v = 0;
        if (!number(v)) return fail("powers: expected a number");
        out.values.push_back(static_cast<float>(v));
        ++n;
      }
      out.counts.push_back(n);
    }
    return Status::Ok();
  }

  void ws() {
    while (i_ < s_.size() &&
           (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\r' || s_[i_] == '\t')) {
      ++i_;
    }
  }
  bool take(char ch) {
    ws();
    if (i_ < s_.size() && s_[i_] == ch) {
      ++i_;
      return true;
    }
    return false;
  }
  bool string(std::string_view& out) {  // raw (escapes kept): names and msg are compared only
    if (!take('"')) return false;
    const std::size_t start = i_;
    while (i_ < s_.size() && s_[i_] != '"') i_ += s_[i_] == '\\' ? 2 : 1;
    if (i_ >= s_.size()) return false;
    out = s_.substr(start, i_ - start);
    ++i_;
    return true;
  }
  bool number(double& v) {
    ws();
    const auto r = std::from_chars(s_.data() + i_, s_.data() + s_.size(), v);
    if (r.ec != std::errc{}) return false;
    i_ = static_cast<std::size_t>(r.ptr - s_.data());
    return true;
  }
  Status fail(std::string what) const {
    return Status(Code::kInvalidArgument,
                  "json: reply at byte " + std::to_string(i_) + ": " + what);
  }

  std::string_view s_;
  std::size_t i_ = 0;
};

// Ok when `r` answers `c` as the local handler did (to float precision of the text).
Status check_json_reply(const Case& c, const JsonReply& r) {
  if (!r.msg.empty()) return Status(Code::kInternal, "json: error reply: " + std::string(r.msg));
  if (r.components.size() != c.components) {
    return Status(Code::kInternal, "json: " + std::to_string(r.components.size()) +
                                       " components, expected " +
                                       std::to_string(c.components));
  }
  for (std::size_t k = 0; k < r.components.size(); ++k) {
    if (k < c.component_names.size() && r.components[k] != c.component_names[k]) {
      return Status(Code::kInternal, "json: component '" + std::string(r.components[k]) +
                                         "', expected '" + c.component_names[k] + "'");
    }
    if (r.counts[k] != c.rows) {
      return Status(Code::kInternal, "json: " + std::to_string(r.counts[k]) + " powers of " +
                                         std::string(r.components[k]) + " for " +
                                         std::to_string(c.rows) + " rows");
    }
  }
  for (std::size_t k = 0; k < c.components; ++k) {
    for (std::uint32_t row = 0; row < c.rows; ++row) {
      const float got = r.values[k * c.rows + row];
      const float want = c.powers[std::size_t{row} * c.components + k];
      const float tolerance = 1e-5F * std::max(1.0F, std::fabs(want));
      if (!std::isfinite(got) || std::fabs(got - want) > tolerance) {
        return Status(Code::kInternal, "json: row " + std::to_string(row) + " " +
                                           c.component_names[k] + " = " + std::to_string(got) +
                                           ", the handler says " + std::to_string(want));
      }
    }
  }
  return Status::Ok();
}

class JsonMode final : public Mode {
 public:
  JsonMode(const std::vector<Case>& cases, std::string path, const ModeOptions& options)
      : cases_(cases), path_(std::move(path)), timeout_(options.timeout) {}

  ~JsonMode() override {
    if (child_ != nullptr) child_->stop();
    unlink(path_.c_str());  // the endpoint removes it; this covers one that had to be killed
  }

  Status run(std::size_t index, std::size_t count, Clock::time_point deadline,
             Samples* out) override {
    const Case& c = cases_[index];
    for (std::size_t i = 0; i < count; ++i) {
      const auto t0 = Clock::now();
      encode_request(c, request_);
      if (Status s = round_trip(); !s.ok()) return s;
      ReplyReader reader(reply_);
      if (Status s = reader.read(decoded_); !s.ok()) return s;
      const auto t1 = Clock::now();
      if (Status s = check_json_reply(c, decoded_); !s.ok()) return s;
      if (out != nullptr) out->add(elapsed_ns(t0, t1));
      if (t1 >= deadline) break;
    }
    return Status::Ok();
  }

  std::unique_ptr<Child> child_;

 private:
  // connect, write, read until the document ends, close: one request per connection.
  Status round_trip() {
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return Status(Code::kResourceExhausted, "json: socket: " + errno_text(errno));
    Status s = exchange(fd);
    close(fd);
    return s;
  }

  Status exchange(int fd) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
    if (connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
      return Status(Code::kUnavailable, "json: connect " + path_ + ": " + errno_text(errno));
    }
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(timeout_.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((timeout_.count() % 1000) * 1000);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    for (std::size_t done = 0; done < request_.size();) {
      const ssize_t n = send(fd, request_.data() + done, request_.size() - done, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        return Status(errno == EAGAIN ? Code::kDeadlineExceeded : Code::kUnavailable,
                      "json: send: " + errno_text(errno));
      }
      done += static_cast<std::size_t>(n);
    }
    reply_.clear();
    DocumentEnd end;
    char buf[64 * 1024];
    for (;;) {
      const ssize_t n = recv(fd, buf, sizeof buf, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        return Status(errno == EAGAIN ? Code::kDeadlineExceeded : Code::kUnavailable,
                      "json: recv: " + errno_text(errno));
      }
      if (n == 0) return Status(Code::kUnavailable, "json: connection closed mid-reply");
      const std::string_view got(buf, static_cast<std::size_t>(n));
      if (reply_.size() + got.size() > kMaxReplyBytes) {
        return Status(Code::kTooLarge, "json: reply longer than " +
                                           std::to_string(kMaxReplyBytes) + " bytes");
      }
      reply_.append(got);
      if (end.feed(got)) return Status::Ok();
    }
  }

  const std::vector<Case>& cases_;
  std::string path_;
  std::chrono::milliseconds timeout_;
  std::string request_;
  std::string reply_;
  JsonReply decoded_;
};

// The child: the endpoint until SIGTERM, then a clean stop that removes the socket file.
int serve_json(const std::string& path, std::shared_ptr<const models::Registry> registry,
               std::chrono::milliseconds timeout, const Child::Ready& ready) {
  spdlog::set_level(spdlog::level::warn);
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);  // before the endpoint's thread inherits it
  service::KeplerEndpointConfig config;
  config.path = path;
  config.mode = 0600;
  config.deadline = timeout;
  config.max_request_bytes = 64U << 20U;
  auto holder = std::make_shared<service::RegistryHolder>(std::move(registry));
  auto endpoint = service::KeplerEndpoint::start(config, holder);
  if (!endpoint.ok()) {
    ready(endpoint.status());
    return 1;
  }
  ready(Status::Ok());
  int sig = 0;
  sigwait(&stop, &sig);
  endpoint.value()->stop();
  return 0;
}

}  // namespace

Result<std::unique_ptr<Mode>> start_json(const std::vector<Case>& cases,
                                         std::shared_ptr<const models::Registry> registry,
                                         const ModeOptions& options) {
  const std::string path = "/tmp/estimator-bench-" + std::to_string(getpid()) + "-json.sock";
  if (path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return Status(Code::kInvalidArgument, "json: socket path too long: " + path);
  }
  auto mode = std::make_unique<JsonMode>(cases, path, options);
  const std::chrono::milliseconds timeout = options.timeout;
  auto child = Child::spawn("json endpoint", [path, registry, timeout](const Child::Ready& ready) {
    return serve_json(path, registry, timeout, ready);
  });
  if (!child.ok()) return child.status();
  mode->child_ = std::move(child).value();
  if (Status s = mode->child_->wait_ready(std::chrono::milliseconds(10000)); !s.ok()) return s;
  return std::unique_ptr<Mode>(std::move(mode));
}

}  // namespace estimator::bench
