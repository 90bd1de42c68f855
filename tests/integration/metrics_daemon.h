// SPDX-License-Identifier: Apache-2.0
// estimatord as a child process with its log in a file and metrics on an ephemeral
// loopback port, for the tests that scrape it (metrics_scrape_test,
// measured_selection_test). Tracked by tests/support/watchdog.h, so a failing or hung
// test leaves neither the process nor its segment behind. Needs ESTIMATORD_PATH.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/watchdog.h"

namespace estimator::testing {

inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// estimatord with its log in a file, so the test can read the bound metrics address.
class MetricsDaemon {
 public:
  explicit MetricsDaemon(std::string shm_name) : shm_name_(std::move(shm_name)) {
    log_ = std::filesystem::temp_directory_path() / (shm_name_ + ".log");
    track_segment(shm_name_);
  }
  ~MetricsDaemon() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int status = 0;
      waitpid(pid_, &status, 0);
      untrack_child(pid_);
    }
    untrack_segment(shm_name_);
    std::filesystem::remove(log_);
  }

  // Starts it and returns the metrics port from its log line "metrics: http://H:P/metrics"
  // (0 when it did not come up).
  std::uint16_t start(const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {ESTIMATORD_PATH, "--shm-name", shm_name_, "--slots", "8",
                                     "--slot-bytes", "65536", "--log-level", "info",
                                     "--metrics-address", "127.0.0.1:0"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    const int rc = posix_spawn(&pid_, ESTIMATORD_PATH, &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) return 0;
    track_child(pid_);
    for (int i = 0; i < 500; ++i) {
      const std::string log = read_file(log_);
      const std::size_t p = log.find("metrics: http://");
      if (p != std::string::npos && log.find("ready:") != std::string::npos) {
        const std::size_t end = log.find("/metrics", p + 16);
        const std::string address = log.substr(p + 16, end - p - 16);
        return static_cast<std::uint16_t>(std::stoi(address.substr(address.rfind(':') + 1)));
      }
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        untrack_child(pid_);
        pid_ = -1;
        ADD_FAILURE() << "estimatord exited: " << log;
        return 0;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ADD_FAILURE() << "no metrics address in the log: " << read_file(log_);
    return 0;
  }

  std::string log() const { return read_file(log_); }
  pid_t pid() const { return pid_; }

 private:
  std::string shm_name_;
  std::filesystem::path log_;
  pid_t pid_ = -1;
};

}  // namespace estimator::testing
