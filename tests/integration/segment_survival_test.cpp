// SPDX-License-Identifier: Apache-2.0
// The shared-memory segment's survival and identity, with the real estimatord as a child
// process (docs/reliability.md, "The segment itself"):
//   - truncated under an in-flight call: daemon and client live, the call fails with
//     `unavailable`, the next one succeeds on a new segment;
//   - deleted or replaced: a new segment (a new epoch) within a housekeeping tick;
//   - a squatter (uid 65534) who created the name first: root's client refuses its
//     segment naming the owner, root's daemon replaces it; a non-root daemon refuses a
//     name it does not own; a FIFO under the segment or lock name is refused at once;
//   - the sidecar pod: daemon and client in different pid namespaces sharing /dev/shm.
// The other-user and pid-namespace parts need root (CI runs as root) and skip otherwise.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <sys/stat.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <thread>

#include "daemon_process.h"
#include "models/embedded_defaults.h"
#include "models/registry.h"
#include "shm/segment.h"
#include "tests/support/child_process.h"
#include "tests/support/stopped_process.h"

namespace estimator::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr uid_t kNobody = 65534;
const std::string_view kFeatures[] = {"bpf_cpu_time_ms", "bpf_page_cache_hit", "cpu_cycles"};
constexpr client::Selector kSelector{.output_type = "AbsPower", .source = "rapl-sysfs"};

std::string shm_path(const std::string& name) { return "/dev/shm/" + name; }

ino_t inode_of(const std::string& path) {
  struct stat st {};
  return lstat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

// Polls `done` every 5 ms until it holds or `limit` passes; returns the time it took
// (limit + 1 s when it never held).
std::chrono::milliseconds time_until(const std::function<bool()>& done, std::chrono::milliseconds limit) {
  const auto t0 = Clock::now();
  while (Clock::now() - t0 < limit) {
    if (done()) return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0);
    std::this_thread::sleep_for(5ms);
  }
  return limit + 1s;
}

// The epoch of the segment under `name` once its daemon serves there (0 before: a segment
// being laid out already shows its epoch, but calls fail until the daemon marks it serving).
std::uint64_t epoch_of(const std::string& name) {
  auto seg = shm::ClientSegment::attach(name);
  if (!seg.ok()) return 0;
  const auto state = seg.value()->view().header().state.load(std::memory_order_acquire);
  return state == static_cast<std::uint32_t>(shm::ServerState::kServing) ? seg.value()->epoch() : 0;
}

// Waits until a request sits published in a slot of the segment `name` (a call is in
// flight, not merely started by a thread that may not have run yet); false after `limit`.
bool request_published(const std::string& name, std::chrono::milliseconds limit) {
  auto seg = shm::ClientSegment::attach(name);
  if (!seg.ok()) return false;
  const shm::SegmentView& view = seg.value()->view();
  const auto published = [&] {
    for (std::uint32_t i = 0; i < view.slot_count(); ++i) {
      if (shm::SlotWord::unpack(view.slot(i).control->word.load()).state == shm::SlotState::kReady) return true;
    }
    return false;
  };
  return time_until(published, limit) < limit;
}

// The expected answer: the same embedded model evaluated here.
std::vector<float> expected_power(const std::vector<float>& x, std::uint32_t rows) {
  const auto registry = models::Registry::build(models::embedded_model_folders());
  auto m = registry->select({.output_type = "AbsPower", .source = "rapl-sysfs"}, kFeatures, false);
  EXPECT_TRUE(m.ok());
  const models::Model* model = m.value();
  auto plan = std::move(model->plan(kFeatures)).value();
  const std::size_t k = model->info().components.size();
  std::vector<float> out(rows * k);
  const models::ModelInput in{models::ConstMatrixView(x.data(), rows, 3), {}, {}};
  EXPECT_TRUE(model->predict(*plan, in, models::MatrixView(out.data(), rows, k)).ok());
  return out;
}

Result<client::Reply> estimate(client::Client& c, const std::vector<float>& x,
                               std::chrono::milliseconds timeout) {
  return c.estimate({.selector = kSelector, .features = kFeatures, .matrix = x.data(),
                     .rows = static_cast<std::uint32_t>(x.size() / 3), .cols = 3},
                    timeout);
}

