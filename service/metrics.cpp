// SPDX-License-Identifier: Apache-2.0
#include "service/metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "models/model.h"
#include "models/registry.h"
#include "schema/schema_version.h"
#include "service/build_info.h"
#include "service/fetch_stats.h"

namespace estimator::service {
namespace {

void append_number(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
    return;
  }
  if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
    return;
  }
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

void append_number(std::string& out, std::uint64_t v) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

// HELP text escapes only backslash and newline (quotes are literal there).
void append_help(std::string& out, std::string_view name, std::string_view help,
                 std::string_view type) {
  out += "# HELP ";
  out += name;
  out += ' ';
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

struct Label {
  std::string_view name;
  std::string_view value;
};

void append_sample_start(std::string& out, std::string_view name,
                         std::initializer_list<Label> labels) {
  out += name;
  if (labels.size() == 0) return;
  out += '{';
  bool first = true;
  for (const Label& l : labels) {
    if (!first) out += ',';
    first = false;
    out += l.name;
    out += "=\"";
    append_label_value(out, l.value);
    out += '"';
  }
  out += '}';
}

// What /proc says about this process, read at scrape time only (never on the request
// path). Fields it cannot read stay negative and are left out of the exposition.
struct ProcessFacts {
  double cpu_seconds = -1;
  double resident_bytes = -1;
  double virtual_bytes = -1;
  double start_time_seconds = -1;
  double open_fds = -1;
  double max_fds = -1;
};

ProcessFacts read_process_facts() {
  ProcessFacts f;
  const long ticks = sysconf(_SC_CLK_TCK);
  const long page = sysconf(_SC_PAGESIZE);
  std::string stat;
  {
    std::ifstream in("/proc/self/stat");
    std::getline(in, stat);
  }
  // The command name (field 2) may hold spaces and parentheses: fields are counted from
  // the last ')'.
  const std::size_t close = stat.rfind(')');
  if (close != std::string::npos && ticks > 0 && page > 0) {
    unsigned long long utime = 0, stime = 0, start = 0, vsize = 0;
    long long rss = 0;
    // Fields 14, 15 (utime, stime), 22 (starttime), 23 (vsize), 24 (rss), counted after
    // field 2: state is field 3.
    const int n = std::sscanf(stat.c_str() + close + 1,
                              " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d "
                              "%*d %*d %*d %*d %llu %llu %lld",
                              &utime, &stime, &start, &vsize, &rss);
    if (n == 5) {
      f.cpu_seconds = static_cast<double>(utime + stime) / static_cast<double>(ticks);
      f.resident_bytes = static_cast<double>(rss) * static_cast<double>(page);
      f.virtual_bytes = static_cast<double>(vsize);
      std::ifstream in("/proc/stat");
      std::string line;
      while (std::getline(in, line)) {
        if (line.starts_with("btime ")) {
          f.start_time_seconds = std::strtod(line.c_str() + 6, nullptr) +
                                 static_cast<double>(start) / static_cast<double>(ticks);
          break;
        }
      }
    }
  }
  if (DIR* d = opendir("/proc/self/fd"); d != nullptr) {
    double n = 0;
    while (const dirent* e = readdir(d)) {
      if (e->d_name[0] != '.') ++n;
    }
    closedir(d);
    f.open_fds = n - 1;  // the directory stream's own descriptor
  }
  if (rlimit lim{}; getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY) {
    f.max_fds = static_cast<double>(lim.rlim_cur);
  }
  return f;
}

void append_gauge(std::string& out, std::string_view name, std::string_view help, double v,
                  std::string_view type = "gauge") {
  if (v < 0) return;
  append_help(out, name, help, type);
  out += name;
  out += ' ';
  append_number(out, v);
  out += '\n';
}

// A figure a model publishes: `metric` is mae or mape, `component` empty for the model's
// overall figure (the largest component error) or a component such as package.
struct ErrorFigure {
  std::string_view component;
  std::string_view metric;
};

bool split_error_key(std::string_view key, ErrorFigure& out) {
  for (std::string_view metric : {std::string_view("mae"), std::string_view("mape")}) {
    if (key == metric) {
      out = {{}, metric};
      return true;
    }
    if (key.size() > metric.size() + 1 && key.ends_with(metric) &&
        key[key.size() - metric.size() - 1] == '_') {
      out = {key.substr(0, key.size() - metric.size() - 1), metric};
      // mae_val, avg_mae and the like are other figures, not a component's.
      return out.component != "avg" && out.component != "abs";
    }
  }
  return false;
}

double now_unix_seconds() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

}  // namespace

void append_label_value(std::string& out, std::string_view value) {
  for (char c : value) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '"': out += "\\\""; break;
      case '\n': out += "\\n"; break;
      default: out += c;
    }
  }
}

