// SPDX-License-Identifier: Apache-2.0
// Client::get_power (Kepler's 2022 GetPower) and SpawnedDaemon against the real estimatord:
// totals equal the per-component answer summed by estimator::total_power, measured power
// reaches the ratio model, and a spawned daemon starts, fails with reasons, stops, and
// dies with its parent even when the parent is SIGKILLed.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "clients/cpp/spawned_daemon.h"
#include "common/power_total.h"
#include "daemon_process.h"
#include "tests/support/child_process.h"

namespace estimator::testing {
namespace {

using namespace std::chrono_literals;
using client::SpawnedDaemon;
using client::SpawnOptions;

const std::string_view kBpf[] = {"bpf_cpu_time_ms", "bpf_page_cache_hit"};

// The per-row totals of a reply, as get_power must compute them.
std::vector<double> totals_of(const client::Reply& reply) {
  std::vector<std::string_view> names;
  for (std::uint32_t c = 0; c < reply.cols(); ++c) names.push_back(reply.component(c));
  std::vector<double> out;
  for (std::uint32_t r = 0; r < reply.rows(); ++r) {
    out.push_back(total_power<float>(names, reply.powers().subspan(std::size_t{r} * reply.cols(), reply.cols())));
  }
  return out;
}

class GetPower : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(daemon_.start()) << "estimatord did not start"; }
  std::string shm_ = unique_shm_name("get-power");
  DaemonProcess daemon_{shm_};
  client::Client client_{{.shm_name = shm_, .timeout = 2000ms}};
  Watchdog dog_{120};
};

TEST_F(GetPower, OneTotalPerRowFromTheSmallestErrorModel) {
  const std::vector<float> x = {1200, 3, 80, 0, 0, 0};
  auto got = client_.get_power("", kBpf, x);
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  ASSERT_EQ(got->size(), 3u);

  // The same request through estimate(): the smallest-error default is the rapl AbsPower
  // regressor, whose total is package + dram.
  auto reply = client_.estimate({.features = kBpf, .matrix = x.data(), .rows = 3, .cols = 2});
  ASSERT_TRUE(reply.ok()) << reply.status().to_string();
  EXPECT_EQ(reply->model().name, "SGDRegressorTrainer_0");
  EXPECT_EQ(reply->model().source, "rapl-sysfs");
  ASSERT_EQ(reply->component(0), "package");
  ASSERT_EQ(reply->component(3), "dram");
  const std::vector<double> want = totals_of(*reply);
  for (std::size_t r = 0; r < 3; ++r) {
    EXPECT_DOUBLE_EQ((*got)[r], want[r]) << r;
    EXPECT_NEAR((*got)[r], double{reply->power(static_cast<std::uint32_t>(r), 0)} + reply->power(static_cast<std::uint32_t>(r), 3), 1e-4);
  }
  // Kepler's published weights: package = 143.812 + 305.148 * t / 95877, dram = 18.616 + 8.434 * t / 95877.
  EXPECT_NEAR((*got)[2], 143.81206324506658 + 18.616285480502686, 1e-3);
  EXPECT_NEAR((*got)[0], 143.81206324506658 + 18.616285480502686 + (305.148172889668 + 8.434209551249596) * 1200 / 95877.0, 1e-3);
}

TEST_F(GetPower, AModelByNameAndTheErrorsOfBadInput) {
  const std::vector<float> x = {1200, 3};
  auto by_name = client_.get_power("SGDRegressorTrainer_0", kBpf, x);
  ASSERT_TRUE(by_name.ok()) << by_name.status().to_string();

  auto missing = client_.get_power("NoSuchModel", kBpf, x);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
  EXPECT_NE(missing.status().message().find("NoSuchModel"), std::string::npos);

  const std::vector<float> ragged = {1, 2, 3};
  auto r = client_.get_power("", kBpf, ragged);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_NE(r.status().message().find("3 values"), std::string::npos) << r.status().message();

  auto none = client_.get_power("", {}, x);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), Code::kInvalidArgument);

  const std::string_view renamed[] = {"bpf_cpu_time_us", "bpf_page_cache_hit"};
  auto old = client_.get_power("", renamed, x);
  ASSERT_FALSE(old.ok());
  EXPECT_NE(old.status().message().find("bpf_cpu_time_ms"), std::string::npos) << old.status().message();
}