// Runs argv as `uid` (group = uid) with stdout and stderr (the daemon's log) into
// `err_fd`.
ChildProcess spawn_as(uid_t uid, const std::vector<std::string>& args, int err_fd = -1) {
  const pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    if (err_fd >= 0) {
      dup2(err_fd, 1);
      dup2(err_fd, 2);
    }
    if (setgroups(0, nullptr) != 0 || setgid(uid) != 0 || setuid(uid) != 0) _exit(125);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return ChildProcess::adopt(pid);
}

// The first 16 KiB of the file open as `fd`.
std::string read_all(int fd) {
  std::string out(16384, '\0');
  out.resize(static_cast<std::size_t>(std::max<ssize_t>(0, pread(fd, out.data(), out.size(), 0))));
  return out;
}

// ---------------------------------------------------------------------------------------
// Truncation, deletion, replacement.

TEST(SegmentSurvival, TruncatedUnderAnInFlightCallBothLiveTheCallFailsUnavailableTheNextSucceeds) {
  Watchdog dog(60);
  const std::string shm = unique_shm_name("truncate");
  DaemonProcess daemon(shm);
  ASSERT_TRUE(daemon.start());
  client::Client c({.shm_name = shm});
  const std::vector<float> x = {1200.f, 3.f, 5e8f, 80.f, 0.f, 1e7f};
  ASSERT_TRUE(estimate(c, x, 2s).ok());
  const std::uint64_t epoch0 = epoch_of(shm);
  const ino_t inode0 = inode_of(shm_path(shm));

  // The daemon cannot answer while stopped: the call is in flight when the file shrinks.
  ASSERT_TRUE(stop_process(daemon.pid()));
  Status in_flight;
  Clock::time_point returned;
  std::thread caller([&] {
    in_flight = estimate(c, x, 30s).status();
    returned = Clock::now();
  });
  const bool in_flight_when_truncated = request_published(shm, 20s);
  const auto truncated = Clock::now();
  ASSERT_EQ(truncate(shm_path(shm).c_str(), 0), 0);
  caller.join();
  ASSERT_TRUE(in_flight_when_truncated) << "the call never published its request";
  kill(daemon.pid(), SIGCONT);
  EXPECT_EQ(in_flight.code(), Code::kUnavailable) << in_flight.to_string();
  EXPECT_LT(returned - truncated, 1500ms) << "noticed at the next liveness check, not at the 30 s deadline";

  // The daemon lives and lays out a new segment; the next call is answered there.
  const auto recreated = time_until([&] { return inode_of(shm_path(shm)) != inode0 && epoch_of(shm) > epoch0; }, 3s);
  EXPECT_LT(recreated, 1500ms);
  ASSERT_TRUE(daemon.alive()) << "the daemon survived the truncation";
  auto next = estimate(c, x, 5s);
  ASSERT_TRUE(next.ok()) << next.status().to_string();
  const std::vector<float> want = expected_power(x, 2);
  ASSERT_EQ(next->powers().size(), want.size());
  for (std::size_t i = 0; i < want.size(); ++i) EXPECT_FLOAT_EQ(next->powers()[i], want[i]);

  // Again while idle (no fault in the daemon: its housekeeping sees the size).
  const ino_t inode1 = inode_of(shm_path(shm));
  const std::uint64_t epoch1 = epoch_of(shm);
  ASSERT_EQ(truncate(shm_path(shm).c_str(), 4096), 0);
  EXPECT_LT(time_until([&] { return inode_of(shm_path(shm)) != inode1 && epoch_of(shm) > epoch1; }, 3s), 1500ms);
  const Status first = estimate(c, x, 5s).status();
  const Status second = first.ok() ? first : estimate(c, x, 5s).status();
  EXPECT_TRUE(second.ok()) << "re-attached: " << first.to_string() << " then " << second.to_string();
  EXPECT_TRUE(daemon.alive());
  EXPECT_EQ(daemon.stop(SIGTERM), 0) << "clean exit after the recreations";
}

