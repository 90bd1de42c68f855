// SPDX-License-Identifier: Apache-2.0
#include "shm/arrival_predictor.h"

#include <algorithm>
#include <cmath>

namespace estimator::shm {
namespace {

// The whole window is at most this share of the period, and never longer than
// kMaxWindowNs: what a perfectly periodic client costs the daemon beyond serving it
// (1/160 = 0.625 %: within 1 % of a core at 10 ms with the request served; 0.05 % at 1 s).
constexpr std::uint64_t kWindowShare = 160;
constexpr std::uint64_t kMaxWindowNs = 500'000;
// Awake before the earliest arrival the window covers by a quarter of the window, at most
// this long: the earliest of kHistory arrivals is not the earliest there can be, and the
// publish stamps have microsecond resolution.
constexpr std::uint64_t kMaxEarlyNs = 50'000;
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

void ArrivalPredictor::restart(Entry& e, std::uint64_t key, std::uint64_t from) {
  e = Entry{};
  e.key = key;
  e.arrivals[0] = from;
  e.count = 1;
}

void ArrivalPredictor::arrived(std::uint64_t key, std::uint64_t now_ns) {
  Entry& e = entries_[key % kEntries];
  const std::uint64_t last = e.count != 0 ? e.arrivals[e.count - 1] : 0;
  if (e.key != key || e.count == 0 || now_ns <= last || now_ns - last > kMaxPeriodNs) {
    restart(e, key, now_ns);
    return;
  }
  std::uint32_t ticks = 1;  // since the last arrival's tick
  if (e.period_ns == 0) {
    if (now_ns - last < kMinPeriodNs) {
      restart(e, key, now_ns);  // back to back: served hot by the spin after an answer
      return;
    }
  } else {
    // In the rhythm: on the next tick or the one after (a skipped request), within
    // 1/kTolerance of the period. One request out of it is ignored (a tick the client
    // served late); a second in a row starts a rhythm anew from the two of them.
    const std::uint64_t since = now_ns - e.last_tick_ns;
    ticks = static_cast<std::uint32_t>((since + e.period_ns / 2) / e.period_ns);
    if (ticks < 1 || ticks > 2 || diff(since, ticks * e.period_ns) > e.period_ns / kTolerance) {
      if (e.stray_ns == 0) {
        e.stray_ns = now_ns;
        // Expected again on the rhythm's next tick after this one.
        if (e.next.end_ns <= now_ns) {
          const std::uint64_t shift = ((now_ns - e.next.end_ns) / e.period_ns + 1) * e.period_ns;
          e.next = {e.next.start_ns + shift, e.next.end_ns + shift};
        }
        e.suspended = e.backoff != 0;
        return;
      }
      const std::uint64_t stray = e.stray_ns;
      restart(e, key, stray);
      if (now_ns - stray < kMinPeriodNs) {
        restart(e, key, now_ns);
        return;
      }
      ticks = 1;
    }
  }
  e.stray_ns = 0;
  // Whether its window (if it had one) closed before it came: a thread that spun through
  // the window suspended it at its end; one that slept through it (a late timer, or busy
  // elsewhere) did not look, and that is what the back-off counts.
  const bool watched = confident(e);  // it had a window, and no thread saw it close empty
  const bool slept_through = watched && now_ns >= e.next.end_ns;
  if (watched && !slept_through) e.late_wakes = 0;  // came in its window
  if (slept_through) ++e.late_wakes;
  if (e.backoff != 0) {
    --e.backoff;
  } else if ((e.suspended || slept_through) && e.late_wakes >= kLateBeforeBackoff) {
    e.backoff = std::min(kMaxBackoff, 2U << std::min(e.late_wakes - kLateBeforeBackoff, 5U));
  }
  e.suspended = e.backoff != 0;
  if (e.count == kHistory) {
    std::copy(e.arrivals.begin() + 1, e.arrivals.end(), e.arrivals.begin());
    std::copy(e.ticks.begin() + 1, e.ticks.end(), e.ticks.begin());
    --e.count;
  }
  e.arrivals[e.count] = now_ns;
  e.ticks[e.count] = e.ticks[e.count - 1] + ticks;
  ++e.count;
  predict(e);
}

void ArrivalPredictor::predict(Entry& e) {
  const std::uint32_t n = e.count;
  // The period: the least-squares slope of arrival time over tick number (each arrival's
  // lateness enters it divided by the span, where the last interval alone would carry
  // two latenesses whole). Relative to the first arrival, so doubles hold it exactly.
  double mean_tick = 0;
  double mean_time = 0;
  for (std::uint32_t i = 0; i < n; ++i) {
    mean_tick += static_cast<double>(e.ticks[i] - e.ticks[0]);
    mean_time += static_cast<double>(e.arrivals[i] - e.arrivals[0]);
  }
  mean_tick /= n;
  mean_time /= n;
  double sxy = 0;
  double sxx = 0;
  for (std::uint32_t i = 0; i < n; ++i) {
    const double dt = static_cast<double>(e.ticks[i] - e.ticks[0]) - mean_tick;
    sxy += dt * (static_cast<double>(e.arrivals[i] - e.arrivals[0]) - mean_time);
    sxx += dt * dt;
  }
  const double period = sxy / sxx;  // sxx > 0: n >= 2 distinct ticks
  e.period_ns = static_cast<std::uint64_t>(std::llround(period));
  // Each arrival projected onto the last one's tick; the earliest is that tick, since a
  // request never comes before its own.
  std::array<std::uint64_t, kHistory> late{};
  std::uint64_t tick = e.arrivals[n - 1];
  for (std::uint32_t i = 0; i < n; ++i) {
    late[i] = e.arrivals[i] +
              static_cast<std::uint64_t>(static_cast<double>(e.ticks[n - 1] - e.ticks[i]) * period);
    tick = std::min(tick, late[i]);
  }
  e.last_tick_ns = tick;
  for (std::uint32_t i = 0; i < n; ++i) late[i] -= tick;  // how late after its tick
  std::sort(late.begin(), late.begin() + n);
  // The stretch of lateness, the budget long at most, that covers the most requests.
  const std::uint64_t budget = std::min(e.period_ns / kWindowShare, kMaxWindowNs);
  const std::uint64_t early = std::min(budget / 4, kMaxEarlyNs);
  std::uint32_t from = 0;
  std::uint32_t covered = 0;
  for (std::uint32_t first = 0, last = 0; first < n; ++first) {
    last = std::max(last, first);
    while (last + 1 < n && late[last + 1] - late[first] + early <= budget) ++last;
    if (last - first + 1 > covered) {
      from = first;
      covered = last - first + 1;
    }
  }
  // The window starts just before the earliest of them and lasts the whole budget: the
  // spin ends when the request comes, so only a request that does not come pays for its
  // end, and a later one than usual is still caught.
  const std::uint64_t start = tick + e.period_ns + late[from] - early;
  e.next = {start, start + budget};
}

std::optional<ArrivalPredictor::Window> ArrivalPredictor::next_window(std::uint64_t now_ns) {
  std::optional<Window> best;
  for (Entry& e : entries_) {
    if (!confident(e)) continue;
    if (e.next.end_ns <= now_ns) {
      e.suspended = true;  // missed: not predicted again before its next request
      if (now_ns - e.next.end_ns > e.next.end_ns - e.next.start_ns) ++e.late_wakes;
      misses_.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    if (!best || e.next.start_ns < best->start_ns) best = e.next;
  }
  return best;
}

std::uint64_t ArrivalPredictor::period_of(std::uint64_t key) const {
  const Entry& e = entries_[key % kEntries];
  return e.key == key && confident(e) ? e.period_ns : 0;
}

}  // namespace estimator::shm
