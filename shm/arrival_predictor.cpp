// SPDX-License-Identifier: Apache-2.0
#include "shm/arrival_predictor.h"

#include <algorithm>

namespace estimator::shm {
namespace {

// The whole window (early + late) is at most this share of the period, and never longer
// than kMaxWindowNs: what a perfectly periodic client costs the daemon beyond serving it
// (1/160 = 0.625 %: within 1 % of a core at 10 ms with the request served; 0.05 % at 1 s).
constexpr std::uint64_t kWindowShare = 160;
constexpr std::uint64_t kMaxWindowNs = 500'000;
// Awake this much before the expected arrival whatever the jitter: a timer wake-up on a
// busy machine is itself late by some microseconds.
constexpr std::uint64_t kMinEarlyNs = 30'000;
constexpr std::uint64_t kMinLateNs = 20'000;
// An interval within 1/kTolerance of the period keeps the rhythm: an exporter's ticks on a
// busy node come late by up to milliseconds, and its period does not change for that.
constexpr std::uint64_t kTolerance = 4;

std::uint64_t diff(std::uint64_t a, std::uint64_t b) { return a > b ? a - b : b - a; }

}  // namespace

std::uint64_t ArrivalPredictor::client_key(std::uint32_t pidns, std::int32_t pid,
                                           std::uint32_t slot) {
  // Collisions only make two clients share (and spoil) one entry.
  std::uint64_t k = (std::uint64_t{pidns} << 32) ^ static_cast<std::uint32_t>(pid) ^
                    (std::uint64_t{slot} << 48);
  k ^= k >> 33;
  k *= 0xFF51AFD7ED558CCDULL;
  k ^= k >> 33;
  return k | 1;  // never 0, the key of an unused entry
}

void ArrivalPredictor::arrived(std::uint64_t key, std::uint64_t now_ns) {
  Entry& e = entries_[key % kEntries];
  if (e.key != key || e.last_ns == 0 || now_ns <= e.last_ns) {
    e = Entry{key, now_ns, 0, 0, 0};
    return;
  }
  const std::uint64_t interval = now_ns - e.last_ns;
  e.last_ns = now_ns;
  e.suspended = false;
  if (interval < kMinPeriodNs || interval > kMaxPeriodNs) {
    e.period_ns = e.jitter_ns = 0;
    e.hits = 0;
    return;
  }
  const std::uint64_t dev = diff(interval, e.period_ns);
  if (e.period_ns == 0 || dev > e.period_ns / kTolerance) {
    // A new rhythm (or none): learn it from this interval on.
    e.period_ns = interval;
    e.jitter_ns = 0;
    e.hits = 0;
    return;
  }
  // Slow averages: one late request moves the period by an eighth of its lateness.
  e.period_ns = interval > e.period_ns ? e.period_ns + (interval - e.period_ns) / 8
                                       : e.period_ns - (e.period_ns - interval) / 8;
  e.jitter_ns = dev > e.jitter_ns ? e.jitter_ns + (dev - e.jitter_ns) / 4
                                  : e.jitter_ns - (e.jitter_ns - dev) / 4;
  if (e.hits < kConfidentAfter) ++e.hits;
}

ArrivalPredictor::Window ArrivalPredictor::window(const Entry& e) {
  const std::uint64_t budget = std::min(e.period_ns / kWindowShare, kMaxWindowNs);
  const std::uint64_t early = std::min(budget * 2 / 3, kMinEarlyNs + 4 * e.jitter_ns);
  const std::uint64_t late = std::min(budget - early, kMinLateNs + 2 * e.jitter_ns);
  const std::uint64_t expected = e.last_ns + e.period_ns;
  return {expected - early, expected + late};
}

std::optional<ArrivalPredictor::Window> ArrivalPredictor::next_window(std::uint64_t now_ns) {
  std::optional<Window> best;
  for (Entry& e : entries_) {
    if (e.hits < kConfidentAfter || e.suspended) continue;
    const Window w = window(e);
    if (w.end_ns <= now_ns) {
      e.suspended = true;  // missed: not predicted again before its next request
      misses_.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    if (!best || w.start_ns < best->start_ns) best = w;
  }
  return best;
}

std::uint64_t ArrivalPredictor::period_of(std::uint64_t key) const {
  const Entry& e = entries_[key % kEntries];
  return e.key == key && e.hits >= kConfidentAfter && !e.suspended ? e.period_ns : 0;
}

}  // namespace estimator::shm
