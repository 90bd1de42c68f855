// SPDX-License-Identifier: Apache-2.0
// estimatord and signals (service/signals.h), as separate processes: every stop signal and
// every crash signal removes the segment and its lock; SIGHUP reloads the model directory
// and the daemon keeps serving; logs go to stderr, never stdout.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/resource.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "clients/cpp/spawned_daemon.h"
#include "daemon_process.h"
#include "service/signals.h"
#include "tests/support/child_process.h"
#include "tests/support/files.h"

namespace estimator::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

bool segment_files_exist(const std::string& name) {
  return fs::exists("/dev/shm/" + name) || fs::exists("/dev/shm/" + name + ".lock");
}

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// Polls `done` every 20 ms; generous deadlines keep these tests steady on a loaded machine.
template <class F>
bool eventually(F done, std::chrono::milliseconds timeout = 20s) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

TEST(Signals, StopSignalsRemoveTheSegmentAndLock) {
  Watchdog dog(120);
  for (int sig : {SIGTERM, SIGINT, SIGQUIT, SIGUSR1}) {
    const std::string shm = unique_shm_name("stop-" + std::to_string(sig));
    DaemonProcess daemon(shm);
    ASSERT_TRUE(daemon.start()) << sig;
    ASSERT_TRUE(fs::exists("/dev/shm/" + shm));
    ASSERT_TRUE(fs::exists("/dev/shm/" + shm + ".lock"));
    const int status = daemon.stop(sig);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << sigabbrev_np(sig) << ": " << status;
    EXPECT_FALSE(segment_files_exist(shm)) << sigabbrev_np(sig);
  }
}

// The crash handler in one process: a crash of a forked child (models/isolated_call's HDF5
// parser inherits the handlers) leaves the files; the owner's own crash removes them.
TEST(Signals, CrashCleanupRemovesTheFilesOnlyForItsOwnProcess) {
  Watchdog dog(60);
  const rlimit no_core{0, 0};
  ASSERT_EQ(setrlimit(RLIMIT_CORE, &no_core), 0);
  const std::string name = unique_shm_name("crash-cleanup");
  std::ofstream("/dev/shm/" + name) << "segment";
  std::ofstream("/dev/shm/" + name + ".lock") << "";
  const TrackedSegment segment(name);
  const pid_t owner = fork();
  ASSERT_GE(owner, 0);
  if (owner == 0) {
    const service::CrashCleanup cleanup(name);
    const pid_t child = fork();
    if (child == 0) raise(SIGSEGV);
    int status = 0;
    waitpid(child, &status, 0);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGSEGV) _exit(3);
    if (!fs::exists("/dev/shm/" + name) || !fs::exists("/dev/shm/" + name + ".lock")) _exit(4);
    abort();
  }
  int status = 0;
  waitpid(owner, &status, 0);
  EXPECT_FALSE(WIFEXITED(status)) << "3: the child did not crash, 4: its crash removed the files; "
                                  << WEXITSTATUS(status);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT) << status;
  EXPECT_FALSE(segment_files_exist(name));
}

// estimatord with stdout and stderr in files; stopped, and its segment removed, however the
// test ends.
class LoggedDaemon {
 public:
  LoggedDaemon(const std::string& shm, const fs::path& dir, const std::vector<std::string>& extra)
      : segment_(shm), out_(dir / "stdout"), err_(dir / "stderr") {
    // No fetching (whatever the environment says): nothing but the test changes the models.
    std::vector<std::string> args = {ESTIMATORD_PATH, "--shm-name", shm, "--log-level", "info",
                                     "--no-fetch"};
    args.insert(args.end(), extra.begin(), extra.end());
    const int out = open(out_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    const int err = open(err_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out >= 0 && err >= 0) process_.start(args, {.out_fd = out, .err_fd = err});
    if (out >= 0) close(out);
    if (err >= 0) close(err);
  }
  ~LoggedDaemon() { stop(SIGTERM); }

  bool alive() { return process_.alive(); }
  int stop(int sig) { return process_.stop(sig); }
  pid_t pid() const { return process_.pid(); }
  std::string out() const { return read_file(out_); }
  std::string err() const { return read_file(err_); }

 private:
  TrackedSegment segment_;
  fs::path out_, err_;
  ChildProcess process_;  // destroyed first: the daemon stops before its segment is removed
};

TEST(Signals, CrashSignalsRemoveTheSegmentAndLockAndStillEndTheProcess) {
  Watchdog dog(120);
  const rlimit no_core{0, 0};  // inherited by the daemon: no core file from this test
  ASSERT_EQ(setrlimit(RLIMIT_CORE, &no_core), 0);
  for (int sig : {SIGABRT, SIGSEGV}) {
    const std::string shm = unique_shm_name("crash-" + std::to_string(sig));
    const fs::path dir = fs::temp_directory_path() / shm;
    fs::create_directories(dir);
    LoggedDaemon daemon(shm, dir, {});
    // "ready" is logged once the crash handlers are in place (a ping may answer before).
    ASSERT_TRUE(eventually([&] { return daemon.err().find("ready: ") != std::string::npos; }))
        << daemon.err();
    ASSERT_TRUE(fs::exists("/dev/shm/" + shm));
    const int status = daemon.stop(sig);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == sig) << sigabbrev_np(sig) << ": " << status;
    EXPECT_FALSE(segment_files_exist(shm)) << sigabbrev_np(sig);
    fs::remove_all(dir);
  }
}