TEST(SegmentSurvival, DeletedOrReplacedSegmentIsRecreatedWithANewEpochWithinAHousekeepingTick) {
  Watchdog dog(60);
  const std::string shm = unique_shm_name("replace");
  DaemonProcess daemon(shm);
  ASSERT_TRUE(daemon.start());
  client::Client c({.shm_name = shm});
  ASSERT_TRUE(c.ping(2s).ok());
  const std::uint64_t epoch0 = epoch_of(shm);

  ASSERT_EQ(unlink(shm_path(shm).c_str()), 0);
  // One tick is 250 ms; the bound leaves room for a loaded machine.
  EXPECT_LT(time_until([&] { return epoch_of(shm) > epoch0; }, 3s), 1000ms);
  ASSERT_TRUE(c.ping(2s).ok());

  const std::uint64_t epoch1 = epoch_of(shm);
  ASSERT_EQ(unlink(shm_path(shm).c_str()), 0);
  const int fd = open(shm_path(shm).c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, 1 << 20), 0);  // someone else's file under the name
  const ino_t foreign = inode_of(shm_path(shm));
  close(fd);
  EXPECT_LT(time_until([&] { return inode_of(shm_path(shm)) != foreign && epoch_of(shm) > epoch1; }, 3s),
            1000ms);
  EXPECT_TRUE(c.ping(2s).ok());
  EXPECT_TRUE(daemon.alive());
}

// ---------------------------------------------------------------------------------------
// Identity: who made the segment.

TEST(SegmentIdentity, ASquattersSegmentIsRefusedByRootsClientAndReplacedByRootsDaemon) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to run the squatter as uid 65534";
  Watchdog dog(60);
  const std::string shm = unique_shm_name("squat");
  const TrackedSegment segment(shm);
  // The squatter: a real estimatord as nobody, on the name first, mode 0666.
  ChildProcess squatter = spawn_as(kNobody, {ESTIMATORD_PATH, "--shm-name", shm, "--shm-mode", "0666",
                                             "--log-level", "warn", "--slots", "4", "--no-fetch"});
  ASSERT_GT(squatter.pid(), 0);
  client::Client as_nobody({.shm_name = shm, .daemon_uid = kNobody, .shm_mode = 0666});
  ASSERT_LT(time_until([&] { return as_nobody.ping(200ms).ok(); }, 10s), 10s)
      << "the squatter serves (a client told to trust uid 65534 and 0666 is answered)";

  client::Client root_client({.shm_name = shm});
  const Status refused = root_client.ping(1s);
  EXPECT_EQ(refused.code(), Code::kPermissionDenied) << refused.to_string();
  EXPECT_NE(refused.message().find("belongs to uid 65534"), std::string::npos) << refused.to_string();
  // The same client told the daemon is uid 65534 still refuses the mode.
  client::Client trusting({.shm_name = shm, .daemon_uid = kNobody});
  EXPECT_NE(trusting.ping(1s).message().find("mode 0666"), std::string::npos);

  // Root's daemon starts anyway: it replaces what another user put under its names.
  DaemonProcess daemon(shm);
  ASSERT_TRUE(daemon.start()) << "root's daemon is not kept from starting";
  struct stat st {};
  ASSERT_EQ(stat(shm_path(shm).c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_TRUE(root_client.ping(2s).ok());
}

TEST(SegmentIdentity, ANonRootDaemonRefusesANameAnotherUserOwnsNamingTheOwner) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to run the daemon as uid 65534";
  Watchdog dog(60);
  const std::string shm = unique_shm_name("foreign");
  const TrackedSegment segment(shm);
  const int fd = open(shm_path(shm).c_str(), O_RDWR | O_CREAT | O_EXCL, 0644);
  ASSERT_GE(fd, 0);
  close(fd);
  char path[] = "/tmp/segment-survival-XXXXXX";
  const int err = mkstemp(path);
  ASSERT_GE(err, 0);
  unlink(path);
  const int status = spawn_as(kNobody, {ESTIMATORD_PATH, "--shm-name", shm, "--no-fetch"}, err).wait();
  const std::string out = read_all(err);
  close(err);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0 && WEXITSTATUS(status) != 125) << out;
  EXPECT_NE(out.find("of uid 0"), std::string::npos) << out;
  EXPECT_NE(out.find("not replacing another user's file"), std::string::npos) << out;
  EXPECT_EQ(inode_of(shm_path(shm)) != 0, true) << "root's file is still there";
}

