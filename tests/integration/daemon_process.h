// SPDX-License-Identifier: Apache-2.0
// Test fixtures that run the real estimatord binary as a child process. Each daemon runs
// in its own process group and is tracked with its segment (tests/support/watchdog.h), so
// a test that fails, hangs past its Watchdog or crashes leaves no estimatord and no
// /dev/shm segment behind.
#pragma once

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "clients/cpp/estimator_client.h"
#include "tests/support/watchdog.h"

namespace estimator::testing {

class DaemonProcess {
 public:
  DaemonProcess(std::string shm_name, std::vector<std::string> extra = {})
      : shm_name_(std::move(shm_name)), extra_(std::move(extra)) {
    track_segment(shm_name_);
  }
  // Stops the daemon and removes its segment when no other DaemonProcess of this test
  // binary uses the name (a test that restarts a daemon on the same name keeps it).
  ~DaemonProcess() {
    stop(SIGTERM);
    untrack_segment(shm_name_);
  }
  DaemonProcess(const DaemonProcess&) = delete;
  DaemonProcess& operator=(const DaemonProcess&) = delete;

  // Starts estimatord and waits until it answers a ping (false if it exits first).
  bool start() {
    if (!spawn()) return false;
    client::Client probe({.shm_name = shm_name_, .shm_mode = shm_mode()});
    for (int i = 0; i < 200; ++i) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        reaped();
        return false;
      }
      if (probe.ping(std::chrono::milliseconds(100)).ok()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    return false;
  }

  // Waits for the child to exit by itself; returns its wait status, or -1 after `timeout`.
  int wait_exit(std::chrono::milliseconds timeout) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        reaped();
        return status;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return -1;
  }

  bool spawn() {
    std::vector<std::string> args = {ESTIMATORD_PATH, "--shm-name", shm_name_, "--log-level", "warn",
                                     "--slots", "16", "--slot-bytes", "65536"};
    args.insert(args.end(), extra_.begin(), extra_.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);  // its own group: whatever it starts goes with it
    const bool ok = posix_spawn(&pid_, ESTIMATORD_PATH, nullptr, &attr, argv.data(), environ) == 0;
    posix_spawnattr_destroy(&attr);
    if (ok) track_child(pid_);
    return ok;
  }

  // Sends `sig` and reaps the child; returns its wait status.
  int stop(int sig) {
    if (pid_ <= 0) return 0;
    kill(pid_, sig);
    int status = 0;
    waitpid(pid_, &status, 0);
    reaped();
    return status;
  }

  pid_t pid() const { return pid_; }

  // The segment's mode the daemon was started with (its --shm-mode; -1: the client's
  // default): the widest a client of this daemon should accept.
  std::int32_t shm_mode() const {
    for (std::size_t i = 0; i + 1 < extra_.size(); ++i) {
      if (extra_[i] == "--shm-mode") return static_cast<std::int32_t>(std::stol(extra_[i + 1], nullptr, 8));
    }
    return -1;
  }

 private:
  void reaped() {
    untrack_child(pid_);
    pid_ = -1;
  }

  std::string shm_name_;
  std::vector<std::string> extra_;
  pid_t pid_ = -1;
};

inline std::string unique_shm_name(const std::string& what) {
  return "estimator-it-" + what + "-" + std::to_string(getpid());
}

}  // namespace estimator::testing
