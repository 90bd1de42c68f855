// SPDX-License-Identifier: Apache-2.0
// A Client shared by many threads: every thread's calls succeed at once, and once a
// thread's encoder and its Reply are sized, its calls allocate nothing (counted by this
// binary's operator new, tests/support/allocation_counter.h, per thread).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <thread>
#include <vector>

#include "clients/cpp/estimator_client.h"
#include "daemon_process.h"
#include "tests/support/allocation_counter.h"  // this binary's operator new

namespace estimator::testing {
namespace {

using namespace std::chrono_literals;

const std::string_view kBpf[] = {"bpf_cpu_time_ms", "bpf_page_cache_hit"};

class SharedClient : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(daemon_.start()) << "estimatord did not start"; }
  std::string shm_ = unique_shm_name("shared-client");
  DaemonProcess daemon_{shm_};
  client::Client client_{{.shm_name = shm_, .timeout = 5000ms}};
  Watchdog dog_{120};
};

// Calls of one thread after warm-up; returns the allocations they made, or -1 on a
// failed call.
long calls_allocations(client::Client& c, int calls) {
  std::vector<float> x(64 * 2);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 17);
  const client::Request req{.features = kBpf, .matrix = x.data(), .rows = 64, .cols = 2};
  client::Reply reply;
  for (int i = 0; i < 3; ++i) {
    if (!c.estimate(req, reply, 5s).ok()) return -1;
  }
  const ThreadAllocationWindow window;
  bool ok = true;
  for (int i = 0; i < calls && ok; ++i) {
    x[0] = static_cast<float>(i);  // a new matrix each call, same shape
    ok = c.estimate(req, reply, 5s).ok() && reply.rows() == 64 && reply.cols() > 0;
  }
  return ok ? window.count() : -1;
}

TEST_F(SharedClient, CallsAllocateNothingAfterWarmUp) {
  EXPECT_EQ(calls_allocations(client_, 500), 0);
}

TEST_F(SharedClient, FourThreadsShareOneClientWithoutAllocating) {
  std::vector<long> got(4, -2);
  {
    std::vector<std::jthread> threads;
    for (std::size_t t = 0; t < got.size(); ++t) {
      threads.emplace_back([&, t] { got[t] = calls_allocations(client_, 300); });
    }
  }
  for (const long g : got) EXPECT_EQ(g, 0);
}

TEST_F(SharedClient, ReusedReplyIsReplacedByEachAnswer) {
  client::Reply reply;
  std::vector<float> a = {1200, 3, 80, 0};
  std::vector<float> b = {10, 1};
  ASSERT_TRUE(client_.estimate({.features = kBpf, .matrix = a.data(), .rows = 2, .cols = 2}, reply, 5s).ok());
  EXPECT_EQ(reply.rows(), 2u);
  const float first = reply.power(0, 0);
  ASSERT_TRUE(client_.estimate({.features = kBpf, .matrix = b.data(), .rows = 1, .cols = 2}, reply, 5s).ok());
  EXPECT_EQ(reply.rows(), 1u);
  EXPECT_NE(reply.power(0, 0), first);
  // A failed call leaves the reply empty, not holding the previous answer.
  const std::string_view unknown[] = {"no_such_feature_at_all", "nor_this"};
  const Status s = client_.estimate({.selector = {.name = "no-such-model"}, .features = unknown,
                                     .matrix = b.data(), .rows = 1, .cols = 2},
                                    reply, 5s);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(reply.rows(), 0u);
}

// The daemon restarts under the threads' feet: the shared client re-attaches (a new
// attachment, the old one freed once no call holds it) and the calls go on.
TEST_F(SharedClient, ReattachesWhileSharedAcrossARestart) {
  std::atomic<bool> stop{false};
  std::atomic<long> ok_calls{0};
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < 3; ++t) {
      threads.emplace_back([&] {
        std::vector<float> x = {1, 2};
        client::Reply reply;
        while (!stop.load()) {
          if (client_.estimate({.features = kBpf, .matrix = x.data(), .rows = 1, .cols = 2}, reply, 200ms).ok()) {
            ++ok_calls;
          }
        }
      });
    }
    std::this_thread::sleep_for(300ms);
    daemon_.stop(SIGTERM);
    ASSERT_TRUE(daemon_.start());
    const long before = ok_calls.load();
    for (int i = 0; i < 100 && ok_calls.load() < before + 10; ++i) std::this_thread::sleep_for(50ms);
    stop = true;
    EXPECT_GE(ok_calls.load(), before + 10) << "no calls succeeded after the restart";
  }
}

}  // namespace
}  // namespace estimator::testing
