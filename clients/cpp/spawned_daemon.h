// SPDX-License-Identifier: Apache-2.0
// An estimatord started by the exporter as its own child, on a private segment name, and
// stopped with it (the 2022 seed's StartPyEstimator / Destroy).
//
//   auto daemon = estimator::client::SpawnedDaemon::start({});   // finds estimatord
//   if (!daemon) { log(daemon.status().to_string()); return; }
//   estimator::client::Client client({.shm_name = (*daemon)->shm_name()});
//   ...                                   // destroying the SpawnedDaemon stops estimatord
//
// Promises:
// - start() returns only once the daemon answers a ping, or fails with a message that
//   says why: binary not found or not executable, the daemon's exit status or signal
//   when it died during start-up, or the start deadline.
// - The daemon dies with the exporter: it gets SIGTERM when the exporter process dies,
//   even by SIGKILL (PR_SET_PDEATHSIG). The kernel ties that signal to the thread that
//   forked, so the fork happens on a thread owned by the SpawnedDaemon that lives as long
//   as it does: the daemon does not die when the thread that called start() ends (a
//   worker thread, a Python thread, an OS thread the Go runtime retires).
// - The daemon inherits no descriptor of the exporter besides stderr, where it logs (its
//   stdout is that stderr too); stdin is /dev/null. Signal dispositions and the signal
//   mask are reset.
// - stop() (and the destructor) sends SIGTERM, waits up to stop_timeout, then SIGKILLs,
//   always reaps the child, and removes the segment files a killed daemon left behind.
//
// The exporter must not reap children it did not start (waitpid(-1), SIGCHLD ignored),
// or the daemon's exit status is lost; stop() then reports kInternal.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace estimator::client {

struct SpawnOptions {
  // estimatord to run. Empty: $ESTIMATORD, else `estimatord` in the directory of the
  // running executable, else the first `estimatord` on $PATH.
  std::string binary = {};
  // Segment name. Empty: a private one, "estimator-spawned-<pid>-<n>".
  std::string shm_name = {};
  std::vector<std::string> extra_args = {};  // e.g. {"--model-dir", "/models"}
  std::string log_level = "warn";            // the daemon logs to the exporter's stderr
  std::chrono::milliseconds start_timeout{10000};
  std::chrono::milliseconds stop_timeout{5000};
};

// The estimatord that SpawnOptions::binary names, resolved as documented there.
Result<std::string> find_estimatord(std::string_view binary);

class SpawnedDaemon {
 public:
  static Result<std::unique_ptr<SpawnedDaemon>> start(SpawnOptions options);
  ~SpawnedDaemon();  // stop(), ignoring its result
  SpawnedDaemon(const SpawnedDaemon&) = delete;
  SpawnedDaemon& operator=(const SpawnedDaemon&) = delete;

  // Stops and reaps the daemon; returns its wait status (as waitpid gives it). Calling it
  // again returns the same status.
  Result<int> stop();

  const std::string& shm_name() const { return shm_name_; }
  const std::string& binary() const { return binary_; }
  pid_t pid() const { return pid_; }  // -1 once stopped
  bool running() const { return pid_ > 0; }

 private:
  struct Forker;
  SpawnedDaemon() = default;

  std::string shm_name_;
  std::string binary_;
  std::chrono::milliseconds stop_timeout_{5000};
  pid_t pid_ = -1;
  Result<int> stopped_ = Status(Code::kInternal, "not stopped");
  std::unique_ptr<Forker> forker_;
};

}  // namespace estimator::client
