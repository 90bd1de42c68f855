// SPDX-License-Identifier: Apache-2.0
// What the model fetcher did (service/model_fetcher.h), in a header of its own so that the
// metrics (service/metrics.cpp, in estimator_service) render it without including the
// fetcher, which belongs to another library (estimator_fetch, with libcurl).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>

namespace estimator::service {

// Upper bounds (Prometheus `le`) of the transfer-duration buckets, in milliseconds; a last
// bucket (+Inf) takes the rest. Kepler's users reported downloads of 40 s to 5 minutes.
inline constexpr std::array<std::uint64_t, 9> kFetchDurationBoundsMs = {
    100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000};

// What the fetcher did, for logs, tests and the metrics. Shared (the metrics server may
// scrape after the fetcher is gone) and written with relaxed atomics by its worker.
struct FetchStats {
  std::atomic<std::uint64_t> attempts{0};   // transfers started
  std::atomic<std::uint64_t> landed{0};     // models written into the directory
  std::atomic<std::uint64_t> refused{0};    // bodies that failed validation
  std::atomic<std::uint64_t> no_model{0};   // model-server 400/404 answers
  std::atomic<std::uint64_t> errors{0};     // transfers that failed otherwise (retried or not)
  std::atomic<std::uint64_t> failed{0};     // jobs given up after their retries
  std::atomic<std::uint64_t> bytes{0};      // body bytes received by every transfer
  // Durations of finished transfers: per-bucket counts (not cumulative) and the sum.
  std::array<std::atomic<std::uint64_t>, kFetchDurationBoundsMs.size() + 1> duration_buckets{};
  std::atomic<std::uint64_t> duration_sum_us{0};

  void record_duration(std::chrono::microseconds d) noexcept {
    const auto us = static_cast<std::uint64_t>(d.count() > 0 ? d.count() : 0);
    std::size_t b = 0;
    while (b < kFetchDurationBoundsMs.size() && us > kFetchDurationBoundsMs[b] * 1000) ++b;
    duration_buckets[b].fetch_add(1, std::memory_order_relaxed);
    duration_sum_us.fetch_add(us, std::memory_order_relaxed);
  }
};

}  // namespace estimator::service
