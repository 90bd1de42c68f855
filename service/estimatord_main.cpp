// estimatord: the estimator daemon. Loads the models, creates the shared-memory segment,
// serves until SIGINT or SIGTERM, then removes the segment.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <spdlog/spdlog.h>

#include "models/embedded_defaults.h"
#include "service/daemon.h"
#include "service/model_watcher.h"

using namespace estimator;

int main(int argc, char** argv) {
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
  app.add_option("--model-dir", model_dir,
                 "directory of models (folders with metadata.json, kepler-model-db zips, "
                 "weight files), watched for changes; added to the embedded defaults");
  app.add_flag("--no-default-models", no_defaults, "do not serve the embedded default models");
  app.add_option("--shm-name", config.segment.name, "shared-memory segment name")
      ->capture_default_str();
  app.add_option("--slots", config.segment.slots, "requests in flight at once (1-512)")
      ->capture_default_str();
  app.add_option("--slot-bytes", slot_bytes,
                 "bytes of each slot's request area; the response area is half of it")
      ->capture_default_str();
  app.add_option("--spin-us", spin_us,
                 "microseconds to spin for the next request before sleeping")
      ->capture_default_str();
  app.add_option("--threads", config.threads, "dispatch threads")->capture_default_str();
  app.add_option("--shm-mode", mode, "segment permissions (octal; 0660 admits the group)")
      ->capture_default_str();
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, off")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  spdlog::set_level(spdlog::level::from_str(log_level));
  config.segment.request_capacity = slot_bytes;
  config.segment.response_capacity = slot_bytes / 2;
  config.spin_ns = static_cast<std::uint64_t>(spin_us * 1000.0);
  try {
    config.segment.mode = static_cast<mode_t>(std::stoul(mode, nullptr, 8));
  } catch (const std::exception&) {
    spdlog::error("--shm-mode must be octal, e.g. 0600");
    return 2;
  }

  // The embedded defaults serve unless disabled; a model directory adds to them and is
  // watched for changes.
  std::vector<models::ModelFolder> defaults;
  if (!no_defaults) defaults = models::embedded_model_folders();
  auto holder = std::make_shared<service::RegistryHolder>(models::Registry::build(defaults));
  std::unique_ptr<service::ModelWatcher> watcher;
  if (!model_dir.empty()) {
    if (!std::filesystem::is_directory(model_dir)) {
      spdlog::error("--model-dir {}: not a directory", model_dir);
      return 1;
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

  // Block the stop signals in every thread; main waits for them synchronously.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  const std::size_t model_count = registry->models().size();
  auto daemon = service::Daemon::start(config, holder);
  if (!daemon.ok()) {
    spdlog::error("cannot start: {}", daemon.status().to_string());
    return 1;
  }
  const auto& seg = daemon.value()->segment();
  const double startup_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  spdlog::info("ready: segment '{}' ({} slots, {} bytes), {} models, epoch {}, started in {:.1f} ms",
               seg.name(), seg.view().slot_count(), seg.bytes(), model_count, seg.epoch(),
               startup_ms);

  int sig = 0;
  sigwait(&stop_signals, &sig);
  spdlog::info("signal {} received, stopping", sig);
  const auto& stats = daemon.value()->stats();
  const std::uint64_t served = stats.requests.load();
  const std::uint64_t failed = stats.errors.load();
  daemon.value().reset();
  spdlog::info("stopped after {} requests ({} errors); segment removed", served, failed);
  return 0;
}
