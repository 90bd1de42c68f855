// SPDX-License-Identifier: Apache-2.0
// A test cut short leaves nothing behind: the processes it started and the /dev/shm
// segments they or it created are tracked here, and removed
//   - by the Watchdog, when a test runs past its time (SIGALRM): the handler kills every
//     tracked process group, reaps it, unlinks every tracked segment, then lets SIGALRM
//     end the binary as before (the test fails);
//   - by a reaper process, when the test binary dies any other way (a crash, ctest's
//     SIGKILL on timeout): the reaper reads what is tracked from a pipe and, when the pipe
//     reaches end-of-file because the binary is gone, kills and unlinks whatever is still
//     listed. It runs detached (double fork, its own session, no stdio), so killing the
//     test's process tree does not take it along.
// A test that ends normally untracks what it reaped and removed, and the reaper exits
// with nothing to do.
//
// Track a child right after starting it (ideally in its own process group, so that what
// it starts in turn goes too) and untrack it after waitpid; track a segment name while a
// test may leave it behind.
#pragma once

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <string>
#include <utility>

extern char** environ;

namespace estimator::testing {
namespace watchdog_detail {

constexpr int kMax = 64;
constexpr std::size_t kPathMax = 160;

// Read by the signal handler: plain atomics and fixed arrays, no allocation, no locks.
inline std::atomic<pid_t> g_children[kMax];
inline std::atomic<bool> g_segment_used[kMax];
inline char g_segment_path[kMax][kPathMax];  // "/dev/shm/<name>"
inline char g_lock_path[kMax][kPathMax];     // "/dev/shm/<name>.lock", the daemon's lock
inline int g_segment_refs[kMax];             // under g_mutex
inline std::mutex g_mutex;                   // tracking calls (never taken by the handler)
inline int g_reaper_fd = -1;
inline pid_t g_owner = 0;                    // the process the tables and reaper belong to

// The reaper: reads "+ pid:N", "- pid:N", "+ shm:NAME", "- shm:NAME" lines; at end of
// input kills the groups (and the pids) and removes the segments still listed.
inline constexpr const char* kReaperScript = R"sh(exec 3<&0
(
  trap '' INT TERM HUP
  live=''
  while read -r op what; do
    case "$op" in
      +) live="$live $what" ;;
      -) keep=''
         for e in $live; do [ "$e" = "$what" ] || keep="$keep $e"; done
         live=$keep ;;
    esac
  done
  for e in $live; do
    case "$e" in
      pid:*) kill -KILL -- "-${e#pid:}" 2>/dev/null; kill -KILL "${e#pid:}" 2>/dev/null ;;
      shm:*) rm -f "/dev/shm/${e#shm:}" "/dev/shm/${e#shm:}.lock" ;;
    esac
  done
) <&3 3<&- >/dev/null 2>&1 &)sh";

// In a child the test forks (and does not exec): the reaper must see end-of-file when the
// test binary ends, not when the last of its forked children does (a forked client left
// running kept the reaper from ever acting on the daemon it talks to).
inline void close_reaper_in_forked_child() {
  if (g_reaper_fd >= 0) close(g_reaper_fd);
  g_reaper_fd = -1;
}

// Starts the reaper once; the outer shell exits at once, its background child lives on.
inline void start_reaper_locked() {
  if (g_reaper_fd >= 0) return;
  static const bool registered =
      pthread_atfork(nullptr, nullptr, close_reaper_in_forked_child) == 0;
  (void)registered;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[0], 0);
  // Nothing else of the test's: a descriptor the reaper kept open would keep a test that
  // waits for its end-of-file waiting.
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID);
  char sh[] = "/bin/sh";
  char dash_c[] = "-c";
  std::string script = kReaperScript;
  char* argv[] = {sh, dash_c, script.data(), nullptr};
  pid_t outer = -1;
  const int rc = posix_spawn(&outer, "/bin/sh", &actions, &attr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  close(fds[0]);
  if (rc != 0) {
    close(fds[1]);
    return;
  }
  int status = 0;
  waitpid(outer, &status, 0);
  g_reaper_fd = fds[1];
}

// A forked child starts afresh: what its parent tracked is the parent's to remove (the
// parent's reaper is already closed here, see close_reaper_in_forked_child).
inline void adopt_if_forked_locked() {
  if (g_owner == getpid()) return;
  g_owner = getpid();
  for (auto& child : g_children) child.store(0);
  for (auto& used : g_segment_used) used.store(false);
  close_reaper_in_forked_child();
}

inline void tell_reaper_locked(const std::string& line) {
  start_reaper_locked();
  if (g_reaper_fd < 0) return;
  const std::string l = line + "\n";  // shorter than PIPE_BUF: one atomic write
  if (write(g_reaper_fd, l.data(), l.size()) < 0) return;
}