TEST(SegmentIdentity, AFifoUnderTheSegmentOrLockNameIsRefusedWithinASecond) {
  Watchdog dog(60);
  for (const char* suffix : {"", ".lock"}) {
    const std::string shm = unique_shm_name(std::string("fifo") + (*suffix ? "lock" : "seg"));
    const std::string fifo = shm_path(shm) + suffix;
    const TrackedSegment segment(shm);
    ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
    char path[] = "/tmp/segment-survival-XXXXXX";
    const int err = mkstemp(path);
    ASSERT_GE(err, 0);
    unlink(path);
    const auto t0 = Clock::now();
    const int status = spawn_as(geteuid(), {ESTIMATORD_PATH, "--shm-name", shm, "--no-fetch"}, err).wait();
    const auto took = Clock::now() - t0;
    const std::string out = read_all(err);
    close(err);
    EXPECT_LT(took, 1s) << out;
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << out;
    EXPECT_NE(out.find(fifo + " is a FIFO"), std::string::npos) << out;
  }
}

// ---------------------------------------------------------------------------------------
// The sidecar pod: the daemon in its own pid namespace, the clients in ours.

// estimatord as pid 1 of a new pid namespace (unshare(CLONE_NEWPID) in a forked child,
// whose next child enters the namespace). pid() is its pid in our namespace.
class NamespacedDaemon {
 public:
  explicit NamespacedDaemon(std::string shm) : shm_(std::move(shm)), segment_(shm_) {}
  ~NamespacedDaemon() { kill_now(); }

  // Empty on success, else why the namespace could not be made.
  std::string start() {
    int fds[2];
    if (pipe(fds) != 0) return "pipe";
    holder_ = fork();
    if (holder_ == 0) {
      close(fds[0]);
      pid_t inner = -1;
      if (unshare(CLONE_NEWPID) == 0) {
        inner = fork();
        if (inner == 0) {
          execl(ESTIMATORD_PATH, ESTIMATORD_PATH, "--shm-name", shm_.c_str(), "--log-level", "warn",
                "--slots", "8", "--slot-bytes", "65536", "--no-fetch", static_cast<char*>(nullptr));
          _exit(127);
        }
      }
      const int err = errno;
      (void)!write(fds[1], &inner, sizeof inner);
      (void)!write(fds[1], &err, sizeof err);
      if (inner > 0) waitpid(inner, nullptr, 0);
      _exit(0);
    }
    close(fds[1]);
    track_child(holder_);
    int err = 0;
    const bool got = read(fds[0], &pid_, sizeof pid_) == sizeof pid_ && read(fds[0], &err, sizeof err) == sizeof err;
    close(fds[0]);
    if (!got || pid_ <= 0) {
      pid_ = -1;
      kill_now();
      return std::string("unshare(CLONE_NEWPID): ") + std::strerror(err);
    }
    track_child(pid_);  // not our child, but the watchdog kills it by its pid all the same
    return {};
  }
  void kill_now() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      untrack_child(pid_);
    }
    if (holder_ > 0) {
      waitpid(holder_, nullptr, 0);
      untrack_child(holder_);
    }
    pid_ = holder_ = -1;
  }
  pid_t pid() const { return pid_; }

 private:
  std::string shm_;
  TrackedSegment segment_;
  pid_t holder_ = -1;
  pid_t pid_ = -1;
};

