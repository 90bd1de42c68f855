// SPDX-License-Identifier: Apache-2.0
// The daemon and its clients as separate processes, as in production: many clients at
// once with distinct matrices (every answer must be the answer to its own request), no
// daemon at all, and a daemon that dies or restarts under a client that keeps calling.
#include <gtest/gtest.h>

#include <fcntl.h>

#include <atomic>
#include <filesystem>
#include <cmath>
#include <random>

#include "daemon_process.h"
#include "reference_model.h"
#include "shm/segment.h"

namespace estimator::testing {
namespace {

using namespace std::chrono_literals;

const auto& kFeatures = kReferenceFeatures;

client::Request request(const std::vector<float>& m, std::uint32_t rows) {
  return {.selector = {.output_type = "AbsPower", .source = "rapl-sysfs"},
          .features = kFeatures,
          .matrix = m.data(),
          .rows = rows,
          .cols = 3};
}

// One client process: `n` requests of 1..32 rows with values unique to (client, i).
// Exit code 0 when every reply matched its own request.
int client_process(const std::string& shm, int client_id, int n) {
  ReferenceModel ref;
  client::Client c({.shm_name = shm});
  std::mt19937 rng(static_cast<unsigned>(client_id));
  int bad = 0;
  for (int i = 0; i < n; ++i) {
    const std::uint32_t rows = 1 + rng() % 32;
    std::vector<float> m(rows * 3);
    for (std::uint32_t r = 0; r < rows; ++r) {
      // cpu time encodes (client, request, row): a misrouted reply cannot match.
      m[3 * r] = static_cast<float>(client_id * 100000 + (i % 1000) * 64 + r);
      m[3 * r + 1] = static_cast<float>(rng() % 100);
      m[3 * r + 2] = static_cast<float>(rng());
    }
    auto reply = c.estimate(request(m, rows), 5s);
    if (!reply.ok()) {
      std::fprintf(stderr, "client %d request %d: %s\n", client_id, i, reply.status().to_string().c_str());
      ++bad;
      continue;
    }
    const std::vector<float> want = ref.predict(m, rows);
    if (reply->rows() != rows || reply->powers().size() != want.size()) {
      ++bad;
      continue;
    }
    for (std::size_t k = 0; k < want.size(); ++k) {
      if (std::fabs(reply->powers()[k] - want[k]) > 1e-6f * std::fabs(want[k])) {
        std::fprintf(stderr, "client %d request %d: value %zu is %g, want %g\n", client_id, i, k,
                     static_cast<double>(reply->powers()[k]), static_cast<double>(want[k]));
        ++bad;
        break;
      }
    }
  }
  return bad == 0 ? 0 : 1;
}

TEST(MultiProcess, FourClientsTenThousandRequestsEachGetTheirOwnAnswers) {
  Watchdog dog(300);
  const std::string shm = unique_shm_name("four");
  DaemonProcess daemon(shm);
  ASSERT_TRUE(daemon.start());
  std::vector<ChildProcess> kids;
  for (int k = 0; k < 4; ++k) {
    const pid_t pid = fork();
    if (pid == 0) _exit(client_process(shm, k + 1, 10000));
    kids.push_back(ChildProcess::adopt(pid));
  }
  for (ChildProcess& kid : kids) {
    const pid_t pid = kid.pid();
    const int status = kid.wait();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "client " << pid << " saw a wrong or failed reply";
  }
  const int status = daemon.stop(SIGTERM);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "daemon did not stop cleanly";
  EXPECT_NE(access(("/dev/shm/" + shm).c_str(), F_OK), 0) << "segment removed at shutdown";
}

TEST(MultiProcess, NoDaemonMeansUnavailableWithinTheDeadline) {
  Watchdog dog(30);
  client::Client c({.shm_name = unique_shm_name("nobody")});
  const std::vector<float> m{1, 2, 3};
  const auto t0 = std::chrono::steady_clock::now();
  auto reply = c.estimate(request(m, 1), 200ms);
  const auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), Code::kUnavailable);
  EXPECT_NE(reply.status().message().find("estimator unavailable"), std::string::npos);
  EXPECT_LT(took, 200ms);
}

