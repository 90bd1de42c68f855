// The slot protocol, one transition at a time, on a real segment in this process: the
// client side (ClientRing), the daemon side (ServerRing) and the reaper (SlotReaper).
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>

#include "schema/schema_version.h"
#include "shm/client_ring.h"
#include "shm/server_ring.h"
#include "shm/wait.h"

namespace estimator::shm {
namespace {

constexpr std::uint64_t kSecond = 1'000'000'000ULL;

std::string unique_name(const char* what) {
  return "estimator-test-" + std::string(what) + "-" + std::to_string(getpid());
}

class SlotRingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SegmentConfig cfg;
    cfg.name = unique_name("ring");
    cfg.slots = 4;
    cfg.request_capacity = 4096;
    cfg.response_capacity = 4096;
    auto s = ServerSegment::create(cfg);
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    server = std::move(s).value();
    server->mark_serving();
    auto c = ClientSegment::attach(cfg.name);
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    client_seg = std::move(c).value();
    sut = std::make_unique<ClientRing>(*client_seg);
  }

  SlotWord word(std::uint32_t i) const {
    return SlotWord::unpack(server->view().slot(i).control->word.load());
  }
  std::uint64_t later(std::uint64_t ns) const { return monotonic_ns() + ns; }

  std::unique_ptr<ServerSegment> server;
  std::unique_ptr<ClientSegment> client_seg;
  std::unique_ptr<ClientRing> sut;
};

TEST_F(SlotRingTest, FullCycleFreeClaimedReadyBusyAnsweredFree) {
  auto slot = sut->claim(later(kSecond), later(2 * kSecond), 0);
  ASSERT_TRUE(slot.ok());
  const std::uint32_t i = slot.value();
  EXPECT_EQ(word(i).state, SlotState::kClaimed);
  EXPECT_EQ(word(i).pid, getpid());
  EXPECT_EQ(word(i).generation, 1);

  ASSERT_TRUE(sut->publish(i, 64, 128).ok());
  EXPECT_EQ(word(i).state, SlotState::kReady);
  EXPECT_NE(server->view().header().ready_mask[0].load() & (1ULL << i), 0u);

  ServerRing ring(server->view());
  auto taken = ring.take();
  ASSERT_TRUE(taken.has_value());
  EXPECT_EQ(taken->slot, i);
  EXPECT_EQ(taken->offset, 64u);
  EXPECT_EQ(taken->len, 128u);
  EXPECT_EQ(word(i).state, SlotState::kBusy);
  EXPECT_FALSE(ring.take().has_value()) << "a slot is taken once";

  ring.answer(i, 8, 16);
  EXPECT_EQ(word(i).state, SlotState::kAnswered);
  EXPECT_EQ(sut->wait_answer(i, later(kSecond), 0), WaitOutcome::kAnswered);
  EXPECT_EQ(server->view().slot(i).control->response_len, 16u);

  sut->release(i);
  EXPECT_EQ(word(i).state, SlotState::kFree);
  EXPECT_EQ(word(i).pid, 0);

  auto again = sut->claim(later(kSecond), later(2 * kSecond), i);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again.value(), i);
  EXPECT_EQ(word(i).generation, 2) << "every claim bumps the generation (no ABA)";
}

TEST_F(SlotRingTest, AbandonFromEachClientStateFreesOrMarks) {
  ServerRing ring(server->view());
  // Claimed -> Free
  auto a = sut->claim(later(kSecond), later(2 * kSecond), 0).value();
  sut->abandon(a);
  EXPECT_EQ(word(a).state, SlotState::kFree);
  // Ready -> Free (withdrawn before the daemon took it; the stale mask bit is ignored)
  a = sut->claim(later(kSecond), later(2 * kSecond), 0).value();
  ASSERT_TRUE(sut->publish(a, 0, 8).ok());
  sut->abandon(a);
  EXPECT_EQ(word(a).state, SlotState::kFree);
  EXPECT_FALSE(ring.take().has_value());
  // Busy -> Abandoned, then the daemon's answer frees it
  a = sut->claim(later(kSecond), later(2 * kSecond), 0).value();
  ASSERT_TRUE(sut->publish(a, 0, 8).ok());
  ASSERT_TRUE(ring.take().has_value());
  sut->abandon(a);
  EXPECT_EQ(word(a).state, SlotState::kAbandoned);
  ring.answer(a, 0, 8);
  EXPECT_EQ(word(a).state, SlotState::kFree);
}