TEST(SidecarPod, DaemonAndClientInDifferentPidNamespaces) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to create a pid namespace";
  Watchdog dog(90);
  const std::string shm = unique_shm_name("sidecar");
  NamespacedDaemon daemon(shm);
  if (const std::string why = daemon.start(); !why.empty()) GTEST_SKIP() << "no pid namespace: " << why;
  client::Client c({.shm_name = shm});
  ASSERT_LT(time_until([&] { return c.ping(200ms).ok(); }, 10s), 10s) << "the daemon serves";
  {
    auto seg = shm::ClientSegment::attach(shm);
    ASSERT_TRUE(seg.ok());
    ASSERT_NE(seg.value()->server_pidns(), shm::pid_namespace_id()) << "really another pid namespace";
  }

  // Answers are correct.
  const std::vector<float> x = {1200.f, 3.f, 5e8f, 80.f, 0.f, 1e7f, 7.f, 1.f, 2e6f};
  const std::vector<float> want = expected_power(x, 3);
  for (int i = 0; i < 20; ++i) {
    auto r = estimate(c, x, 2s);
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    ASSERT_EQ(r->powers().size(), want.size());
    for (std::size_t j = 0; j < want.size(); ++j) EXPECT_FLOAT_EQ(r->powers()[j], want[j]);
  }

  // A client killed while holding a slot: the daemon cannot see its pid, so the slot comes
  // back when its lease ends (the call's deadline + 1 s; docs/reliability.md).
  ASSERT_TRUE(stop_process(daemon.pid()));  // keeps the victim's request unanswered
  const pid_t forked = fork();
  if (forked == 0) {
    client::Client v({.shm_name = shm});
    (void)estimate(v, x, 500ms);
    _exit(0);
  }
  ChildProcess victim = ChildProcess::adopt(forked);
  ASSERT_TRUE(request_published(shm, 20s)) << "the victim's request was never seen waiting";
  kill(victim.pid(), SIGKILL);
  const auto killed = Clock::now();
  victim.wait();
  kill(daemon.pid(), SIGCONT);
  auto seg = shm::ClientSegment::attach(shm);
  ASSERT_TRUE(seg.ok());
  const auto all_free = [&] {
    for (std::uint32_t i = 0; i < seg.value()->view().slot_count(); ++i) {
      const auto w = shm::SlotWord::unpack(seg.value()->view().slot(i).control->word.load());
      if (w.state != shm::SlotState::kFree) return false;
    }
    return true;
  };
  // Lease end: the victim's 0.5 s deadline (counted from before the kill) + 1 s; one more
  // sweep and a loaded machine's margin on top.
  ASSERT_LT(time_until(all_free, 5s), 5s) << "the slot is never reclaimed";
  const auto reclaimed = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - killed);
  EXPECT_LT(reclaimed, 2500ms) << "slot reclaimed " << reclaimed.count() << " ms after the kill";
  std::fprintf(stderr, "[ measured ] slot of a killed client in another pid namespace free after %lld ms\n",
               static_cast<long long>(reclaimed.count()));
  seg.value().reset();

  // The daemon killed under an in-flight call with a 30 s timeout: `unavailable` once the
  // heartbeat is stale (2 s), not after 30 s.
  const std::uint64_t epoch0 = epoch_of(shm);
  ASSERT_TRUE(stop_process(daemon.pid()));  // the call below is in flight when the daemon dies
  Status failed;
  std::chrono::milliseconds took{};
  std::thread caller([&] {
    const auto t0 = Clock::now();
    failed = estimate(c, x, 30s).status();
    took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0);
  });
  const bool in_flight_when_killed = request_published(shm, 20s);
  daemon.kill_now();
  caller.join();
  ASSERT_TRUE(in_flight_when_killed) << "the call never published its request";
  EXPECT_EQ(failed.code(), Code::kUnavailable) << failed.to_string();
  EXPECT_LT(took, 2500ms);
  std::fprintf(stderr, "[ measured ] call with a 30 s timeout failed %lld ms after it started\n",
               static_cast<long long>(took.count()));
  const auto t1 = Clock::now();
  const Status after = c.ping(30s);
  EXPECT_EQ(after.code(), Code::kUnavailable) << after.to_string();
  EXPECT_LT(Clock::now() - t1, 2500ms) << "a new call fails as promptly";

  // A new daemon (a new epoch) in yet another pid namespace: the client re-attaches.
  NamespacedDaemon next(shm);
  ASSERT_EQ(next.start(), "");
  EXPECT_LT(time_until([&] { return c.ping(200ms).ok(); }, 10s), 10s);
  EXPECT_GT(epoch_of(shm), epoch0);
  auto r = estimate(c, x, 2s);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  for (std::size_t j = 0; j < want.size(); ++j) EXPECT_FLOAT_EQ(r->powers()[j], want[j]);
  next.kill_now();
}

}  // namespace
}  // namespace estimator::testing
