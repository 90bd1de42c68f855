// SPDX-License-Identifier: Apache-2.0
// Background model fetching: Kepler's <PREFIX>_INIT_URL downloads and the model server's
// POST /model, never on the start-up or request path.
//
// One worker thread does every transfer (libcurl's easy interface, no signals, only
// http/https/file, bounded redirects, connect and total timeouts, a size cap), validates
// what arrives exactly as the model directory's scanner will read it, and lands it
// atomically under
//
//     <model_dir>/fetched/<source>/<OutputType>/<slot>/<file>.zip   (or .json, a weight file)
//
// where the path tells the scanner the energy source and output type when the model's
// metadata does not. <slot> is `init_<prefix>` for an INIT_URL (init_node_components, ...)
// and `server_<hash of the query>` for a model-server question; it holds only the file
// fetched last, so fetching the same thing again replaces it. <file> keeps the name the
// source gave (the URL's last component, the server's attachment name, else the trainer):
// a Kepler weight file carries no model name, so its file name is its name. The
// ModelWatcher on <model_dir> then swaps the new model in.
//
// Failures are values in the log, never fatal: transient ones (no connection, timeouts,
// HTTP 5xx/408/429) are retried with capped exponential backoff and jitter; the model
// server's "no model" (400/404) is logged once and the query rests for a while; garbage
// (not a zip or weight JSON, or one that does not load) is refused and never lands.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "service/fetch_config.h"
#include "service/fetch_stats.h"

namespace estimator::service {

// libcurl's process-wide state. Create one on the main thread before any other thread
// starts (curl_global_init is not safe to race), and keep it until every ModelFetcher is
// gone.
class CurlGlobal {
 public:
  CurlGlobal();
  ~CurlGlobal();
  CurlGlobal(const CurlGlobal&) = delete;
  CurlGlobal& operator=(const CurlGlobal&) = delete;
  bool ok() const { return ok_; }

 private:
  bool ok_ = false;
};

// A model-server question: the fields of its POST body that select a model.
struct ModelQuery {
  std::vector<std::string> features;  // metrics (and system features) available; not empty
  std::string output_type;            // "AbsPower" or "DynPower" (empty: AbsPower)
  std::string source;                 // energy source, "rapl-sysfs", "acpi", ... (empty: rapl-sysfs)
  std::string trainer;                // trainer_name (empty: any)
  std::string filter;                 // "mae:0.5" (empty: none)
  bool weight = false;                // ask for a weight JSON instead of a zip

  // Identity for de-duplication: features sorted and unique, source and output type in
  // canonical form.
  std::string key() const;
};

// The JSON body of the model server's POST for `q`.
std::string model_request_body(const ModelQuery& q, int node_type, bool send_spec);

class ModelFetcher {
 public:
  enum class Start : std::uint8_t {
    kNow,    // at construction
    kLater,  // at start(): until then nothing touches the disk or the network
  };
  // Queues every configured INIT_URL and, when the model server is enabled, a question for
  // each configured prefix (every prefix when none is configured), and starts the worker
  // that does them (`when`). `model_dir` must exist; fetched models land under
  // model_dir/fetched.
  ModelFetcher(FetchConfig config, std::filesystem::path model_dir, Start when = Start::kNow);
  // Removes scratch folders a crash left in model_dir/fetched and starts the worker on what
  // is queued, want()s made before included. Once, from one thread; later calls do nothing.
  // A daemon wires the fetcher before it serves (so its first request can ask) and starts
  // it once it serves (so a second instance that fails to start never touches the first's
  // directory).
  void start();
  // Stops promptly: a transfer in progress is aborted, pending work is dropped.
  ~ModelFetcher();
  ModelFetcher(const ModelFetcher&) = delete;
  ModelFetcher& operator=(const ModelFetcher&) = delete;

  enum class Want : std::uint8_t {
    kQueued,      // will be asked
    kDuplicate,   // already queued, in flight, or landed recently
    kResting,     // asked recently and the answer was "no model" or failure: not yet again
    kDisabled,    // the model server is not enabled
    kRefused,     // the query is malformed or too many distinct queries are tracked
  };
  // Asks the model server for a model matching `q`, in the background. Thread-safe and
  // cheap (a short lock, no I/O): the request path may call it whenever no model fits.
  Want want(const ModelQuery& q);

  using Stats = FetchStats;
  const Stats& stats() const { return *stats_; }
  // The same counters, kept alive for a reader that may outlive this fetcher.
  std::shared_ptr<const FetchStats> shared_stats() const { return stats_; }

  // True when no job is queued, waiting for a retry or in flight (tests).
  bool idle() const;
  // Waits until idle() or the timeout; returns idle().
  bool wait_idle(std::chrono::milliseconds timeout) const;

  // Where fetched models land: model_dir/fetched.
  const std::filesystem::path& landing_root() const { return landing_root_; }

 private:
  struct Job {
    enum class Kind : std::uint8_t { kInitUrl, kServer } kind = Kind::kServer;
    std::string url;        // INIT_URL
    std::string label;      // init_<prefix> or server_<hash>: the landing folder
    std::string source;     // landing folder names
    std::string output_type;
    ModelQuery query;       // kServer
    std::string query_key;  // kServer: de-duplication key
    int attempt = 0;        // transfers done so far
    std::chrono::steady_clock::time_point due{};
  };
  // What the fetcher remembers of a model-server query, for de-duplication and rest.
  struct QueryState {
    bool busy = false;  // queued or in flight
    int refusals = 0;   // consecutive "no model" answers
    bool failed = false;  // the last ask failed (after its retries)
    std::chrono::steady_clock::time_point rest_until{};
  };
  enum class Outcome : std::uint8_t { kLanded, kNoModel, kRetry, kFailed, kStopped };

  void run();
  Outcome attempt(Job& job);
  void finish(const Job& job, Outcome outcome);
  Want enqueue_locked(ModelQuery q, std::chrono::steady_clock::time_point now);
  std::chrono::milliseconds retry_delay(int attempt);

  FetchConfig config_;
  std::filesystem::path model_dir_;
  std::filesystem::path landing_root_;
  std::shared_ptr<FetchStats> stats_ = std::make_shared<FetchStats>();

  mutable std::mutex mu_;
  mutable std::condition_variable cv_;          // new work, stop
  mutable std::condition_variable idle_cv_;     // a job finished
  std::vector<Job> jobs_;                       // queued and waiting for retry
  std::map<std::string, QueryState> queries_;   // by ModelQuery::key()
  int in_flight_ = 0;
  std::uint64_t rng_state_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace estimator::service
