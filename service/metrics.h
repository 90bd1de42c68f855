// SPDX-License-Identifier: Apache-2.0
// Prometheus metrics of the daemon: request counts by model and status, a latency
// histogram, answers from a fallback model, pings, the loaded models and their error
// figures (as gauges), model downloads, the build and the process, rendered in the text
// exposition format 0.0.4.
//
// Recording is on the request path, so it takes no lock, allocates nothing and touches
// no string: a caller resolves a RequestCell once per model (cell() may lock and
// allocate) and keeps the pointer, as RequestHandler does in its plan cache. Cells live
// as long as the Metrics object, so a cached pointer never dangles; a model dropped by a
// reload keeps its cell (Prometheus counters must not go backwards).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "common/status.h"

namespace estimator::models {
class Registry;
}

namespace estimator::service {

struct FetchStats;

// Upper bounds (inclusive, Prometheus `le`) of the latency buckets, in nanoseconds: 1 us
// to 1 s in 1-2.5-5 steps. A last bucket (+Inf) takes the rest.
inline constexpr std::array<std::uint64_t, 19> kLatencyBoundsNs = {
    1'000,       2'500,       5'000,       10'000,      25'000,
    50'000,      100'000,     250'000,     500'000,     1'000'000,
    2'500'000,   5'000'000,   10'000'000,  25'000'000,  50'000'000,
    100'000'000, 250'000'000, 500'000'000, 1'000'000'000};
inline constexpr std::size_t kLatencyBuckets = kLatencyBoundsNs.size() + 1;

// One per Code value; codes are append-only (common/status.h), a new one lands in kInternal
// until this grows.
inline constexpr std::size_t kCodeCount = static_cast<std::size_t>(Code::kIntegrity) + 1;

// The counters of one model. Written by any number of threads with relaxed atomics;
// aligned so that two models' cells never share a cache line.
class alignas(64) RequestCell {
 public:
  // Counts one request answered with `code` after `latency_ns`. Lock- and allocation-free.
  void record(Code code, std::uint64_t latency_ns) noexcept {
    auto c = static_cast<std::size_t>(code);
    if (c >= kCodeCount) c = static_cast<std::size_t>(Code::kInternal);
    by_code_[c].fetch_add(1, std::memory_order_relaxed);
    std::size_t b = 0;
    while (b < kLatencyBoundsNs.size() && latency_ns > kLatencyBoundsNs[b]) ++b;
    buckets_[b].fetch_add(1, std::memory_order_relaxed);
    sum_ns_.fetch_add(latency_ns, std::memory_order_relaxed);
  }

  std::uint64_t count(Code code) const {
    const auto c = static_cast<std::size_t>(code);
    return c < kCodeCount ? by_code_[c].load(std::memory_order_relaxed) : 0;
  }

 private:
  friend class Metrics;
  std::array<std::atomic<std::uint64_t>, kCodeCount> by_code_{};
  std::array<std::atomic<std::uint64_t>, kLatencyBuckets> buckets_{};  // not cumulative
  std::atomic<std::uint64_t> sum_ns_{0};
};

class Metrics {
 public:
  Metrics();
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // The cell of a model (name, energy source, output type: the embedded defaults share a
  // name across sources). Locks and allocates the first time a key is seen; the pointer
  // stays valid for the life of this object.
  RequestCell* cell(std::string_view model, std::string_view source,
                    std::string_view output_type);
  // Requests that fail before a model is chosen (unreadable, no model fits): model "".
  RequestCell* unattributed() { return unattributed_; }

  // The count of requests `model` answered although `skipped`, ranked better, was of the
  // requested kind but lacked what the request offers (estimator_model_fallbacks_total).
  // Locks and allocates the first time a key is seen; the pointer stays valid for the
  // life of this object, and counting through it is one relaxed atomic add.
  std::atomic<std::uint64_t>* fallback_counter(std::string_view model, std::string_view source,
                                               std::string_view output_type,
                                               std::string_view skipped);

  // Pings are liveness probes, not estimates: counted apart so probes do not inflate
  // the request counts.
  void count_ping() noexcept { pings_.fetch_add(1, std::memory_order_relaxed); }

  // Error replies of the Kepler JSON socket, by reason: the status code (its name is the
  // `reason` label), a bounded set, unlike the messages, which name fields and models.
  void count_kepler_error(Code code) noexcept {
    auto c = static_cast<std::size_t>(code);
    if (c >= kCodeCount) c = static_cast<std::size_t>(Code::kInternal);
    kepler_errors_[c].fetch_add(1, std::memory_order_relaxed);
  }
  std::uint64_t kepler_errors(Code code) const {
    const auto c = static_cast<std::size_t>(code);
    return c < kCodeCount ? kepler_errors_[c].load(std::memory_order_relaxed) : 0;
  }

  // A value owned elsewhere (slot reclaims, registry reloads, socket endpoint counts),
  // read at scrape time. `name` must be a valid metric name (checked: refused otherwise
  // with kInvalidArgument); `read` must stay callable for the life of this object or
  // until nothing renders any more. Thread-safe.
  Status add_counter(std::string name, std::string help, std::function<double()> read);
  Status add_gauge(std::string name, std::string help, std::function<double()> read);

  // Renders the model fetcher's counters (estimator_model_fetches_total and friends) from
  // now on; kept alive here, so the fetcher may go first. Thread-safe.
  void watch_fetches(std::shared_ptr<const FetchStats> stats);

  // Families rendered by their owner (measured selection's errors and choices): `render`
  // appends complete families (HELP, TYPE, samples) to the exposition, at scrape time.
  // It must stay callable for the life of this object. Thread-safe.
  void add_families(std::function<void(std::string&)> render);

  // The whole exposition (text format 0.0.4): also estimator_build_info and the standard
  // process_* metrics (read from /proc at render time). `registry` (may be null) supplies the
  // estimator_model_info series of the models loaded now.
  std::string render(const models::Registry* registry) const;

  // Content-Type of render()'s output.
  static constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

 private:
  struct External {
    std::string name, help, type;
    std::function<double()> read;
  };
  Status add_external(std::string name, std::string help, std::string type,
                      std::function<double()> read);

  using Key = std::tuple<std::string, std::string, std::string>;  // model, source, output type
  // Guards cells_, fallbacks_ and externals_ (not the counters inside cells).
  mutable std::mutex mu_;
  std::map<Key, std::unique_ptr<RequestCell>> cells_;
  using FallbackKey = std::tuple<std::string, std::string, std::string, std::string>;  // + skipped
  std::map<FallbackKey, std::unique_ptr<std::atomic<std::uint64_t>>> fallbacks_;
  std::vector<External> externals_;
  std::shared_ptr<const FetchStats> fetches_;
  std::vector<std::function<void(std::string&)>> families_;
  RequestCell* unattributed_;
  std::atomic<std::uint64_t> pings_{0};
  std::array<std::atomic<std::uint64_t>, kCodeCount> kepler_errors_{};
  double start_time_seconds_;
};

// Appends `value` escaped as a label value of the text format (\\, \" and \n).
void append_label_value(std::string& out, std::string_view value);

// True when `name` matches [a-zA-Z_:][a-zA-Z0-9_:]*.
bool valid_metric_name(std::string_view name);

}  // namespace estimator::service
