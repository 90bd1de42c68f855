// SPDX-License-Identifier: Apache-2.0
// A test cut short leaves nothing behind (tests/support/watchdog.h). Each case runs a
// stand-in test in a forked child: it starts the real estimatord on a segment of its own,
// then hangs. Cut short by its Watchdog, or killed outright as ctest kills a test past its
// timeout, it must leave no estimatord and no /dev/shm segment. Its own binary: the forked
// child must start the reaper itself, which a parent that tracked something first would
// have started for it.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <thread>

#include "daemon_process.h"

namespace estimator::testing {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

// A process is gone when /proc no longer lists it or lists it as a zombie (reaped by
// whoever inherits it, which need not be this test).
bool gone(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;
  const std::size_t close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z';
}

bool eventually(const std::function<bool()>& done, std::chrono::milliseconds within) {
  const auto end = std::chrono::steady_clock::now() + within;
  while (!done()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

struct StandIn {
  pid_t test = -1;    // the forked stand-in test
  pid_t daemon = -1;  // the estimatord it started
  pid_t client = -1;  // the client it forked, when asked to
};

// Forks the stand-in: it starts estimatord on `shm`, arms a Watchdog of `seconds` (0: none),
// forks a client of its own when `fork_client` (running the test's code, as the
// multi-process tests' clients do: no exec), reports the pids and hangs.
StandIn start_stand_in(const std::string& shm, unsigned seconds, bool fork_client = false) {
  int fds[2];
  if (pipe(fds) != 0) return {};
  const pid_t child = fork();
  if (child == 0) {
    close(fds[0]);
    DaemonProcess daemon(shm);
    if (!daemon.start()) _exit(2);
    ChildProcess client;
    if (fork_client) {
      const pid_t forked = fork();
      if (forked == 0) {
        for (;;) pause();
      }
      client = ChildProcess::adopt(forked);
    }
    const pid_t pids[2] = {daemon.pid(), client.pid()};
    std::optional<Watchdog> dog;
    if (seconds > 0) dog.emplace(seconds);
    if (write(fds[1], pids, sizeof pids) != sizeof pids) _exit(3);
    for (;;) pause();  // the hang; only the watchdog or a kill ends it
  }
  close(fds[1]);
  StandIn s;
  s.test = child;
  pid_t pids[2] = {-1, -1};
  if (read(fds[0], pids, sizeof pids) == sizeof pids) {
    s.daemon = pids[0];
    s.client = pids[1];
  }
  close(fds[0]);
  return s;
}

// The stand-in runs its daemon, whose segment exists.
void expect_running(const StandIn& s, const std::string& shm) {
  ASSERT_GT(s.test, 0);
  ASSERT_GT(s.daemon, 0) << "the stand-in could not start estimatord";
  ASSERT_TRUE(fs::exists("/dev/shm/" + shm));
}

TEST(Watchdog, AnExpiredTestLeavesNoDaemonAndNoSegment) {
  Watchdog dog(120);
  const std::string shm = unique_shm_name("watchdog-alarm");
  const StandIn s = start_stand_in(shm, 2);
  ASSERT_NO_FATAL_FAILURE(expect_running(s, shm));
  int status = 0;
  ASSERT_EQ(waitpid(s.test, &status, 0), s.test);
  ASSERT_TRUE(WIFSIGNALED(status)) << "status " << status;
  EXPECT_EQ(WTERMSIG(status), SIGALRM) << "the watchdog still ends the test, as a failure";
  // The handler killed, reaped and unlinked before the stand-in ended: nothing to wait for.
  EXPECT_TRUE(gone(s.daemon)) << "estimatord " << s.daemon << " outlived its test";
  EXPECT_FALSE(fs::exists("/dev/shm/" + shm)) << "segment " << shm << " left behind";
  EXPECT_FALSE(fs::exists("/dev/shm/" + shm + ".lock")) << "its lock file left behind";
}

TEST(Watchdog, AKilledTestLeavesNoDaemonAndNoSegment) {
  Watchdog dog(120);
  const std::string shm = unique_shm_name("watchdog-kill");
  const StandIn s = start_stand_in(shm, 0);
  ASSERT_NO_FATAL_FAILURE(expect_running(s, shm));
  kill(s.test, SIGKILL);  // as ctest ends a test past its timeout: no handler runs
  int status = 0;
  ASSERT_EQ(waitpid(s.test, &status, 0), s.test);
  // The reaper sees the pipe close and cleans up after it.
  EXPECT_TRUE(eventually([&] { return gone(s.daemon); }, 10s))
      << "estimatord " << s.daemon << " outlived its test";
  EXPECT_TRUE(eventually([&] { return !fs::exists("/dev/shm/" + shm); }, 10s))
      << "segment " << shm << " left behind";
  EXPECT_TRUE(eventually([&] { return !fs::exists("/dev/shm/" + shm + ".lock"); }, 10s))
      << "its lock file left behind";
}

// A forked client of the killed test must not keep the reaper waiting: it inherited the
// reaper's pipe, and while it held it open the reaper never saw the test end.
TEST(Watchdog, AKilledTestWithAForkedClientLeavesNothing) {
  Watchdog dog(120);
  const std::string shm = unique_shm_name("watchdog-fork");
  const StandIn s = start_stand_in(shm, 0, true);
  ASSERT_NO_FATAL_FAILURE(expect_running(s, shm));
  ASSERT_GT(s.client, 0);
  kill(s.test, SIGKILL);
  int status = 0;
  ASSERT_EQ(waitpid(s.test, &status, 0), s.test);
  EXPECT_TRUE(eventually([&] { return gone(s.client); }, 10s)) << "client " << s.client << " outlived its test";
  EXPECT_TRUE(eventually([&] { return gone(s.daemon); }, 10s))
      << "estimatord " << s.daemon << " outlived its test";
  EXPECT_TRUE(eventually([&] { return !fs::exists("/dev/shm/" + shm); }, 10s))
      << "segment " << shm << " left behind";
}

TEST(Watchdog, ATestThatEndsNormallyLeavesNothingEither) {
  Watchdog dog(60);
  const std::string shm = unique_shm_name("watchdog-normal");
  pid_t daemon_pid = -1;
  {
    DaemonProcess daemon(shm);
    ASSERT_TRUE(daemon.start());
    daemon_pid = daemon.pid();
    daemon.stop(SIGKILL);  // no chance to remove its own segment
    EXPECT_TRUE(fs::exists("/dev/shm/" + shm));
  }
  EXPECT_TRUE(gone(daemon_pid));
  EXPECT_FALSE(fs::exists("/dev/shm/" + shm)) << "the fixture removes what the daemon left";
  EXPECT_FALSE(fs::exists("/dev/shm/" + shm + ".lock"));
}

}  // namespace
}  // namespace estimator::testing