TEST_F(SlotRingTest, WaitWithoutAnswerEndsAtDeadline) {
  auto a = sut->claim(later(kSecond), later(2 * kSecond), 0).value();
  ASSERT_TRUE(sut->publish(a, 0, 8).ok());
  const std::uint64_t t0 = monotonic_ns();
  EXPECT_EQ(sut->wait_answer(a, t0 + 30'000'000, 10'000), WaitOutcome::kDeadline);
  const std::uint64_t waited = monotonic_ns() - t0;
  EXPECT_GE(waited, 30'000'000u);
  EXPECT_LT(waited, 2 * kSecond);
}

TEST_F(SlotRingTest, StoppingDaemonIsReportedAsGone) {
  auto a = sut->claim(later(kSecond), later(2 * kSecond), 0).value();
  ASSERT_TRUE(sut->publish(a, 0, 8).ok());
  server->view().header().state.store(static_cast<std::uint32_t>(ServerState::kStopping));
  EXPECT_EQ(sut->wait_answer(a, later(5 * kSecond), 0), WaitOutcome::kServerGone);
  EXPECT_FALSE(sut->server_alive());
}

TEST_F(SlotRingTest, SleepingDaemonIsWokenByTheDoorbell) {
  ServerRing ring(server->view());
  std::atomic<bool> woke{false};
  std::thread daemon([&] { woke = ring.wait_for_work(0, 5 * kSecond); });
  // Wait until the daemon announces sleep, so the doorbell path is the one exercised.
  while (server->view().header().server_sleeping.load() == 0) std::this_thread::yield();
  const std::uint64_t t0 = monotonic_ns();
  auto a = sut->claim(later(kSecond), later(2 * kSecond), 0).value();
  ASSERT_TRUE(sut->publish(a, 0, 8).ok());
  daemon.join();
  EXPECT_TRUE(woke);
  EXPECT_LT(monotonic_ns() - t0, kSecond);
  EXPECT_TRUE(ring.take().has_value());
}

TEST_F(SlotRingTest, ForgedDoorbellCountIsDrainedNotSpunOn) {
  // A peer writes a huge count: the daemon would otherwise wake, find nothing, spin and
  // wake again, billions of times. One wake-up with nothing behind it drains the count.
  ServerRing ring(server->view());
  server->view().header().doorbell.count.store(1'000'000'000U);
  EXPECT_FALSE(ring.wait_for_work(kSecond, 5 * kSecond));  // woken, nothing to do
  EXPECT_EQ(server->view().header().doorbell.count.load(), 0U);
  // Back to sleeping: the next wait lasts until its timeout, with no spin before it.
  const std::uint64_t t0 = monotonic_ns();
  EXPECT_FALSE(ring.wait_for_work(kSecond, 50'000'000));
  EXPECT_GE(monotonic_ns() - t0, 50'000'000U);
  EXPECT_LT(monotonic_ns() - t0, kSecond);  // no 1 s spin first: the daemon stayed idle
}

TEST_F(SlotRingTest, SleepingClientIsWokenByTheAnswer) {
  ServerRing ring(server->view());
  auto a = sut->claim(later(kSecond), later(2 * kSecond), 0).value();
  ASSERT_TRUE(sut->publish(a, 0, 8).ok());
  std::thread daemon([&] {
    while (server->view().slot(a).control->client_sleeping.load() == 0) std::this_thread::yield();
    ASSERT_TRUE(ring.take().has_value());
    ring.answer(a, 0, 8);
  });
  EXPECT_EQ(sut->wait_answer(a, later(5 * kSecond), 0), WaitOutcome::kAnswered);
  daemon.join();
}

TEST_F(SlotRingTest, FullRingReportsExhaustionAtDeadline) {
  for (int k = 0; k < 4; ++k) ASSERT_TRUE(sut->claim(later(kSecond), later(2 * kSecond), 0).ok());
  auto none = sut->claim(later(20'000'000), later(kSecond), 0);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), Code::kResourceExhausted);
}

TEST_F(SlotRingTest, ScanRecoversAPublishedSlotWhoseMaskBitWasLost) {
  ServerRing ring(server->view());
  auto a = sut->claim(later(kSecond), later(2 * kSecond), 0).value();
  ASSERT_TRUE(sut->publish(a, 0, 8).ok());
  server->view().header().ready_mask[0].store(0);  // a hostile peer cleared it
  EXPECT_FALSE(ring.take().has_value());
  ring.scan();
  auto t = ring.take();
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->slot, a);
}