TEST(Signals, SighupReloadsTheModelDirectoryAndTheDaemonKeepsServing) {
  Watchdog dog(120);
  const std::string shm = unique_shm_name("sighup");
  const fs::path dir = fs::temp_directory_path() / shm;
  const fs::path models = dir / "models";
  const fs::path folder = models / "rapl-sysfs" / "AbsPower" / "BPFOnly";
  fs::remove_all(dir);
  fs::create_directories(folder);
  LoggedDaemon daemon(shm, dir, {"--model-dir", models.string()});
  ASSERT_GT(daemon.pid(), 0);
  client::Client c({.shm_name = shm});
  ASSERT_TRUE(eventually([&] { return c.ping(100ms).ok(); }));

  // An unchanged directory: only the signal can cause this second reload.
  const std::string reloaded = "model directory " + models.string() + " reloaded";
  ASSERT_EQ(count(daemon.err(), reloaded), 1u) << daemon.err();
  kill(daemon.pid(), SIGHUP);
  EXPECT_TRUE(eventually([&] { return count(daemon.err(), reloaded) >= 2; })) << daemon.err();
  EXPECT_NE(daemon.err().find("SIGHUP: reloading the model directory " + models.string()),
            std::string::npos) << daemon.err();

  // A model added, then SIGHUP: it serves (written aside and renamed in: never half a file).
  fs::copy_file(std::string(ESTIMATOR_FIXTURES_DIR) + "/zip/weight_model.zip", folder / ".part");
  fs::rename(folder / ".part", folder / "SGDRegressorTrainer_1.zip");
  kill(daemon.pid(), SIGHUP);
  const std::string_view features[] = {"bpf_cpu_time_ms"};
  const float x = 4;
  Status last(Code::kUnavailable, "not asked");
  EXPECT_TRUE(eventually([&] {
    auto r = c.estimate({.selector = {.name = "SGDRegressorTrainer_1"}, .features = features,
                         .matrix = &x, .rows = 1, .cols = 1});
    last = r.status();
    return r.ok() && r->power(0, 0) == 16.0f;  // 10 + 3 * x / 2
  })) << last.to_string();
  EXPECT_TRUE(daemon.alive());
  EXPECT_TRUE(c.ping(1s).ok());

  const int status = daemon.stop(SIGTERM);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_FALSE(segment_files_exist(shm));
  // Logs go to stderr; stdout stays empty.
  EXPECT_EQ(daemon.out(), "");
  EXPECT_NE(daemon.err().find("ready: segment '" + shm + "'"), std::string::npos) << daemon.err();
  fs::remove_all(dir);
}

TEST(Signals, SighupWithoutAModelDirectoryKeepsServing) {
  Watchdog dog(60);
  const std::string shm = unique_shm_name("sighup-nodir");
  const fs::path dir = fs::temp_directory_path() / shm;
  fs::create_directories(dir);
  LoggedDaemon daemon(shm, dir, {});
  client::Client c({.shm_name = shm});
  ASSERT_TRUE(eventually([&] { return c.ping(100ms).ok(); }));
  kill(daemon.pid(), SIGHUP);
  EXPECT_TRUE(eventually([&] { return daemon.err().find("SIGHUP: no --model-dir") != std::string::npos; }))
      << daemon.err();
  EXPECT_TRUE(daemon.alive());
  EXPECT_TRUE(c.ping(1s).ok());
  const int status = daemon.stop(SIGTERM);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_FALSE(segment_files_exist(shm));
  fs::remove_all(dir);
}

// A daemon spawned by a client logs to the client's stderr, never into its stdout.
TEST(Signals, SpawnedDaemonLogsToStderrOnly) {
  Watchdog dog(60);
  const fs::path dir = fs::temp_directory_path() / unique_shm_name("spawned-logs");
  fs::create_directories(dir);
  std::fflush(stdout);
  std::fflush(stderr);
  const int saved_out = dup(1), saved_err = dup(2);
  const int out = open((dir / "stdout").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  const int err = open((dir / "stderr").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  ASSERT_GE(out, 0);
  ASSERT_GE(err, 0);
  dup2(out, 1);
  dup2(err, 2);
  Status result = Status::Ok();
  {
    auto d = client::SpawnedDaemon::start({.binary = ESTIMATORD_PATH, .log_level = "info"});
    result = d.status();
  }  // stopped here
  dup2(saved_out, 1);
  dup2(saved_err, 2);
  close(saved_out);
  close(saved_err);
  close(out);
  close(err);
  ASSERT_TRUE(result.ok()) << result.to_string();
  EXPECT_EQ(read_file(dir / "stdout"), "");
  const std::string logged = read_file(dir / "stderr");
  EXPECT_NE(logged.find("ready: segment"), std::string::npos) << logged;
  EXPECT_NE(logged.find("stopped after"), std::string::npos) << logged;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace estimator::testing