bool valid_metric_name(std::string_view name) {
  if (name.empty()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    const bool digit = c >= '0' && c <= '9';
    if (!alpha && !(digit && i > 0)) return false;
  }
  return true;
}

Metrics::Metrics() : start_time_seconds_(now_unix_seconds()) {
  auto cell = std::make_unique<RequestCell>();
  unattributed_ = cell.get();
  cells_.emplace(Key{}, std::move(cell));
}

Metrics::~Metrics() = default;

RequestCell* Metrics::cell(std::string_view model, std::string_view source,
                           std::string_view output_type) {
  Key key{std::string(model), std::string(source), std::string(output_type)};
  std::lock_guard lock(mu_);
  auto it = cells_.find(key);
  if (it == cells_.end()) it = cells_.emplace(std::move(key), std::make_unique<RequestCell>()).first;
  return it->second.get();
}

std::atomic<std::uint64_t>* Metrics::fallback_counter(std::string_view model,
                                                      std::string_view source,
                                                      std::string_view output_type,
                                                      std::string_view skipped) {
  FallbackKey key{std::string(model), std::string(source), std::string(output_type),
                  std::string(skipped)};
  std::lock_guard lock(mu_);
  auto& counter = fallbacks_[std::move(key)];
  if (counter == nullptr) counter = std::make_unique<std::atomic<std::uint64_t>>(0);
  return counter.get();
}

void Metrics::watch_fetches(std::shared_ptr<const FetchStats> stats) {
  std::lock_guard lock(mu_);
  fetches_ = std::move(stats);
}

Status Metrics::add_counter(std::string name, std::string help, std::function<double()> read) {
  return add_external(std::move(name), std::move(help), "counter", std::move(read));
}

Status Metrics::add_gauge(std::string name, std::string help, std::function<double()> read) {
  return add_external(std::move(name), std::move(help), "gauge", std::move(read));
}

Status Metrics::add_external(std::string name, std::string help, std::string type,
                             std::function<double()> read) {
  if (!valid_metric_name(name)) {
    return Status(Code::kInvalidArgument, "metric name '" + name + "' is not [a-zA-Z_:][a-zA-Z0-9_:]*");
  }
  if (!read) return Status(Code::kInvalidArgument, "metric '" + name + "' has no reader");
  std::lock_guard lock(mu_);
  for (const External& e : externals_) {
    if (e.name == name) return Status(Code::kInvalidArgument, "metric '" + name + "' registered twice");
  }
  externals_.push_back({std::move(name), std::move(help), std::move(type), std::move(read)});
  return Status::Ok();
}

void Metrics::add_families(std::function<void(std::string&)> render) {
  std::lock_guard lock(mu_);
  families_.push_back(std::move(render));
}

