// SPDX-License-Identifier: Apache-2.0
// estimatord: the estimator daemon. Loads the models, creates the shared-memory segment,
// serves until a stop signal, then removes the segment (service/signals.h; SIGHUP reloads).
#include <signal.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include "models/embedded_defaults.h"
#include "models/registry.h"
#include "service/command_line.h"
#include "service/daemon.h"
#include "service/measured_selection.h"
#include "service/metrics.h"
#include "service/metrics_server.h"
#include "service/kepler_endpoint.h"
#include "service/model_watcher.h"
#include "service/fetch_config.h"
#include "service/model_fetcher.h"
#include "service/signals.h"
#include "shm/client_ring.h"
#include "shm/layout.h"
#include "shm/segment.h"

using namespace estimator;

namespace {

// Why this daemon is not ready, or empty when it is: its own segment is there, intact (the
// checks a client's attach makes), serving and beating, and at least one model is loaded.
// Runs on the metrics server's thread for each probe, never on the request path.
std::string readiness(const std::string& segment_name, mode_t mode,
                      const models::Registry& registry) {
  // The daemon's own --shm-mode, whatever it is: a client's default would refuse 0666.
  const shm::AttachPolicy policy{geteuid(), mode};
  auto seg = shm::ClientSegment::attach(segment_name, policy);
  if (!seg.ok()) return seg.status().message();
  if (seg.value()->server_pid() != static_cast<std::int32_t>(getpid())) {
    return "segment '" + segment_name + "' belongs to process " +
           std::to_string(seg.value()->server_pid()) + ", not this daemon";
  }
  const std::uint64_t beat =
      seg.value()->view().header().heartbeat_ns.load(std::memory_order_relaxed);
  const std::uint64_t now = shm::monotonic_ns();
  if (now > beat && now - beat > shm::kHeartbeatStaleNs) {
    return "segment '" + segment_name + "' heartbeat is " +
           std::to_string((now - beat) / 1'000'000) + " ms old";
  }
  if (seg.value()->tripped()) return "segment '" + segment_name + "' was truncated";
  if (registry.models().empty()) {
    return "no model loaded (" + std::to_string(registry.refused().size()) +
           " refused; see the log)";
  }
  return {};
}

// The fetch configuration as resolved from --config, MODEL_CONFIG and the environment,
// one KEY=VALUE a line (credentials in URLs hidden): what --print-config shows.
void print_fetch_config(const service::FetchConfig& c) {
  for (const service::PrefixConfig& p : c.prefixes) {
    if (!p.init_url.empty()) {
      std::printf("%s_INIT_URL=%s\n", std::string(p.prefix).c_str(),
                  service::redact_url(p.init_url).c_str());
    }
    if (!p.trainer.empty()) std::printf("%s_TRAINER=%s\n", std::string(p.prefix).c_str(), p.trainer.c_str());
    if (!p.filters.empty()) std::printf("%s_FILTERS=%s\n", std::string(p.prefix).c_str(), p.filters.c_str());
  }
  std::printf("MODEL_SERVER_ENABLE=%s\n", c.model_server_enable ? "true" : "false");
  std::printf("MODEL_SERVER_URL=%s\n", service::redact_url(c.model_server_url).c_str());
  std::printf("MODEL_SERVER_MODEL_REQ_PATH=%s\n", c.model_server_req_path.c_str());
  std::printf("FETCH_MAX_BYTES=%zu\n", c.max_bytes);
  std::printf("FETCH_TIMEOUT_MS=%lld\n", static_cast<long long>(c.total_timeout.count()));
  std::printf("FETCH_ENABLED=%s\n", c.enabled() ? "true" : "false");
}

}  // namespace

