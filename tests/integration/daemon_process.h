// SPDX-License-Identifier: Apache-2.0
// Test fixtures that run the real estimatord binary as a child process. Each daemon runs
// in its own process group and is tracked with its segment (tests/support/watchdog.h), so
// a test that fails, hangs past its Watchdog or crashes leaves no estimatord and no
// /dev/shm segment behind.
#pragma once

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "clients/cpp/estimator_client.h"
#include "tests/support/child_process.h"
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
    process_.stop(SIGTERM);
    untrack_segment(shm_name_);
  }
  DaemonProcess(const DaemonProcess&) = delete;
  DaemonProcess& operator=(const DaemonProcess&) = delete;

  // Starts estimatord and waits until it answers a ping (false if it exits first).
  bool start() {
    if (!spawn()) return false;
    client::Client probe({.shm_name = shm_name_, .shm_mode = shm_mode()});
    for (int i = 0; i < 200; ++i) {
      if (!process_.alive()) return false;
      if (probe.ping(std::chrono::milliseconds(100)).ok()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    return false;
  }

  // Waits for the child to exit by itself; returns its wait status, or -1 after `timeout`.
  int wait_exit(std::chrono::milliseconds timeout) { return process_.wait_exit(timeout); }

  bool spawn() {
    std::vector<std::string> args = {ESTIMATORD_PATH, "--shm-name", shm_name_, "--log-level", "warn",
                                     "--slots", "16", "--slot-bytes", "65536"};
    args.insert(args.end(), extra_.begin(), extra_.end());
    return process_.start(args);
  }

  // Sends `sig` and reaps the child; returns its wait status (-1: not running, or killed
  // after 20 s).
  int stop(int sig) { return process_.stop(sig); }

  pid_t pid() const { return process_.pid(); }
  bool alive() { return process_.alive(); }

  // The segment's mode the daemon was started with (its --shm-mode; -1: the client's
  // default): the widest a client of this daemon should accept.
  std::int32_t shm_mode() const {
    for (std::size_t i = 0; i + 1 < extra_.size(); ++i) {
      if (extra_[i] == "--shm-mode") return static_cast<std::int32_t>(std::stol(extra_[i + 1], nullptr, 8));
    }
    return -1;
  }

 private:
  std::string shm_name_;
  std::vector<std::string> extra_;
  ChildProcess process_;
};

inline std::string unique_shm_name(const std::string& what) {
  return "estimator-it-" + what + "-" + std::to_string(getpid());
}

}  // namespace estimator::testing