// Async-signal-safe: only kill, waitpid and unlink.
inline void remove_everything() {
  for (auto& child : g_children) {
    const pid_t pid = child.exchange(0);
    if (pid <= 0) continue;
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
  }
  for (int i = 0; i < kMax; ++i) {
    if (g_segment_used[i].exchange(false)) {
      unlink(g_segment_path[i]);
      unlink(g_lock_path[i]);
    }
  }
}

inline void on_alarm(int /*sig*/) {
  static constexpr char kMessage[] =
      "watchdog: the test ran past its time; killing its children and removing its "
      "segments\n";
  if (write(STDERR_FILENO, kMessage, sizeof kMessage - 1) < 0) {
    // nothing more to say
  }
  remove_everything();
  signal(SIGALRM, SIG_DFL);
  raise(SIGALRM);
}

}  // namespace watchdog_detail

// A process this test started (best in its own process group: setpgid(0, 0) or
// POSIX_SPAWN_SETPGROUP), until untrack_child after it has been reaped.
inline void track_child(pid_t pid) {
  using namespace watchdog_detail;
  const std::lock_guard lock(g_mutex);
  adopt_if_forked_locked();
  for (auto& child : g_children) {
    pid_t expected = 0;
    if (child.compare_exchange_strong(expected, pid)) break;
  }
  tell_reaper_locked("+ pid:" + std::to_string(pid));
}

inline void untrack_child(pid_t pid) {
  using namespace watchdog_detail;
  const std::lock_guard lock(g_mutex);
  adopt_if_forked_locked();
  for (auto& child : g_children) {
    pid_t expected = pid;
    if (child.compare_exchange_strong(expected, 0)) break;
  }
  tell_reaper_locked("- pid:" + std::to_string(pid));
}

// A /dev/shm segment name a test may leave behind (with the daemon's <name>.lock beside
// it); tracked once however many times it is
// tracked, until as many untrack_segment calls.
inline void track_segment(const std::string& name) {
  using namespace watchdog_detail;
  const std::string path = "/dev/shm/" + name;
  const std::string lock_path = path + ".lock";
  if (name.empty() || lock_path.size() >= kPathMax || name.find_first_of("/ \n") != std::string::npos) return;
  const std::lock_guard lock(g_mutex);
  adopt_if_forked_locked();
  int free_slot = -1;
  for (int i = 0; i < kMax; ++i) {
    if (g_segment_used[i].load() && path == g_segment_path[i]) {
      ++g_segment_refs[i];
      return;
    }
    if (!g_segment_used[i].load() && free_slot < 0) free_slot = i;
  }
  if (free_slot < 0) return;
  std::memcpy(g_segment_path[free_slot], path.c_str(), path.size() + 1);
  std::memcpy(g_lock_path[free_slot], lock_path.c_str(), lock_path.size() + 1);
  g_segment_refs[free_slot] = 1;
  g_segment_used[free_slot].store(true);
  tell_reaper_locked("+ shm:" + name);
}

// Drops one tracking of `name`; the last one removes the segment (when `remove`) and
// stops tracking it. Returns true when this was the last.
inline bool untrack_segment(const std::string& name, bool remove = true) {
  using namespace watchdog_detail;
  const std::string path = "/dev/shm/" + name;
  const std::lock_guard lock(g_mutex);
  adopt_if_forked_locked();
  for (int i = 0; i < kMax; ++i) {
    if (!g_segment_used[i].load() || path != g_segment_path[i]) continue;
    if (--g_segment_refs[i] > 0) return false;
    if (remove) {
      unlink(path.c_str());
      unlink((path + ".lock").c_str());
    }
    g_segment_used[i].store(false);
    tell_reaper_locked("- shm:" + name);
    return true;
  }
  return false;
}

// A segment name tracked for the life of this object, however the test ends.
class TrackedSegment {
 public:
  explicit TrackedSegment(std::string name) : name_(std::move(name)) { track_segment(name_); }
  ~TrackedSegment() { untrack_segment(name_); }
  TrackedSegment(const TrackedSegment&) = delete;
  TrackedSegment& operator=(const TrackedSegment&) = delete;
  const std::string& name() const { return name_; }

 private:
  std::string name_;
};

// Ends the test binary if a test runs longer than `seconds`, after removing what is
// tracked (see the top of this file). One at a time; the destructor disarms it.
class Watchdog {
 public:
  explicit Watchdog(unsigned seconds) {
    struct sigaction sa {};
    sa.sa_handler = watchdog_detail::on_alarm;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, nullptr);
    alarm(seconds);
  }
  ~Watchdog() { alarm(0); }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;
};

}  // namespace estimator::testing
