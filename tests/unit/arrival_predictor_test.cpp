// SPDX-License-Identifier: Apache-2.0
// shm/arrival_predictor.h with synthetic clocks: what it learns from a client's arrivals
// and which windows it asks a dispatch thread to be awake for. Whether a real thread is
// awake in time is measured by estimator-bench's periodic lanes.
#include "shm/arrival_predictor.h"

#include <gtest/gtest.h>

#include <cstdint>

namespace estimator::shm {
namespace {

constexpr std::uint64_t kSecond = 1'000'000'000ULL;

// Lateness of a client's request after its tick: a fixed, repeatable spread in [lo, hi).
std::uint64_t lateness(std::uint32_t k, std::uint64_t lo, std::uint64_t hi) {
  std::uint32_t x = k * 2654435761U;
  x ^= x >> 15;
  return lo + x % (hi - lo);
}

// Feeds `periods` requests of a client ticking every `period` with lateness in [lo, hi),
// asking for the next window before each one as a dispatch thread does; returns how many
// of the requests after the first 16 came inside the window.
struct Caught {
  std::uint32_t inside = 0;
  std::uint32_t counted = 0;
};
// The thread asks after answering (half a period before the tick here), is awake for the
// window, and asks again at its end when the request has not come.
Caught ticking(ArrivalPredictor& p, std::uint64_t key, std::uint64_t period, std::uint32_t periods,
            std::uint64_t lo, std::uint64_t hi) {
  Caught r;
  for (std::uint32_t k = 0; k < periods; ++k) {
    const std::uint64_t tick = kSecond + k * period;
    const std::uint64_t arrival = tick + lateness(k, lo, hi);
    const auto w = p.next_window(tick - period / 2);
    if (k >= 16) {
      ++r.counted;
      if (w && w->start_ns <= arrival && arrival < w->end_ns) ++r.inside;
    }
    if (w && w->end_ns <= arrival) (void)p.next_window(w->end_ns);  // spun through it
    p.arrived(key, arrival);
  }
  return r;
}

TEST(ArrivalPredictor, LearnsAPeriodAndWakesAShortBoundedWindowBeforeIt) {
  ArrivalPredictor p;
  const std::uint64_t key = ArrivalPredictor::client_key(7, 1234, 3);
  constexpr std::uint64_t kPeriod = 10'000'000;  // 10 ms
  std::uint64_t t = kSecond;
  p.arrived(key, t);
  EXPECT_FALSE(p.next_window(t).has_value()) << "one request is no rhythm";
  for (int i = 0; i < 3; ++i) p.arrived(key, t += kPeriod);
  EXPECT_EQ(p.period_of(key), kPeriod);
  const auto w = p.next_window(t + 1000);
  ASSERT_TRUE(w.has_value());
  EXPECT_LT(w->start_ns, t + kPeriod);
  EXPECT_GT(w->end_ns, t + kPeriod);
  // The whole window is a small share of the period: what the daemon spins per request.
  EXPECT_LE(w->end_ns - w->start_ns, kPeriod / 100);
  EXPECT_GE(w->end_ns - w->start_ns, 20'000U);
}

TEST(ArrivalPredictor, AClientThatStopsCostsOneWindow) {
  ArrivalPredictor p;
  const std::uint64_t key = ArrivalPredictor::client_key(7, 1234, 3);
  constexpr std::uint64_t kPeriod = 10'000'000;
  std::uint64_t t = kSecond;
  for (int i = 0; i < 4; ++i) p.arrived(key, t += kPeriod);
  const auto w = p.next_window(t);
  ASSERT_TRUE(w.has_value());
  EXPECT_FALSE(p.next_window(w->end_ns).has_value()) << "missed: no longer trusted";
  EXPECT_FALSE(p.next_window(w->end_ns + 5 * kPeriod).has_value());
  EXPECT_EQ(p.period_of(key), 0U);
  EXPECT_EQ(p.misses(), 1U);
  // Its rhythm seen again (a period, then two consistent intervals), it is trusted again.
  t += 20 * kPeriod;
  for (int i = 0; i < 4; ++i) p.arrived(key, t += kPeriod);
  EXPECT_TRUE(p.next_window(t).has_value());
}

TEST(ArrivalPredictor, ALateRequestThatKeepsTheRhythmIsTrustedAtOnce) {
  // The window passed (the client was late, or the daemon woke too late for it); the
  // request then comes within the rhythm: the next one is predicted again.
  ArrivalPredictor p;
  const std::uint64_t key = ArrivalPredictor::client_key(7, 99, 1);
  constexpr std::uint64_t kPeriod = 10'000'000;
  std::uint64_t t = kSecond;
  for (int i = 0; i < 4; ++i) p.arrived(key, t += kPeriod);
  const auto w = p.next_window(t);
  ASSERT_TRUE(w.has_value());
  EXPECT_FALSE(p.next_window(w->end_ns).has_value());
  p.arrived(key, t += kPeriod + 1'000'000);  // 1 ms late
  EXPECT_TRUE(p.next_window(t).has_value());
}

TEST(ArrivalPredictor, BackToBackAndIrregularClientsAreNotPredicted) {
  ArrivalPredictor p;
  const std::uint64_t fast = ArrivalPredictor::client_key(1, 10, 0);
  const std::uint64_t odd = ArrivalPredictor::client_key(1, 11, 1);
  std::uint64_t t = kSecond;
  for (int i = 0; i < 100; ++i) p.arrived(fast, t += 20'000);  // every 20 us: the spin's
  std::uint64_t u = kSecond;
  const std::uint64_t gaps[] = {3'000'000, 11'000'000, 5'000'000, 40'000'000, 2'000'000};
  for (const std::uint64_t g : gaps) p.arrived(odd, u += g);
  EXPECT_EQ(p.period_of(fast), 0U);
  EXPECT_EQ(p.period_of(odd), 0U);
  EXPECT_FALSE(p.next_window(std::max(t, u)).has_value());
}

TEST(ArrivalPredictor, TheWindowIsBoundedWhateverTheJitterOrPeriod) {
  // A client claiming a rhythm (a peer can send whatever it likes) buys at most a fixed
  // share of each period it really keeps, and at most 0.5 ms.
  ArrivalPredictor p;
  const std::uint64_t key = ArrivalPredictor::client_key(1, 2, 3);
  std::uint64_t t = kSecond;
  for (int i = 0; i < 50; ++i) p.arrived(key, t += (i % 2 == 0 ? 10'900'000 : 9'600'000));
  auto w = p.next_window(t);
  ASSERT_TRUE(w.has_value());
  EXPECT_LE(w->end_ns - w->start_ns, p.period_of(key) / 160 + 1);
  ArrivalPredictor q;
  t = kSecond;
  for (int i = 0; i < 5; ++i) q.arrived(key, t += 30 * kSecond);
  w = q.next_window(t);
  ASSERT_TRUE(w.has_value());
  EXPECT_LE(w->end_ns - w->start_ns, 500'000U);
}

TEST(ArrivalPredictor, TheTableIsFixedAndEveryClientHasItsOwnEntry) {
  ArrivalPredictor p;
  std::uint64_t t = kSecond;
  // Thousands of clients (pids) take turns: the table never grows; a collision only
  // costs the two clients their prediction.
  for (int round = 0; round < 4; ++round) {
    t += 10'000'000;
    for (std::int32_t pid = 1; pid < 5000; ++pid) {
      p.arrived(ArrivalPredictor::client_key(1, pid, 0), t + static_cast<std::uint64_t>(pid));
    }
  }
  // 64 clients x 16 arrivals: allocated once with the dispatch thread's ring.
  static_assert(sizeof(ArrivalPredictor) < 32 * 1024, "a fixed table, private to a thread");
  SUCCEED();
}

TEST(ArrivalPredictor, TheWindowFollowsTheTicksNotTheLastArrival) {
  // Requests come 20 to 60 us after their ticks (a client's timer on an idle node). Nearly
  // every one must fall in the window: it starts before the earliest lateness seen and
  // lasts the budget (62.5 us at 10 ms). Predicting "last arrival + period" carries each
  // lateness into the next window and misses about one in five.
  ArrivalPredictor p;
  const std::uint64_t key = ArrivalPredictor::client_key(3, 4242, 0);
  const Caught r = ticking(p, key, 10'000'000, 400, 20'000, 60'000);
  EXPECT_GE(r.inside * 100, r.counted * 98) << r.inside << " of " << r.counted;
  EXPECT_NEAR(static_cast<double>(p.period_of(key)), 10e6, 1000.0);
}

TEST(ArrivalPredictor, LatenessWiderThanTheBudgetIsCoveredWhereMostRequestsCome) {
  // Lateness spread over 200 us at 10 ms: the 62.5 us budget cannot cover it; the window
  // sits where most requests come and keeps its length.
  ArrivalPredictor p;
  const std::uint64_t key = ArrivalPredictor::client_key(3, 4243, 0);
  const Caught r = ticking(p, key, 10'000'000, 400, 10'000, 210'000);
  EXPECT_GE(r.inside * 100, r.counted * 20) << r.inside << " of " << r.counted;
  const auto w = p.next_window(0);
  ASSERT_TRUE(w.has_value());
  EXPECT_EQ(w->end_ns - w->start_ns, p.period_of(key) / 160);
}

TEST(ArrivalPredictor, OneRequestOutOfTheRhythmDoesNotCostIt) {
  // One request 3.8 ms late at 10 ms (the exporter was descheduled): its own window is
  // missed, but the next request, on its tick again, is expected; two in a row start a
  // rhythm anew.
  ArrivalPredictor p;
  const std::uint64_t key = ArrivalPredictor::client_key(3, 77, 1);
  constexpr std::uint64_t kPeriod = 10'000'000;
  std::uint64_t tick = kSecond;
  for (int i = 0; i < 10; ++i) p.arrived(key, (tick += kPeriod) + 30'000);
  p.arrived(key, (tick += kPeriod) + 3'800'000);
  tick += kPeriod;
  auto w = p.next_window(tick - 1'000'000);
  ASSERT_TRUE(w.has_value()) << "still trusted after one stray request";
  EXPECT_LE(w->start_ns, tick + 30'000);
  EXPECT_GT(w->end_ns, tick + 30'000);
  p.arrived(key, tick + 30'000);
  EXPECT_EQ(p.period_of(key), kPeriod);  // the stray request is not in it
  // Two strays in a row: a new rhythm, not yet trusted.
  p.arrived(key, (tick += kPeriod) + 4'000'000);
  p.arrived(key, (tick += kPeriod) + 8'000'000);
  EXPECT_EQ(p.period_of(key), 0U);
}

TEST(ArrivalPredictor, ASkippedTickKeepsTheRhythm) {
  ArrivalPredictor p;
  const std::uint64_t key = ArrivalPredictor::client_key(3, 78, 2);
  constexpr std::uint64_t kPeriod = 100'000'000;
  std::uint64_t tick = kSecond;
  for (int i = 0; i < 6; ++i) p.arrived(key, (tick += kPeriod) + 40'000);
  tick += kPeriod;  // no request on this tick
  p.arrived(key, (tick += kPeriod) + 40'000);
  EXPECT_EQ(p.period_of(key), kPeriod);
  const auto w = p.next_window(tick + 1'000'000);
  ASSERT_TRUE(w.has_value());
  EXPECT_LE(w->start_ns, tick + kPeriod + 40'000);
  EXPECT_GT(w->end_ns, tick + kPeriod + 40'000);
}

// At P = 1 ms a window is 6 us, and a VM's timers fire tens of us late: the thread wakes
// after every window has closed. Each such window is a timer wake-up for nothing, so a
// client missed again and again is predicted ever more rarely, and served as without
// prediction in between; once a window catches it, it is predicted every period again.
TEST(ArrivalPredictor, WindowsMissedAgainAndAgainBackOff) {
  ArrivalPredictor p;
  const std::uint64_t key = ArrivalPredictor::client_key(5, 4321, 6);
  constexpr std::uint64_t kPeriod = 1'000'000;
  constexpr std::uint64_t kLate = 50'000;  // every request 50 us after its tick
  constexpr std::uint32_t kPeriods = 1000;
  std::uint64_t tick = kSecond;
  std::uint32_t unpredicted = 0;  // periods in which the daemon spins as without prediction
  for (std::uint32_t k = 0; k < kPeriods; ++k) {
    tick += kPeriod;
    // The thread looks 30 us after the request came: its window has closed.
    (void)p.next_window(tick + kLate + 30'000);
    if (k >= 16 && p.period_of(key) == 0) ++unpredicted;
    p.arrived(key, tick + kLate);
  }
  // Without the back-off, every period after the first few is a miss.
  EXPECT_LT(p.misses(), kPeriods / 16) << "a missed window every period";
  EXPECT_GT(p.misses(), ArrivalPredictor::kLateBeforeBackoff);
  EXPECT_GT(unpredicted, kPeriods * 3 / 4);
  // The thread now wakes in time: within one back-off, the windows catch every request.
  std::uint32_t caught = 0;
  for (std::uint32_t k = 0; k < ArrivalPredictor::kMaxBackoff + 100; ++k) {
    tick += kPeriod;
    const auto w = p.next_window(tick + kLate - 1);
    if (k >= ArrivalPredictor::kMaxBackoff + 1 && w && w->start_ns <= tick + kLate &&
        tick + kLate < w->end_ns) {
      ++caught;
    }
    p.arrived(key, tick + kLate);
  }
  EXPECT_EQ(caught, 99U);
  EXPECT_EQ(p.period_of(key), kPeriod);
}

// The same when the thread never looks at the windows at all (asleep on a timer that
// fires after the request came, or busy with other clients): a request that comes after
// its window closed unwatched counts as a window slept through.
TEST(ArrivalPredictor, WindowsSleptThroughBackOffToo) {
  ArrivalPredictor p;
  const std::uint64_t key = ArrivalPredictor::client_key(5, 4322, 7);
  constexpr std::uint64_t kPeriod = 1'000'000;
  std::uint64_t tick = kSecond;
  std::uint32_t unpredicted = 0;
  for (std::uint32_t k = 0; k < 1000; ++k) {
    tick += kPeriod;
    if (k >= 16 && p.period_of(key) == 0) ++unpredicted;
    // 50 to 230 us late: a 6 us window holds at most one lateness in seven.
    p.arrived(key, tick + 50'000 + (k % 7) * 30'000);
  }
  EXPECT_GT(unpredicted, 500U) << "of 984 periods";
}

}  // namespace
}  // namespace estimator::shm
