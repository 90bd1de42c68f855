// SPDX-License-Identifier: Apache-2.0
// Weighted percentiles and throughput of the measured round trips (see stats.h).
#include "bench/stats.h"

#include <algorithm>
#include <utility>

namespace estimator::bench {

void Samples::end_segment(std::size_t planned, std::int64_t wall_ns) {
  const std::size_t measured = ns_.size() - segment_start_;
  if (measured != 0) {
    const double w =
        static_cast<double>(std::max(planned, measured)) / static_cast<double>(measured);
    std::fill(weight_.begin() + static_cast<std::ptrdiff_t>(segment_start_), weight_.end(), w);
    weighted_count_ += w * static_cast<double>(measured);
    weighted_wall_ns_ += w * static_cast<double>(wall_ns);
  }
  segment_start_ = ns_.size();
}

std::int64_t quantile(const std::vector<std::pair<std::int64_t, double>>& sorted, double q) {
  if (sorted.empty()) return 0;
  double total = 0;
  for (const auto& s : sorted) total += s.second;
  const double target = q * total;
  double seen = 0;
  for (const auto& s : sorted) {
    seen += s.second;
    if (seen >= target) return s.first;
  }
  return sorted.back().first;  // rounding: q = 1
}

Summary Samples::summarize(std::uint32_t rows, std::int64_t slow_ns) const {
  Summary s;
  s.count = ns_.size();
  if (ns_.empty()) return s;
  std::vector<std::pair<std::int64_t, double>> sorted(ns_.size());
  double total = 0;
  double slow = 0;
  for (std::size_t i = 0; i < ns_.size(); ++i) {
    sorted[i] = {ns_[i], weight_[i]};
    total += weight_[i];
    if (ns_[i] > slow_ns) slow += weight_[i];
  }
  std::sort(sorted.begin(), sorted.end());
  const auto us = [](std::int64_t ns) { return static_cast<double>(ns) / 1000.0; };
  s.p50_us = us(quantile(sorted, 0.50));
  s.p90_us = us(quantile(sorted, 0.90));
  s.p99_us = us(quantile(sorted, 0.99));
  s.p999_us = us(quantile(sorted, 0.999));
  s.max_us = us(sorted.back().first);
  s.slow_fraction = slow / total;
  if (weighted_wall_ns_ > 0) {
    s.req_per_s = weighted_count_ * 1e9 / weighted_wall_ns_;
    s.rows_per_s = s.req_per_s * rows;
  }
  return s;
}

}  // namespace estimator::bench