TEST_F(GetPower, MeasuredPowerIsSplitByTheRatioModel) {
  // The ratio model's usage columns; bpf_cpu_time_ms stands in for the absent gpu usage.
  const std::string_view features[] = {"cpu_instructions", "cache_miss", "bpf_cpu_time_ms"};
  const std::vector<float> x = {300, 10, 5, 100, 30, 15};
  const float core[] = {20, 10};
  const float dram[] = {8};
  const float other[] = {2};
  auto got = client_.get_power("Ratio", features, x, core, dram, {}, other);
  ASSERT_TRUE(got.ok()) << got.status().to_string();

  const NodePower np[] = {{"core", core, {}}, {"dram", dram, {}}, {"other", other, {}}};
  auto reply = client_.estimate({.selector = {.name = "Ratio"}, .features = features, .matrix = x.data(),
                                 .rows = 2, .cols = 3, .node_power = np});
  ASSERT_TRUE(reply.ok()) << reply.status().to_string();
  const std::vector<double> want = totals_of(*reply);
  EXPECT_DOUBLE_EQ((*got)[0], want[0]);
  EXPECT_DOUBLE_EQ((*got)[1], want[1]);
  // The core column carries the measured core power split by instructions (3 : 1 of 30 W).
  std::uint32_t core_col = 0;
  while (core_col < reply->cols() && reply->component(core_col) != "core") ++core_col;
  ASSERT_LT(core_col, reply->cols());
  EXPECT_NEAR(reply->power(0, core_col), 22.5, 1e-4);
  EXPECT_NEAR(reply->power(1, core_col), 7.5, 1e-4);

  auto without = client_.get_power("Ratio", features, x);
  ASSERT_FALSE(without.ok());
  EXPECT_NE(without.status().message().find("node power"), std::string::npos) << without.status().message();
}

// ---- SpawnedDaemon ----------------------------------------------------------------------

bool shm_exists(const std::string& name) { return access(("/dev/shm/" + name).c_str(), F_OK) == 0; }

TEST(SpawnedDaemon, StartsOnAPrivateNameServesAndStopsCleanly) {
  Watchdog dog(60);
  auto d = SpawnedDaemon::start({.binary = ESTIMATORD_PATH});
  ASSERT_TRUE(d.ok()) << d.status().to_string();
  SpawnedDaemon& daemon = **d;
  EXPECT_EQ(daemon.binary(), ESTIMATORD_PATH);
  EXPECT_TRUE(shm_exists(daemon.shm_name()));
  client::Client c({.shm_name = daemon.shm_name()});
  auto p = c.get_power("", kBpf, std::vector<float>{10, 0});
  ASSERT_TRUE(p.ok()) << p.status().to_string();

  // A second one gets its own name.
  auto d2 = SpawnedDaemon::start({.binary = ESTIMATORD_PATH});
  ASSERT_TRUE(d2.ok()) << d2.status().to_string();
  EXPECT_NE((*d2)->shm_name(), daemon.shm_name());

  const std::string name = daemon.shm_name();
  auto status = daemon.stop();
  ASSERT_TRUE(status.ok()) << status.status().to_string();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << *status;
  EXPECT_FALSE(daemon.running());
  EXPECT_FALSE(shm_exists(name));
  EXPECT_TRUE((*d2)->running());
  const std::string name2 = (*d2)->shm_name();
  d2 = Status(Code::kInternal, "dropped");  // the destructor stops it
  EXPECT_FALSE(shm_exists(name2));
}