std::string Metrics::render(const models::Registry* registry) const {
  std::string out;
  out.reserve(8192);
  std::lock_guard lock(mu_);

  append_help(out, "estimator_requests_total",
              "Estimate requests answered, by model and status (pings excluded; model \"\" = "
              "failed before a model was chosen).",
              "counter");
  for (const auto& [key, cell] : cells_) {
    const auto& [model, source, output_type] = key;
    for (std::size_t c = 0; c < kCodeCount; ++c) {
      const std::uint64_t n = cell->by_code_[c].load(std::memory_order_relaxed);
      // Zero series of every failure code would be noise; ok is always shown for models.
      if (n == 0 && !(c == 0 && cell.get() != unattributed_)) continue;
      append_sample_start(out, "estimator_requests_total",
                          {{"model", model}, {"source", source}, {"output_type", output_type},
                           {"status", code_name(static_cast<Code>(c))}});
      out += ' ';
      append_number(out, n);
      out += '\n';
    }
  }

  append_help(out, "estimator_request_errors_total",
              "Estimate requests answered with a status other than ok, by model.", "counter");
  for (const auto& [key, cell] : cells_) {
    const auto& [model, source, output_type] = key;
    std::uint64_t errors = 0;
    for (std::size_t c = 1; c < kCodeCount; ++c) {
      errors += cell->by_code_[c].load(std::memory_order_relaxed);
    }
    append_sample_start(out, "estimator_request_errors_total",
                        {{"model", model}, {"source", source}, {"output_type", output_type}});
    out += ' ';
    append_number(out, errors);
    out += '\n';
  }

  append_help(out, "estimator_request_duration_seconds",
              "Time from reading a request to its response being built, by model.", "histogram");
  for (const auto& [key, cell] : cells_) {
    const auto& [model, source, output_type] = key;
    // _count is the sum of the buckets read here, so +Inf equals _count in every scrape
    // even while requests are being recorded.
    std::uint64_t cumulative = 0;
    for (std::size_t b = 0; b < kLatencyBuckets; ++b) {
      cumulative += cell->buckets_[b].load(std::memory_order_relaxed);
      std::string le;
      if (b < kLatencyBoundsNs.size()) {
        // %g style, as Prometheus' own clients write bounds: 0.0001 rather than 1e-04.
        char buf[32];
        const auto r = std::to_chars(buf, buf + sizeof buf,
                                     static_cast<double>(kLatencyBoundsNs[b]) / 1e9,
                                     std::chars_format::general);
        le.assign(buf, r.ptr);
      } else {
        le = "+Inf";
      }
      append_sample_start(out, "estimator_request_duration_seconds_bucket",
                          {{"model", model}, {"source", source}, {"output_type", output_type},
                           {"le", le}});
      out += ' ';
      append_number(out, cumulative);
      out += '\n';
    }
    const std::initializer_list<Label> labels = {
        {"model", model}, {"source", source}, {"output_type", output_type}};
    append_sample_start(out, "estimator_request_duration_seconds_sum", labels);
    out += ' ';
    append_number(out, static_cast<double>(cell->sum_ns_.load(std::memory_order_relaxed)) / 1e9);
    out += '\n';
    append_sample_start(out, "estimator_request_duration_seconds_count", labels);
    out += ' ';
    append_number(out, cumulative);
    out += '\n';
  }

  append_help(out, "estimator_model_fallbacks_total",
              "Requests answered by a model although a better-ranked one of the requested "
              "kind (skipped) lacked features or node power the request did not carry.",
              "counter");
  for (const auto& [key, counter] : fallbacks_) {
    const auto& [model, source, output_type, skipped] = key;
    append_sample_start(out, "estimator_model_fallbacks_total",
                        {{"model", model}, {"source", source}, {"output_type", output_type},
                         {"skipped", skipped}});
    out += ' ';
    append_number(out, counter->load(std::memory_order_relaxed));
    out += '\n';
  }

  append_help(out, "estimator_pings_total", "Ping requests answered (liveness probes).",
              "counter");
  out += "estimator_pings_total ";
  append_number(out, pings_.load(std::memory_order_relaxed));
  out += '\n';

  append_help(out, "estimator_kepler_socket_error_replies_total",
              "Error replies of the Kepler JSON socket, by reason (the status code).",
              "counter");
  for (std::size_t c = 1; c < kCodeCount; ++c) {
    const std::uint64_t n = kepler_errors_[c].load(std::memory_order_relaxed);
    if (n == 0) continue;  // as for estimator_requests_total: only reasons that occurred
    append_sample_start(out, "estimator_kepler_socket_error_replies_total",
                        {{"reason", code_name(static_cast<Code>(c))}});
    out += ' ';
    append_number(out, n);
    out += '\n';
  }

  if (registry != nullptr) {
    append_help(out, "estimator_model_info",
                "A loaded model (value 1) and what it publishes about itself (its error "
                "figures are estimator_model_error).",
                "gauge");
    for (const auto& m : registry->models()) {
      const models::ModelInfo& i = m->info();
      append_sample_start(out, "estimator_model_info",
                          {{"name", i.name},
                           {"trainer", i.trainer},
                           {"model_class", i.model_class},
                           {"output_type", i.output_type},
                           {"source", i.source},
                           {"origin", i.origin}});
      out += " 1\n";
    }
    append_help(out, "estimator_model_error",
                "Error a loaded model publishes (metadata.json): metric mae in watts, mape in "
                "percent; component \"\" is the model's overall figure. Absent when not "
                "published.",
                "gauge");
    for (const auto& m : registry->models()) {
      const models::ModelInfo& i = m->info();
      // The overall figures may come from the model file rather than `figures`.
      const std::initializer_list<std::pair<std::string_view, double>> overall = {
          {"mae", i.mae}, {"mape", i.mape}};
      for (const auto& [metric, value] : overall) {
        if (!std::isfinite(value) || value < 0) continue;
        append_sample_start(out, "estimator_model_error",
                            {{"name", i.name}, {"source", i.source},
                             {"output_type", i.output_type}, {"component", ""},
                             {"metric", metric}});
        out += ' ';
        append_number(out, value);
        out += '\n';
      }
      for (const auto& [key, value] : i.figures) {
        ErrorFigure f;
        if (!split_error_key(key, f) || f.component.empty() || !std::isfinite(value)) continue;
        append_sample_start(out, "estimator_model_error",
                            {{"name", i.name}, {"source", i.source},
                             {"output_type", i.output_type}, {"component", f.component},
                             {"metric", f.metric}});
        out += ' ';
        append_number(out, value);
        out += '\n';
      }
    }
    append_help(out, "estimator_models_loaded", "Models being served.", "gauge");
    out += "estimator_models_loaded ";
    append_number(out, static_cast<std::uint64_t>(registry->models().size()));
    out += '\n';
    append_help(out, "estimator_models_refused",
                "Model files found but not served (see the daemon's log for why).", "gauge");
    out += "estimator_models_refused ";
    append_number(out, static_cast<std::uint64_t>(registry->refused().size()));
    out += '\n';
  }

  if (fetches_ != nullptr) {
    const FetchStats& f = *fetches_;
    append_help(out, "estimator_model_fetches_total",
                "Model downloads (INIT_URL, model server) by result: landed, no_model (the "
                "model server has none), refused (not a loadable model), error (transfer or "
                "HTTP failure, retried or not).",
                "counter");
    const std::initializer_list<std::pair<std::string_view, std::uint64_t>> results = {
        {"landed", f.landed.load(std::memory_order_relaxed)},
        {"no_model", f.no_model.load(std::memory_order_relaxed)},
        {"refused", f.refused.load(std::memory_order_relaxed)},
        {"error", f.errors.load(std::memory_order_relaxed)}};
    for (const auto& [result, n] : results) {
      append_sample_start(out, "estimator_model_fetches_total", {{"result", result}});
      out += ' ';
      append_number(out, n);
      out += '\n';
    }
    append_help(out, "estimator_model_fetch_failures_total",
                "Models given up on after their retries.", "counter");
    out += "estimator_model_fetch_failures_total ";
    append_number(out, f.failed.load(std::memory_order_relaxed));
    out += '\n';
    append_help(out, "estimator_model_fetch_bytes_total", "Bytes received by model downloads.",
                "counter");
    out += "estimator_model_fetch_bytes_total ";
    append_number(out, f.bytes.load(std::memory_order_relaxed));
    out += '\n';
    append_help(out, "estimator_model_fetch_duration_seconds",
                "Time of each model download, from the request to the last byte or the failure.",
                "histogram");
    std::uint64_t cumulative = 0;
    for (std::size_t b = 0; b < f.duration_buckets.size(); ++b) {
      cumulative += f.duration_buckets[b].load(std::memory_order_relaxed);
      std::string le = "+Inf";
      if (b < kFetchDurationBoundsMs.size()) {
        le.clear();
        append_number(le, static_cast<double>(kFetchDurationBoundsMs[b]) / 1000.0);
      }
      append_sample_start(out, "estimator_model_fetch_duration_seconds_bucket", {{"le", le}});
      out += ' ';
      append_number(out, cumulative);
      out += '\n';
    }
    out += "estimator_model_fetch_duration_seconds_sum ";
    append_number(out, static_cast<double>(f.duration_sum_us.load(std::memory_order_relaxed)) / 1e6);
    out += "\nestimator_model_fetch_duration_seconds_count ";
    append_number(out, cumulative);
    out += '\n';
  }

  {
    char hash[17];
    std::snprintf(hash, sizeof hash, "%016" PRIx64, schema::kSchemaHash);
    const std::string schema = std::to_string(schema::kSchemaVersion);
    append_help(out, "estimator_build_info",
                "The running build (value 1): version, git commit, wire schema version and hash.",
                "gauge");
    append_sample_start(out, "estimator_build_info",
                        {{"version", kVersion}, {"commit", kGitCommit}, {"schema", schema},
                         {"schema_hash", hash}});
    out += " 1\n";
  }

  // Prometheus' standard process metrics, as its client libraries name them.
  const ProcessFacts p = read_process_facts();
  append_gauge(out, "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
               p.cpu_seconds, "counter");
  append_gauge(out, "process_resident_memory_bytes", "Resident memory size in bytes.",
               p.resident_bytes);
  append_gauge(out, "process_virtual_memory_bytes", "Virtual memory size in bytes.",
               p.virtual_bytes);
  append_gauge(out, "process_start_time_seconds",
               "Start time of the process since unix epoch in seconds.", p.start_time_seconds);
  append_gauge(out, "process_open_fds", "Number of open file descriptors.", p.open_fds);
  append_gauge(out, "process_max_fds", "Maximum number of open file descriptors.", p.max_fds);

  append_help(out, "estimator_start_time_seconds",
              "When the metrics of this daemon started, seconds since the Unix epoch.", "gauge");
  out += "estimator_start_time_seconds ";
  append_number(out, start_time_seconds_);
  out += '\n';

  for (const External& e : externals_) {
    append_help(out, e.name, e.help, e.type);
    out += e.name;
    out += ' ';
    append_number(out, e.read());
    out += '\n';
  }
  for (const auto& families : families_) families(out);
  return out;
}

}  // namespace estimator::service
