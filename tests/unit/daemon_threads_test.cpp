// SPDX-License-Identifier: Apache-2.0
// The daemon with several dispatch threads (--threads): every thread sleeps with its own
// bit in the segment's sleep mask, so a client finds the doorbell to ring whichever
// thread woke last, and requests of several clients at once are all answered. Requests
// are raw bytes: the handler answers each with an error reply, which is an answer all
// the same (the slot protocol is what is tested here, not the models).
#include <gtest/gtest.h>
#include <unistd.h>

#include <thread>
#include <vector>

#include "models/embedded_defaults.h"
#include "models/registry.h"
#include "service/daemon.h"
#include "shm/client_ring.h"
#include "shm/reply_seal.h"
#include "shm/wait.h"
#include "tests/support/watchdog.h"

namespace estimator::service {
namespace {

constexpr std::uint64_t kSecond = 1'000'000'000ULL;

class DaemonThreadsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DaemonConfig config;
    config.segment.name = "estimator-test-threads-" + std::to_string(getpid());
    config.segment.slots = 8;
    config.segment.request_capacity = 4096;
    config.segment.response_capacity = 4096;
    config.threads = 2;
    config.spin_ns = 0;  // straight to sleep after each answer: the doorbell path every time
    estimator::testing::track_segment(config.segment.name);
    name_ = config.segment.name;
    auto d = Daemon::start(config, models::Registry::build(models::embedded_model_folders()));
    ASSERT_TRUE(d.ok()) << d.status().to_string();
    daemon_ = std::move(d).value();
  }
  void TearDown() override {
    daemon_.reset();
    estimator::testing::untrack_segment(name_);
  }

  // One client: its own attachment and ring, as a separate exporter would have.
  struct Client {
    explicit Client(const std::string& name)
        : segment(std::move(shm::ClientSegment::attach(name)).value()), ring(*segment) {}
    // One request, answered and released; false if it was not answered.
    bool call(std::uint8_t seed) {
      const std::uint64_t now = shm::monotonic_ns();
      auto claim = ring.claim(now + 5 * kSecond, now + 6 * kSecond, 0);
      if (!claim.ok()) return false;
      const std::vector<std::uint8_t> request(64, seed);
      const std::uint64_t nonce = shm::next_nonce();
      if (!ring.publish(claim.value(), request, nonce).ok() ||
          ring.wait_answer(claim.value(), now + 5 * kSecond, 0) != shm::WaitOutcome::kAnswered) {
        return false;
      }
      const bool ok = ring.receive(claim.value(), nonce, shm::digest(request, nonce)).ok();
      ring.release(claim.value());
      return ok;
    }
    std::unique_ptr<shm::ClientSegment> segment;
    shm::ClientRing ring;
  };

  // The count a thread adds to just after answering (so it may trail the last answer).
  void expect_requests(std::uint64_t n) const {
    while (daemon_->stats().requests.load() < n) std::this_thread::yield();
    EXPECT_EQ(daemon_->stats().requests.load(), n);
  }
  std::uint64_t sleeping() const {
    return daemon_->segment().view().header().server_sleeping.load();
  }

  const estimator::testing::Watchdog watchdog_{60};
  std::string name_;
  std::unique_ptr<Daemon> daemon_;
};

TEST_F(DaemonThreadsTest, ClientsInTurnWakeTheSleepingThreadsPromptly) {
  // Before each request both threads sleep; each request must be answered by a doorbell,
  // well before the threads' idle rescan (1 s), whichever thread woke for the last one.
  Client first(name_), second(name_);
  Client* clients[2] = {&first, &second};
  for (int k = 0; k < 8; ++k) {
    const std::uint64_t asleep_by = shm::monotonic_ns() + 10 * kSecond;
    while (sleeping() != 0b11 && shm::monotonic_ns() < asleep_by) std::this_thread::yield();
    ASSERT_EQ(sleeping(), 0b11U) << "each thread announces its own sleep";
    const std::uint64_t t0 = shm::monotonic_ns();
    ASSERT_TRUE(clients[k % 2]->call(static_cast<std::uint8_t>(k))) << "request " << k;
    EXPECT_LT(shm::monotonic_ns() - t0, kSecond / 2) << "request " << k;
  }
  expect_requests(8);
}

TEST_F(DaemonThreadsTest, ClientsAtOnceAreAllAnswered) {
  constexpr int kCalls = 300;
  std::vector<int> answered(3, 0);
  {
    std::vector<std::jthread> threads;
    for (std::size_t t = 0; t < answered.size(); ++t) {
      threads.emplace_back([&, t] {
        Client client(name_);
        for (int k = 0; k < kCalls; ++k) {
          answered[t] += client.call(static_cast<std::uint8_t>(k)) ? 1 : 0;
        }
      });
    }
  }
  for (const int n : answered) EXPECT_EQ(n, kCalls);
  expect_requests(answered.size() * kCalls);
}

}  // namespace
}  // namespace estimator::service
