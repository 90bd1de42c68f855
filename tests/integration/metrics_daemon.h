// SPDX-License-Identifier: Apache-2.0
// estimatord as a child process with its log in a file and metrics on an ephemeral
// loopback port, for the tests that scrape it (metrics_scrape_test,
// measured_selection_test). Tracked by tests/support/watchdog.h, so a failing or hung
// test leaves neither the process nor its segment behind. Needs ESTIMATORD_PATH.
#pragma once

#include <signal.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/child_process.h"
#include "tests/support/files.h"
#include "tests/support/watchdog.h"

namespace estimator::testing {

// The port of the log line "metrics: http://H:P/metrics" in a daemon's log, or 0.
inline std::uint16_t metrics_port_in(const std::string& log) {
  const std::size_t p = log.find("metrics: http://");
  const std::size_t end = log.find("/metrics", p + 16);
  if (p == std::string::npos || end == std::string::npos) return 0;
  const std::string address = log.substr(p + 16, end - p - 16);
  return static_cast<std::uint16_t>(std::stoi(address.substr(address.rfind(':') + 1)));
}

// estimatord with its log in a file, so the test can read the bound metrics address.
class MetricsDaemon {
 public:
  explicit MetricsDaemon(std::string shm_name) : shm_name_(std::move(shm_name)) {
    log_ = std::filesystem::temp_directory_path() / (shm_name_ + ".log");
    track_segment(shm_name_);
  }
  ~MetricsDaemon() {
    process_.stop(SIGTERM);
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
    if (!process_.start_logged(args, log_.string())) return 0;
    for (int i = 0; i < 500; ++i) {
      const std::string log = read_file(log_);
      const std::uint16_t port = metrics_port_in(log);
      if (port != 0 && log.find("ready:") != std::string::npos) return port;
      if (!process_.alive()) {
        ADD_FAILURE() << "estimatord exited: " << log;
        return 0;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ADD_FAILURE() << "no metrics address in the log: " << read_file(log_);
    return 0;
  }

  std::string log() const { return read_file(log_); }
  pid_t pid() const { return process_.pid(); }

 private:
  std::string shm_name_;
  std::filesystem::path log_;
  ChildProcess process_;
};

}  // namespace estimator::testing
