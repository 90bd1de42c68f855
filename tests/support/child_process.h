// SPDX-License-Identifier: Apache-2.0
// A program a test starts: in its own process group (whatever it starts goes with it) and
// tracked by tests/support/watchdog.h from its start until it is reaped, so that a test
// that fails, hangs past its Watchdog or crashes leaves no process behind. The destructor
// kills and reaps what is still running.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tests/support/watchdog.h"

namespace estimator::testing {

// How a ChildProcess starts.
struct SpawnOptions {
  int out_fd = -1;                    // its stdout (-1: the test's own)
  int err_fd = -1;                    // its stderr (-1: the test's own)
  std::vector<std::string> env = {};  // "NAME=value" entries added to the test's environment
};

class ChildProcess {
 public:
  ChildProcess() = default;
  ~ChildProcess() { stop(SIGKILL); }
  ChildProcess(ChildProcess&& other) noexcept : pid_(std::exchange(other.pid_, -1)) {}
  ChildProcess& operator=(ChildProcess&& other) noexcept {
    if (this != &other) {
      stop(SIGKILL);
      pid_ = std::exchange(other.pid_, -1);
    }
    return *this;
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // Takes over a child the test forked itself (for what posix_spawn cannot do: run code of
  // the test, change user): tracked from here on.
  static ChildProcess adopt(pid_t forked) {
    ChildProcess child;
    if (forked > 0) {
      child.pid_ = forked;
      track_child(forked);
    }
    return child;
  }

  // Starts args[0] with `args`. False when it cannot start.
  bool start(const std::vector<std::string>& args, const SpawnOptions& options = {}) {
    stop(SIGKILL);
    std::vector<std::string> strings = args;
    const std::size_t argc = strings.size();
    for (char** e = environ; *e != nullptr; ++e) strings.emplace_back(*e);
    strings.insert(strings.end(), options.env.begin(), options.env.end());
    std::vector<char*> argv, envp;
    for (std::size_t i = 0; i < strings.size(); ++i) (i < argc ? argv : envp).push_back(strings[i].data());
    argv.push_back(nullptr);
    envp.push_back(nullptr);
    posix_spawn_file_actions_t files;
    posix_spawn_file_actions_init(&files);
    if (options.out_fd >= 0) posix_spawn_file_actions_adddup2(&files, options.out_fd, STDOUT_FILENO);
    if (options.err_fd >= 0) posix_spawn_file_actions_adddup2(&files, options.err_fd, STDERR_FILENO);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);
    pid_t pid = -1;
    const bool ok = posix_spawn(&pid, argv[0], &files, &attr, argv.data(), envp.data()) == 0;
    posix_spawn_file_actions_destroy(&files);
    posix_spawnattr_destroy(&attr);
    if (!ok) return false;
    pid_ = pid;
    track_child(pid_);
    return true;
  }

  // Starts it with stdout and stderr in the file `log` (created or truncated).
  bool start_logged(const std::vector<std::string>& args, const std::string& log) {
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return false;
    const bool ok = start(args, {.out_fd = fd, .err_fd = fd});
    close(fd);
    return ok;
  }

  pid_t pid() const { return pid_; }

  // True while it has not exited (a stopped process is alive); reaps it once it has.
  bool alive() { return pid_ > 0 && !reap(WNOHANG, nullptr); }

  // Waits up to `timeout` for it to exit by itself; its wait status, or -1 (still running,
  // or never started).
  int wait_exit(std::chrono::milliseconds timeout) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    int status = 0;
    while (pid_ > 0) {
      if (reap(WNOHANG, &status)) return status;
      if (std::chrono::steady_clock::now() >= end) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return -1;
  }

  // Waits until it stops (SIGSTOP) or exits; true when it is stopped (otherwise it has been
  // reaped, its wait status in `status`).
  bool wait_stopped(int* status) {
    int s = 0;
    if (pid_ <= 0 || waitpid(pid_, &s, WUNTRACED) != pid_) return false;
    *status = s;
    if (WIFSTOPPED(s)) return true;
    released();
    return false;
  }

  // Waits for it to exit; its wait status (-1 if not started), with its resource usage in
  // `usage` when given.
  int wait(rusage* usage = nullptr) {
    int status = -1;
    if (pid_ > 0 && wait4(pid_, &status, 0, usage) == pid_) released();
    return status;
  }

  // Sends `sig`, waits up to `timeout`, then kills it; its wait status, or -1 when it had
  // to be killed or was not running.
  int stop(int sig, std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    if (pid_ <= 0) return -1;
    kill(pid_, sig);
    const int status = wait_exit(timeout);
    if (status != -1) return status;
    kill(-pid_, SIGKILL);
    kill(pid_, SIGKILL);
    wait();
    return -1;
  }

 private:
  // waitpid with `flags`; true (and untracked) once it has been reaped.
  bool reap(int flags, int* status) {
    int s = 0;
    if (waitpid(pid_, &s, flags) != pid_) return false;
    if (status != nullptr) *status = s;
    released();
    return true;
  }
  void released() {
    untrack_child(pid_);
    pid_ = -1;
  }

  pid_t pid_ = -1;
};

}  // namespace estimator::testing