TEST(SpawnedDaemon, InheritsNoDescriptorOfTheExporter) {
  Watchdog dog(60);
  // A descriptor the exporter forgot to mark close-on-exec.
  const std::string leaked = ::testing::TempDir() + "/leak-probe-" + std::to_string(getpid());
  const int fd = open(leaked.c_str(), O_CREAT | O_WRONLY, 0600);  // no O_CLOEXEC on purpose
  ASSERT_GE(fd, 0);
  auto d = SpawnedDaemon::start({.binary = ESTIMATORD_PATH});
  close(fd);
  ASSERT_TRUE(d.ok()) << d.status().to_string();
  const std::string fds = "/proc/" + std::to_string((*d)->pid()) + "/fd";
  int seen = 0;
  for (const auto& entry : std::filesystem::directory_iterator(fds)) {
    std::error_code ec;
    const auto target = std::filesystem::read_symlink(entry.path(), ec);
    if (ec) continue;
    ++seen;
    EXPECT_NE(target.string(), leaked) << "descriptor " << entry.path().filename() << " leaked";
    if (entry.path().filename() == "0") {
      EXPECT_EQ(target.string(), "/dev/null") << "stdin";
    }
  }
  EXPECT_GE(seen, 3);
  std::filesystem::remove(leaked);
}

TEST(SpawnedDaemon, FindsTheBinaryThroughTheEnvironmentAndPath) {
  Watchdog dog(60);
  const std::string dir = std::filesystem::path(ESTIMATORD_PATH).parent_path();
  const char* old_path = std::getenv("PATH");
  const std::string saved_path = old_path ? old_path : "";

  setenv("ESTIMATORD", ESTIMATORD_PATH, 1);
  auto via_env = client::find_estimatord("");
  ASSERT_TRUE(via_env.ok()) << via_env.status().to_string();
  EXPECT_EQ(*via_env, ESTIMATORD_PATH);
  setenv("ESTIMATORD", "/nonexistent/estimatord", 1);
  auto bad_env = client::find_estimatord("");
  ASSERT_FALSE(bad_env.ok());
  EXPECT_NE(bad_env.status().message().find("$ESTIMATORD"), std::string::npos) << bad_env.status().message();

  unsetenv("ESTIMATORD");
  setenv("PATH", ("/nonexistent:" + dir).c_str(), 1);
  auto via_path = client::find_estimatord("");
  setenv("PATH", "/nonexistent", 1);
  auto nowhere = client::find_estimatord("");
  setenv("PATH", saved_path.c_str(), 1);
  ASSERT_TRUE(via_path.ok()) << via_path.status().to_string();
  EXPECT_EQ(*via_path, dir + "/estimatord");
  ASSERT_FALSE(nowhere.ok());  // this test binary does not sit next to estimatord
  EXPECT_EQ(nowhere.status().code(), Code::kNotFound);

  const std::string plain = ::testing::TempDir() + "/not-executable-" + std::to_string(getpid());
  std::ofstream(plain) << "not a program\n";
  ASSERT_EQ(chmod(plain.c_str(), 0600), 0);
  auto d = SpawnedDaemon::start({.binary = plain});
  std::filesystem::remove(plain);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), Code::kPermissionDenied) << d.status().to_string();
  EXPECT_NE(d.status().message().find("not an executable file"), std::string::npos);
}