int main(int argc, char** argv) {
  // A closed log pipe or a peer gone mid-reply must cost an error, not the daemon (whose
  // death would leave its segment behind).
  signal(SIGPIPE, SIG_IGN);
  const auto t0 = std::chrono::steady_clock::now();
  CLI::App app{"estimatord: shared-memory power estimation daemon (Kepler-compatible models)"};
  std::string model_dir;
  service::DaemonConfig config;
  config.segment.name = shm::default_segment_name();
  std::uint32_t slot_bytes = config.segment.request_capacity;
  double spin_us = 50;
  std::string log_level = "info";
  std::string mode = "0600";
  bool no_defaults = false;
  models::SelectionPolicy policy;
  app.add_option("--model-dir", model_dir,
                 "directory of models (folders with metadata.json, kepler-model-db zips, "
                 "weight files), watched for changes; added to the embedded defaults");
  app.add_flag("--no-default-models", no_defaults, "do not serve the embedded default models");
  app.add_option("--error-key", policy.error_key,
                 "metadata figure whose smallest value wins selection (mae, mape, mse, ...)")
      ->capture_default_str();
  app.add_option("--node-type", policy.node_type,
                 "prefer models trained on this node_type (kepler-model-db index) when any fits");
  std::string selection = "measured";
  service::MeasuredSelectionConfig measured;
  app.add_option("--selection", selection,
                 "measured: when requests carry measured node power, answer with the model "
                 "whose error measured on this node is smallest (docs/models.md); published: "
                 "by published error only")
      ->check(CLI::IsMember({"measured", "published"}))
      ->capture_default_str();
  app.add_option("--selection-window", measured.window,
                 "intervals over which measured errors are averaged (exponential weights)")
      ->check(CLI::Range(1.0, 1e6))
      ->capture_default_str();
  app.add_option("--selection-min-intervals", measured.min_intervals,
                 "intervals of measured evidence a model needs before it can be chosen")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  app.add_option("--shm-name", config.segment.name, "shared-memory segment name")
      ->capture_default_str();
  app.add_option("--slots", config.segment.slots, "requests in flight at once (1-512)")
      ->check(CLI::Range(1, 512))
      ->capture_default_str();
  app.add_option("--slot-bytes", slot_bytes,
                 "bytes of each slot's request area; the response area is half of it")
      ->capture_default_str();
  app.add_option("--spin-us", spin_us,
                 "microseconds to spin for the next request before sleeping")
      ->check(CLI::Range(0.0, 1e6))
      ->capture_default_str();
  bool predict = false;
  app.add_flag("--predictive-wake", predict,
               "learn each client's request period and wake just before its next request "
               "instead of when it rings; pays for clients calling every second or so, as "
               "Kepler does (docs/architecture.md, waiting)");
  app.add_option("--threads", config.threads,
                 "dispatch threads (1-64): each takes one request at a time, so N clients' "
                 "requests are evaluated at once; pays for large requests from several "
                 "clients with idle CPUs (docs/benchmarks.md, dispatch threads)")
      ->check(CLI::Range(1, static_cast<int>(shm::kMaxDispatchThreads)))
      ->capture_default_str();
  app.add_option("--shm-mode", mode, "segment permissions (octal; 0660 admits the group)")
      ->capture_default_str();
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, off")
      ->check(CLI::IsMember(service::kLogLevels))
      ->capture_default_str();
  app.set_version_flag("--version", service::version_text("estimatord"));
  std::string metrics_address;
  app.add_option("--metrics-address", metrics_address,
                 "serve Prometheus metrics over HTTP at HOST:PORT (e.g. 0.0.0.0:9103; port 0 "
                 "picks a free one; default: off)");
  // Kepler's unix-socket JSON protocol (service/kepler_endpoint.h).
  service::KeplerEndpointConfig socket_config;
  std::string socket_mode = "0660";
  long socket_timeout_ms = socket_config.deadline.count();
  std::string socket_path;
  app.add_option("--socket", socket_path,
                 "serve Kepler's JSON protocol on this unix socket (Kepler's path: "
                 "/tmp/estimator.sock; default: off)");
  app.add_option("--socket-mode", socket_mode, "socket file permissions (octal)")
      ->capture_default_str();
  app.add_option("--socket-max-bytes", socket_config.max_request_bytes,
                 "largest JSON request accepted; a larger one gets an error reply")
      ->capture_default_str();
  app.add_option("--socket-timeout-ms", socket_timeout_ms,
                 "deadline of a socket connection, from accept to the last reply byte")
      ->check(CLI::Range(1L, 86'400'000L))
      ->capture_default_str();
  app.add_option("--socket-max-connections", socket_config.max_connections,
                 "socket connections open at once; past it the oldest unfinished one is closed")
      ->capture_default_str();
  app.add_option("--socket-max-buffered-bytes", socket_config.max_buffered_bytes,
                 "bytes of unfinished requests held across all socket connections; past it "
                 "the largest is refused")
      ->capture_default_str();
  app.add_option("--socket-v09-read-bytes", socket_config.client_reads.v09,
                 "reply bytes a Kepler v0.6-v0.9 client reads; a longer reply to it is an "
                 "error reply instead (0: it reads whole replies)")
      ->capture_default_str();
  app.add_option("--socket-2022-read-bytes", socket_config.client_reads.form2022,
                 "the same for a 2022 (Kepler v0.3) client")
      ->capture_default_str();
  // Model fetching (service/model_fetcher.h): Kepler's <PREFIX>_INIT_URL and MODEL_SERVER_*
  // keys, from the environment and this file (the environment wins).
  std::string fetch_config_file;
  bool no_fetch = false;
  app.add_option("--config", fetch_config_file,
                 "KEY=VALUE file (or ConfigMap directory) of Kepler's model keys: "
                 "<PREFIX>_INIT_URL, MODEL_SERVER_ENABLE, ...; the environment overrides it");
  app.add_flag("--no-fetch", no_fetch, "never download models (INIT_URL, model server)");
  bool print_config = false;
  app.add_flag("--print-config", print_config,
               "print the model fetch configuration resolved from --config, MODEL_CONFIG and "
               "the environment, then exit (2 when it is invalid)");
  if (auto code = service::parse_command_line(app, argc, argv)) return *code;

  service::log_to_stderr();
  spdlog::set_level(spdlog::level::from_str(log_level));
  config.segment.request_capacity = slot_bytes;
  config.segment.response_capacity = slot_bytes / 2;
  config.spin_ns = static_cast<std::uint64_t>(spin_us * 1000.0);
  config.predict = predict;
  try {
    config.segment.mode = static_cast<mode_t>(std::stoul(mode, nullptr, 8));
  } catch (const std::exception&) {
    spdlog::error("--shm-mode must be octal, e.g. 0600");
    return 2;
  }
  try {
    socket_config.mode = static_cast<mode_t>(std::stoul(socket_mode, nullptr, 8));
  } catch (const std::exception&) {
    spdlog::error("--socket-mode must be octal, e.g. 0660");
    return 2;
  }
  socket_config.path = socket_path;
  // libcurl's global state, set up while this is the only thread. The signals main() waits
  // for are blocked here too, before the model watcher's and the fetcher's threads start
  // (they inherit the mask): a thread that does not block them could be chosen for a
  // signal's default action, killing the process without cleanup (segment, lock, private
  // model directory).
  const service::CurlGlobal curl_global;
  const sigset_t daemon_signals = service::daemon_signals();
  pthread_sigmask(SIG_BLOCK, &daemon_signals, nullptr);
  auto fetch_config = service::load_fetch_config(fetch_config_file);
  if (!fetch_config.ok()) {
    spdlog::error("model fetch configuration: {}", fetch_config.status().to_string());
    return 2;
  }
  if (print_config) {
    print_fetch_config(*fetch_config);
    return 0;
  }
  const bool fetching = !no_fetch && fetch_config->enabled();
  // Fetched models land in the model directory; without one, a private directory under
  // $TMPDIR serves (removed at exit: fetched models are fetched again on the next start).
  struct PrivateDir {
    std::filesystem::path path;
    ~PrivateDir() {
      std::error_code ec;
      if (!path.empty()) std::filesystem::remove_all(path, ec);
    }
  } private_model_dir;
  if (fetching && model_dir.empty()) {
    std::string tmpl = (std::filesystem::temp_directory_path() / "estimatord-models-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) {
      spdlog::error("cannot create a directory for fetched models under {}: {}",
                    std::filesystem::temp_directory_path().string(), std::strerror(errno));
      return 1;
    }
    private_model_dir.path = tmpl;
    model_dir = tmpl;
    spdlog::info("no --model-dir: fetched models go to {} (removed at exit)", model_dir);
  }
  socket_config.deadline = std::chrono::milliseconds(socket_timeout_ms);

  // The embedded defaults serve unless disabled; a model directory adds to them and is
  // watched for changes.
  std::vector<models::ModelFolder> defaults;
  if (!no_defaults) defaults = models::embedded_model_folders();
  auto holder = std::make_shared<service::RegistryHolder>(models::Registry::build(defaults),
                                                         policy);
  measured.enabled = selection == "measured";
  const auto measured_selection = std::make_shared<service::MeasuredSelection>(measured);
  holder->set_measured_selection(measured_selection);
  std::unique_ptr<service::ModelWatcher> watcher;
  if (!model_dir.empty()) {
    if (!std::filesystem::is_directory(model_dir)) {
      spdlog::error("--model-dir {}: not a directory", model_dir);
      return service::kExitUsage;
    }
    watcher = std::make_unique<service::ModelWatcher>(
        service::ModelLoader(model_dir, std::move(defaults)), *holder);
  }
  const auto registry = holder->get();
  for (const auto& m : registry->models()) {
    const auto& i = m->info();
    spdlog::info("model {} ({} {} {}, mae {}) from {}", i.name, i.model_class, i.source,
                 i.output_type, i.mae, i.origin);
  }
  for (const auto& r : registry->refused()) {
    spdlog::warn("refused {}: {}", r.origin, r.reason.to_string());
  }
  if (registry->models().empty()) {
    spdlog::warn("no model loaded: every estimate request will be refused");
  }

  const std::size_t model_count = registry->models().size();
  // Created before the daemon, whose dispatch threads cache cells of it, so it outlives them.
  service::Metrics metrics;
  if (!metrics_address.empty()) config.metrics = &metrics;
  metrics.add_families([measured_selection](std::string& out) { measured_selection->render(out); });
  // The fetcher and its shape observer are wired before the daemon serves, so that even its
  // first request asks the model server when no model fits; the fetcher starts once the
  // daemon serves (start-up never waits on fetching), and one that never started (the
  // daemon could not) has touched nothing.
  std::shared_ptr<service::ModelFetcher> fetcher;
  if (fetching) {
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(model_dir) / "fetched", ec);
    if (ec) {
      spdlog::error("model fetching disabled: cannot write {}/fetched: {}", model_dir, ec.message());
    } else {
      fetcher = std::make_shared<service::ModelFetcher>(*fetch_config, model_dir,
                                                        service::ModelFetcher::Start::kLater);
      if (!metrics_address.empty()) metrics.watch_fetches(fetcher->shared_stats());
      // A request shape that no model fits, or that only an embedded default fits, asks
      // the model server for a trained model (want() de-duplicates and never blocks).
      holder->set_shape_observer(std::make_shared<const service::ShapeObserver>(
          [weak = std::weak_ptr<service::ModelFetcher>(fetcher)](const wire::ParsedRequest& r,
                                                                 const models::Model* chosen) {
            if (chosen != nullptr && !chosen->info().origin.starts_with("embedded:")) return;
            const auto f = weak.lock();
            if (f == nullptr || r.feature_names.empty()) return;
            service::ModelQuery q;
            q.features.assign(r.feature_names.begin(), r.feature_names.end());
            for (const SystemValue& v : r.system_values) q.features.emplace_back(v.name);
            q.output_type = r.output_type;
            q.source = r.source;
            q.trainer = r.trainer;
            q.filter = r.filter;
            f->want(q);
          }));
    }
  }

  auto daemon = service::Daemon::start(config, holder);
  if (!daemon.ok()) {
    spdlog::error("cannot start: {}", daemon.status().to_string());
    return service::exit_code(daemon.status());
  }
  const service::CrashCleanup crash_cleanup(config.segment.name);
  std::unique_ptr<service::MetricsServer> metrics_server;  // stopped before the daemon
  if (!metrics_address.empty()) {
    const service::Daemon* d = daemon.value().get();
    Status added = metrics.add_counter(
        "estimator_slots_reclaimed_total", "Slots of dead clients reclaimed by the daemon.",
        [d] { return static_cast<double>(d->stats().reclaimed_slots.load()); });
    if (added.ok() && watcher) {
      added = metrics.add_counter(
          "estimator_registry_reloads_total", "Model directory changes swapped in.",
          [w = watcher.get()] { return static_cast<double>(w->reloads()); });
    }
    if (!added.ok()) spdlog::warn("metrics: {}", added.to_string());
    auto server = service::MetricsServer::start(
        {.address = metrics_address},
        [&metrics, &holder] { return metrics.render(holder->get().get()); },
        [name = config.segment.name, mode = config.segment.mode, &holder] {
          return readiness(name, mode, *holder->get());
        });
    if (!server.ok()) {
      spdlog::error("--metrics-address: {}", server.status().to_string());
      return service::exit_code(server.status());
    }
    metrics_server = std::move(server).value();
    spdlog::info("metrics: http://{}/metrics", metrics_server->bound_address());
  }
  // After the models are loaded and the daemon serves; stopped after the metrics server
  // (which reads its counters) and before the daemon.
  std::unique_ptr<service::KeplerEndpoint> kepler_socket;
  if (!socket_path.empty()) {
    if (!metrics_address.empty()) socket_config.metrics = &metrics;
    auto endpoint = service::KeplerEndpoint::start(socket_config, holder);
    if (!endpoint.ok()) {
      spdlog::error("--socket: {}", endpoint.status().to_string());
      return service::exit_code(endpoint.status());
    }
    kepler_socket = std::move(endpoint).value();
    if (!metrics_address.empty()) {
      const service::KeplerEndpointStats* ks = &kepler_socket->stats();
      Status added = metrics.add_counter(
          "estimator_kepler_socket_requests_total", "Kepler JSON socket requests answered.",
          [ks] { return static_cast<double>(ks->requests.load()); });
      if (added.ok()) {
        added = metrics.add_counter(
            "estimator_kepler_socket_errors_total",
            "Kepler JSON socket replies carrying an error (oversized requests included).",
            [ks] { return static_cast<double>(ks->errors.load()); });
      }
      if (added.ok()) {
        added = metrics.add_counter(
            "estimator_kepler_socket_timeouts_total",
            "Kepler JSON socket connections closed at their deadline.",
            [ks] { return static_cast<double>(ks->timeouts.load()); });
      }
      if (!added.ok()) spdlog::warn("metrics: {}", added.to_string());
    }
  }
  const auto& seg = daemon.value()->segment();
  const double startup_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  spdlog::info("ready: segment '{}' ({} slots, {} bytes), {} models, epoch {}, started in {:.1f} ms",
               seg.name(), seg.view().slot_count(), seg.bytes(), model_count, seg.epoch(),
               startup_ms);
  if (fetcher) fetcher->start();

  int sig = 0;
  while (sigwait(&daemon_signals, &sig) == 0 && sig == service::kReloadSignal) {
    if (watcher) {
      spdlog::info("SIGHUP: reloading the model directory {}", model_dir);
      watcher->request_reload();
    } else {
      spdlog::info("SIGHUP: no --model-dir to reload");
    }
  }
  spdlog::info("signal {} received, stopping", sig);
  holder->set_shape_observer(nullptr);
  fetcher.reset();  // aborts a transfer in progress
  const auto& stats = daemon.value()->stats();
  const std::uint64_t served = stats.requests.load();
  const std::uint64_t failed = stats.errors.load();
  metrics_server.reset();
  kepler_socket.reset();
  daemon.value().reset();
  spdlog::info("stopped after {} requests ({} errors); segment removed", served, failed);
  return 0;
}
