// SPDX-License-Identifier: Apache-2.0
// When the next request of a periodic client is due, so that a dispatch thread can sleep
// through the gap and be awake, spinning, a short window before it.
//
// Why: an exporter sends one request per interval (Kepler every 3 s, fast exporters every
// 1-10 ms). Spinning the whole gap costs a core; sleeping it costs every request a
// wake-up of the daemon, which makes the ring no faster than a socket. Most clients are
// metronomes, so the daemon learns each one's period from the times it takes their
// requests and wakes itself on a high-resolution timer just before the next one.
//
// A metronome's requests are not evenly spaced: each comes some time after its tick (the
// client's timer fires late, the client is scheduled late), tens of microseconds on an
// idle node and more on a busy one. Predicting from the last request alone carries that
// lateness into the next window twice. Instead each client keeps its last kHistory
// arrival times: the period is the slope over all of them, the ticks are where the
// earliest of them put them (a request never comes before its tick), and the window is
// placed, within its budget, where most of the recent requests came relative to the tick.
//
// Private to one dispatch thread: no atomics, no allocation (a fixed table of kEntries).
// A client is its (pid namespace, pid, slot) as the slot showed them when its request was
// taken. These are written by clients, so a peer can only mislead the prediction: a false
// entry costs at most one window (a few tens of microseconds of spinning, bounded by a
// fraction of the period it claims to have, see window()) per period it really keeps by
// sending requests, which it could make the daemon serve anyway.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <optional>

namespace estimator::shm {

class ArrivalPredictor {
 public:
  static constexpr std::uint32_t kEntries = 64;
  // Intervals shorter than this are back-to-back traffic, which the spin after an answer
  // already serves hot; longer than kMaxPeriodNs, the client counts as new.
  static constexpr std::uint64_t kMinPeriodNs = 200'000;
  static constexpr std::uint64_t kMaxPeriodNs = 60'000'000'000ULL;
  // Consistent intervals seen before the period is trusted.
  static constexpr std::uint32_t kConfidentAfter = 2;
  // Arrivals kept per client: the period's error shrinks with the span they cover.
  static constexpr std::uint32_t kHistory = 16;

  struct Window {
    std::uint64_t start_ns;  // wake up and start spinning (CLOCK_MONOTONIC)
    std::uint64_t end_ns;    // stop spinning: the client is late or stopped
  };

  static std::uint64_t client_key(std::uint32_t pidns, std::int32_t pid, std::uint32_t slot);

  // A request of `key` was published at now_ns.
  void arrived(std::uint64_t key, std::uint64_t now_ns);

  // The earliest window of a confident client that has not closed at now_ns (its start
  // may have passed). A window that closed without its client's request is a miss: that
  // client is not predicted again until its next request, so a client that stops costs
  // one window. When that request keeps the rhythm (the client was late, or the thread
  // woke too late for the window), it is trusted again at once; so it is after one
  // request out of the rhythm (the window moves to the next tick); after two in a row,
  // its rhythm is learned anew.
  //
  // A window the thread did not spin through is worse than a miss: at P = 1 ms a window
  // is 6 us and a VM's timers fire tens of us late, so the thread wakes after the window
  // (seen here as a miss more than a window's length after it closed), or the request
  // comes first and finds it asleep (seen by arrived(): it came after a window nobody
  // suspended). After kLateBeforeBackoff of those since a request last came in its
  // window, the client's next 2, 4, ... up to kMaxBackoff requests are not predicted:
  // each such window costs a timer wake-up and gains nothing, and unpredicted the client
  // is served as without prediction (P = 1 ms, 1 row, two runs: p50 14.4 and 16.1 us
  // against 12.8 and 14.3 without prediction; before the back-off 21.9 and 22.8 us, and
  // twice the CPU).
  static constexpr std::uint32_t kLateBeforeBackoff = 4;
  static constexpr std::uint32_t kMaxBackoff = 64;
  std::optional<Window> next_window(std::uint64_t now_ns);

  // The learned period of `key`, 0 when it has none it trusts.
  std::uint64_t period_of(std::uint64_t key) const;

  // Windows that closed without their client's request (whether the thread spun through
  // them or woke too late for them). Atomic only so that another thread may read it.
  std::uint64_t misses() const { return misses_.load(std::memory_order_relaxed); }

 private:
  struct Entry {
    std::uint64_t key = 0;
    // The last `count` arrivals in the rhythm, in order, and the number of the tick each
    // belongs to (consecutive, or one apart where the client skipped a tick).
    std::array<std::uint64_t, kHistory> arrivals{};
    std::array<std::uint32_t, kHistory> ticks{};
    std::uint32_t count = 0;        // 0: unused
    std::uint64_t period_ns = 0;    // 0: none yet
    std::uint64_t last_tick_ns = 0;  // the tick of the last arrival
    std::uint64_t stray_ns = 0;     // an arrival out of the rhythm just before, or 0
    Window next{};                // where its next request is expected, once confident
    bool suspended = false;       // its last window closed without it; until it comes
    std::uint32_t late_wakes = 0;  // its windows not spun through, since it came in one
    std::uint32_t backoff = 0;    // requests still to come before it is predicted again
  };
  // Starts the history of `e` over from the arrival `from`.
  static void restart(Entry& e, std::uint64_t key, std::uint64_t from);
  // Recomputes the period and the next window from the history.
  static void predict(Entry& e);
  // The defining interval and kConfidentAfter more in its rhythm, and not suspended.
  static bool confident(const Entry& e) { return e.count > kConfidentAfter + 1 && !e.suspended; }
  std::array<Entry, kEntries> entries_{};
  std::atomic<std::uint64_t> misses_{0};
};

}  // namespace estimator::shm