TEST_F(SlotRingTest, ReaperFreesSlotsOfDeadOwnersOnly) {
  SlotReaper reaper(server->view());
  // A child claims a slot and exits without releasing it.
  const pid_t child = fork();
  if (child == 0) {
    ClientRing ring(*client_seg);
    auto s = ring.claim(later(kSecond), later(100 * kSecond), 0);
    _exit(s.ok() ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_EQ(WEXITSTATUS(status), 0);
  auto mine = sut->claim(later(kSecond), later(100 * kSecond), 1).value();
  EXPECT_EQ(reaper.sweep(monotonic_ns()), 1u) << "the dead child's slot, not ours";
  EXPECT_EQ(word(mine).state, SlotState::kClaimed);
  for (std::uint32_t i = 0; i < 4; ++i) {
    if (i != mine) {
      EXPECT_EQ(word(i).state, SlotState::kFree);
    }
  }
}

TEST_F(SlotRingTest, ReaperUsesTheLeaseForOwnersInAnotherPidNamespace) {
  SlotReaper reaper(server->view());
  auto a = sut->claim(later(kSecond), later(kSecond), 0).value();
  SlotControl* c = server->view().slot(a).control;
  c->owner_pidns = 0xFFFFFFF0u;  // not ours: its pid says nothing here
  EXPECT_EQ(reaper.sweep(monotonic_ns()), 0u) << "lease not expired";
  EXPECT_EQ(reaper.sweep(monotonic_ns() + 2 * kSecond), 1u) << "lease expired";
  EXPECT_EQ(word(a).state, SlotState::kFree);
}

TEST_F(SlotRingTest, ReaperFreesAClaimThatNeverGotItsLease) {
  SlotReaper reaper(server->view());
  auto a = sut->claim(later(kSecond), later(kSecond), 0).value();
  SlotControl* c = server->view().slot(a).control;
  c->owner_pidns = 0xFFFFFFF0u;
  c->lease_deadline_ns.store(0);  // owner died between the claim CAS and the lease
  EXPECT_EQ(reaper.sweep(monotonic_ns()), 0u) << "first sighting may be a claim in progress";
  EXPECT_EQ(reaper.sweep(monotonic_ns()), 1u);
}

TEST(Segment, SecondDaemonOnTheSameNameIsRefused) {
  SegmentConfig cfg;
  cfg.name = unique_name("twice");
  cfg.slots = 2;
  cfg.request_capacity = cfg.response_capacity = 4096;
  auto first = ServerSegment::create(cfg);
  ASSERT_TRUE(first.ok());
  auto second = ServerSegment::create(cfg);
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find("another estimator daemon"), std::string::npos)
      << second.status().message();
}

TEST(Segment, StaleSegmentOfADeadDaemonIsReplacedWithANewerEpoch) {
  SegmentConfig cfg;
  cfg.name = unique_name("stale");
  cfg.slots = 2;
  cfg.request_capacity = cfg.response_capacity = 4096;
  std::uint64_t old_epoch = 0;
  {
    auto first = ServerSegment::create(cfg);
    ASSERT_TRUE(first.ok());
    old_epoch = first.value()->epoch();
  }
  // Leave a segment behind as a SIGKILLed daemon would (no lock held, object present).
  {
    const int junk = shm_open(cfg.name.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    ASSERT_GE(junk, 0);
    ASSERT_EQ(ftruncate(junk, 4096), 0);
    close(junk);
  }
  auto next = ServerSegment::create(cfg);
  ASSERT_TRUE(next.ok()) << next.status().to_string();
  EXPECT_GT(next.value()->epoch(), old_epoch);
}

TEST(Segment, CreatedWithMode0600) {
  SegmentConfig cfg;
  cfg.name = unique_name("mode");
  cfg.slots = 1;
  cfg.request_capacity = cfg.response_capacity = 4096;
  const mode_t old = umask(0);
  auto seg = ServerSegment::create(cfg);
  umask(old);
  ASSERT_TRUE(seg.ok());
  struct stat st {};
  ASSERT_EQ(stat(("/dev/shm/" + cfg.name).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST(Segment, TooLargeForDevShmFailsAtCreationWithSizes) {
  SegmentConfig cfg;
  cfg.name = unique_name("huge");
  cfg.slots = kMaxSlots;
  cfg.request_capacity = 1U << 30;
  cfg.response_capacity = 1U << 30;  // 1 TiB in all: more than any /dev/shm here
  auto seg = ServerSegment::create(cfg);
  ASSERT_FALSE(seg.ok());
  EXPECT_EQ(seg.status().code(), Code::kResourceExhausted);
  EXPECT_NE(seg.status().message().find("needs"), std::string::npos) << seg.status().message();
  EXPECT_NE(seg.status().message().find("free"), std::string::npos);
}

TEST(Segment, AttachChecksSchemaStateAndPresence) {
  const std::string name = unique_name("attach");
  auto none = ClientSegment::attach(name);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), Code::kUnavailable);
  EXPECT_NE(none.status().message().find("estimator unavailable"), std::string::npos);

  SegmentConfig cfg;
  cfg.name = name;
  cfg.slots = 1;
  cfg.request_capacity = cfg.response_capacity = 4096;
  auto seg = ServerSegment::create(cfg);
  ASSERT_TRUE(seg.ok());
  auto starting = ClientSegment::attach(name);
  EXPECT_EQ(starting.status().code(), Code::kUnavailable) << "not serving yet";
  seg.value()->mark_serving();
  EXPECT_TRUE(ClientSegment::attach(name).ok());
  seg.value()->view().header().schema_hash ^= 1;
  auto other = ClientSegment::attach(name);
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.status().code(), Code::kIncompatible);
  EXPECT_NE(other.status().message().find("schema"), std::string::npos);
  seg.value()->view().header().schema_hash ^= 1;
  seg.value()->view().header().slot_count = 100000;
  EXPECT_EQ(ClientSegment::attach(name).status().code(), Code::kIncompatible);
}

}  // namespace
}  // namespace estimator::shm
