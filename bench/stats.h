// SPDX-License-Identifier: Apache-2.0
// Latency samples of one (mode, rows) case and their summary: percentiles of the
// individual round trips, and throughput from the wall time of the timed loops.
//
// Every round trip is kept (no histogram buckets, no sampling), so p99.9 and max are
// observed values, not interpolations. The round trips come in segments (one per round);
// a segment cut short by the time budget (a loaded machine, a stalled mode) has its
// samples weighted up to the round trips it was planned to have, so a slow segment counts
// as much as a fast one instead of being drowned by it.
#pragma once

#include <cstdint>
#include <vector>

namespace estimator::bench {

struct Summary {
  std::uint64_t count = 0;   // round trips measured
  double p50_us = 0;
  double p90_us = 0;
  double p99_us = 0;
  double p999_us = 0;
  double max_us = 0;
  double slow_fraction = 0;  // of round trips longer than the threshold given
  double req_per_s = 0;
  double rows_per_s = 0;
};

class Samples {
 public:
  void reserve(std::size_t n) {
    ns_.reserve(n);
    weight_.reserve(n);
  }
  void add(std::int64_t ns) {
    ns_.push_back(ns);
    weight_.push_back(1.0);
  }
  // Closes the segment of the add()s since the last call: it was planned to hold
  // `planned` round trips and its timed loop took `wall_ns`.
  void end_segment(std::size_t planned, std::int64_t wall_ns);
  std::size_t size() const { return ns_.size(); }

  // Summarizes the samples; `rows` per request for rows/s. Round trips longer than
  // `slow_ns` are counted in slow_fraction.
  Summary summarize(std::uint32_t rows, std::int64_t slow_ns) const;

 private:
  std::vector<std::int64_t> ns_;
  std::vector<double> weight_;  // per sample: planned / measured round trips of its segment
  std::size_t segment_start_ = 0;
  double weighted_wall_ns_ = 0;
  double weighted_count_ = 0;
};

// The weighted nearest-rank q-quantile (0 < q <= 1): the smallest sample whose cumulative
// weight reaches q of the total. `sorted` holds (value, weight) pairs in value order.
std::int64_t quantile(const std::vector<std::pair<std::int64_t, double>>& sorted, double q);

}  // namespace estimator::bench