// A client that keeps calling across a daemon's death and a new daemon's start must see
// only errors saying the estimator is unavailable (never a hang, never a wrong answer),
// then answers again from the new epoch without being told.
void survive_restart(int kill_signal) {
  Watchdog dog(120);
  const std::string shm = unique_shm_name("restart" + std::to_string(kill_signal));
  DaemonProcess first(shm);
  ASSERT_TRUE(first.start());
  ReferenceModel ref;
  client::Client c({.shm_name = shm});
  const std::vector<float> m{500, 1, 2};
  const std::vector<float> want = ref.predict(m, 1);

  std::atomic<bool> stop{false};
  std::atomic<int> ok_before{0}, ok_after{0}, unavailable{0}, other{0};
  std::atomic<bool> restarted{false};
  std::thread caller([&] {
    while (!stop) {
      const auto t0 = std::chrono::steady_clock::now();
      auto r = c.estimate(request(m, 1), 300ms);
      if (std::chrono::steady_clock::now() - t0 > 1s) ++other;  // a hang is a failure
      if (r.ok()) {
        EXPECT_EQ(std::vector<float>(r->powers().begin(), r->powers().end()), want);
        (restarted ? ok_after : ok_before)++;
      } else if (r.status().code() == Code::kUnavailable ||
                 r.status().code() == Code::kDeadlineExceeded) {
        ++unavailable;
      } else {
        ADD_FAILURE() << r.status().to_string();
        ++other;
      }
      std::this_thread::sleep_for(1ms);
    }
  });
  while (ok_before < 50) std::this_thread::sleep_for(1ms);
  first.stop(kill_signal);
  std::this_thread::sleep_for(200ms);  // calls in the gap see "unavailable"
  const int gap_errors = unavailable.load();
  DaemonProcess second(shm);
  ASSERT_TRUE(second.start());
  restarted = true;
  for (int i = 0; i < 5000 && ok_after < 50; ++i) std::this_thread::sleep_for(1ms);
  stop = true;
  caller.join();
  EXPECT_GE(ok_after.load(), 50) << "the client did not resume on the new daemon";
  EXPECT_GT(gap_errors, 0) << "calls while no daemon runs must fail";
  EXPECT_EQ(other.load(), 0);
}

TEST(MultiProcess, ClientSurvivesCleanDaemonRestart) { survive_restart(SIGTERM); }
TEST(MultiProcess, ClientSurvivesDaemonKill) { survive_restart(SIGKILL); }

TEST(MultiProcess, SecondDaemonOnTheSameSegmentRefusesToStart) {
  Watchdog dog(30);
  const std::string shm = unique_shm_name("second");
  DaemonProcess first(shm);
  ASSERT_TRUE(first.start());
  DaemonProcess second(shm);
  ASSERT_TRUE(second.spawn());
  const int status = second.wait_exit(std::chrono::seconds(10));
  EXPECT_TRUE(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) != 0)
      << "a second daemon must exit with an error";
  client::Client c({.shm_name = shm});
  EXPECT_TRUE(c.ping(1s).ok()) << "the first daemon still serves";
}

// A daemon whose log pipe was closed (a log collector restarted) keeps serving and still
// stops cleanly: writing its log must not kill it with SIGPIPE and leave its segment.
TEST(MultiProcess, ClosedLogPipeDoesNotKillTheDaemon) {
  Watchdog dog(30);
  const std::string shm = unique_shm_name("pipe");
  int fds[2];
  ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
  const TrackedSegment segment(shm);
  ChildProcess daemon;
  ASSERT_TRUE(daemon.start({ESTIMATORD_PATH, "--shm-name", shm, "--slots", "4", "--slot-bytes", "65536",
                            "--log-level", "debug"},
                           {.out_fd = fds[1], .err_fd = fds[1]}));
  close(fds[1]);
  close(fds[0]);  // nobody reads the log any more

  client::Client c({.shm_name = shm});
  bool up = false;
  for (int i = 0; i < 200 && !up; ++i) {
    up = c.ping(100ms).ok();
    if (!up) std::this_thread::sleep_for(10ms);
  }
  ASSERT_TRUE(up) << "the daemon did not come up (killed by its first log line?)";
  const std::string_view features[] = {"bpf_cpu_time_ms", "bpf_page_cache_hit"};
  const float row[] = {10, 1};
  EXPECT_TRUE(c.estimate({.features = features, .matrix = row, .rows = 1, .cols = 2}).ok());
  const int status = daemon.stop(SIGTERM);  // logs "signal received" into the closed pipe
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "wait status " << status;
  EXPECT_FALSE(std::filesystem::exists("/dev/shm/" + shm)) << "the segment was left behind";
}

}  // namespace
}  // namespace estimator::testing