TEST(SpawnedDaemon, ADaemonThatDiesOrHangsAtStartIsReported) {
  Watchdog dog(60);
  auto died = SpawnedDaemon::start(
      {.binary = ESTIMATORD_PATH, .extra_args = {"--model-dir", "/nonexistent"}, .log_level = "off"});
  ASSERT_FALSE(died.ok());
  EXPECT_EQ(died.status().code(), Code::kUnavailable);
  EXPECT_NE(died.status().message().find("exited with status 2 before answering"), std::string::npos)
      << died.status().message();

  // A "daemon" that never answers: the deadline, then it is stopped.
  const std::string script = ::testing::TempDir() + "/hanging-estimatord-" + std::to_string(getpid());
  {
    std::ofstream f(script);
    f << "#!/bin/sh\nexec sleep 30\n";
  }
  ASSERT_EQ(chmod(script.c_str(), 0700), 0);
  const auto t0 = std::chrono::steady_clock::now();
  auto hung = SpawnedDaemon::start({.binary = script, .start_timeout = 300ms, .stop_timeout = 1000ms});
  const auto took = std::chrono::steady_clock::now() - t0;
  std::filesystem::remove(script);
  ASSERT_FALSE(hung.ok());
  EXPECT_EQ(hung.status().code(), Code::kDeadlineExceeded);
  EXPECT_NE(hung.status().message().find("did not answer within 300 ms"), std::string::npos)
      << hung.status().message();
  EXPECT_LT(took, 3s);
}

// The exporter (a forked process) spawns the daemon from a short-lived thread, then is
// SIGKILLed: the daemon must outlive the thread but not the process. This test process is
// a child subreaper, so the orphaned daemon becomes its child and its exit can be awaited.
TEST(SpawnedDaemon, DiesWithItsParentProcessButNotWithTheSpawningThread) {
  Watchdog dog(60);
  ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t exporter = fork();
  ASSERT_GE(exporter, 0);
  if (exporter == 0) {
    close(fds[0]);
    std::unique_ptr<SpawnedDaemon> daemon;
    std::thread([&] {
      auto d = SpawnedDaemon::start({.binary = ESTIMATORD_PATH});
      if (d.ok()) daemon = std::move(d).value();
    }).join();
    if (!daemon) _exit(3);
    std::this_thread::sleep_for(300ms);  // the spawning thread is gone by now
    client::Client c({.shm_name = daemon->shm_name()});
    if (!c.ping(1s).ok()) _exit(4);
    const std::string msg = std::to_string(daemon->pid()) + " " + daemon->shm_name() + "\n";
    if (write(fds[1], msg.data(), msg.size()) != static_cast<ssize_t>(msg.size())) _exit(5);
    pause();
    _exit(0);
  }
  ChildProcess exporter_process = ChildProcess::adopt(exporter);
  close(fds[1]);
  char buf[256] = {};
  std::size_t got = 0;
  while (got < sizeof buf - 1) {
    const ssize_t n = read(fds[0], buf + got, sizeof buf - 1 - got);
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
    if (buf[got - 1] == '\n') break;
  }
  close(fds[0]);
  pid_t daemon_pid = 0;
  char name[200] = {};
  if (std::sscanf(buf, "%d %199s", &daemon_pid, name) != 2) {
    const int status = exporter_process.wait();
    prctl(PR_SET_CHILD_SUBREAPER, 0);
    FAIL() << "the exporter process failed to spawn or ping its daemon, wait status " << status;
  }
  const TrackedSegment segment(name);
  track_child(daemon_pid);  // our child once the exporter is gone (we are its subreaper)
  EXPECT_TRUE(shm_exists(name));

  ASSERT_EQ(kill(exporter, SIGKILL), 0);
  exporter_process.wait();

  // The daemon got SIGTERM from the kernel: it stops cleanly and removes its segment.
  int daemon_status = -1;
  const auto end = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < end) {
    if (waitpid(daemon_pid, &daemon_status, WNOHANG) == daemon_pid) break;
    daemon_status = -1;
    std::this_thread::sleep_for(10ms);
  }
  prctl(PR_SET_CHILD_SUBREAPER, 0);
  if (daemon_status == -1) {
    kill(daemon_pid, SIGKILL);
    waitpid(daemon_pid, nullptr, 0);
  }
  untrack_child(daemon_pid);
  ASSERT_NE(daemon_status, -1) << "the daemon outlived its parent";
  EXPECT_TRUE(WIFEXITED(daemon_status) && WEXITSTATUS(daemon_status) == 0) << daemon_status;
  EXPECT_FALSE(shm_exists(name));
}

}  // namespace
}  // namespace estimator::testing
