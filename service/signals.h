// SPDX-License-Identifier: Apache-2.0
// The signals estimatord answers, and what it does about each.
//
// Asynchronous ones (sent by kill, the terminal, the kernel for limits) are blocked in every
// thread and taken by main() with sigwait: SIGHUP reloads the model directory, and every
// other catchable signal whose default action ends the process (SIGTERM, SIGINT, SIGQUIT,
// SIGUSR1, ...) stops the daemon through its destructors, which remove the segment and its
// lock file.
//
// Crash signals (SIGSEGV, SIGABRT, SIGILL, SIGFPE, SIGSYS, SIGTRAP) hit the faulting thread
// and cannot be waited for. CrashCleanup's handler unlinks the segment and lock (names
// computed in advance; unlink is async-signal-safe), then lets the signal end the process
// with its previous disposition, so the exit status and core dump stay the crash's. Only
// in the process that armed it: a forked child's crash leaves the files alone.
//
// SIGBUS is deliberately not handled here: shm/ installs a SIGBUS handler of its own (a peer
// truncating the segment), which chains to the previous one for other faults. Its fatal
// path can call CrashCleanup::remove_files().
#pragma once

#include <signal.h>

#include <string>

namespace estimator::service {

inline constexpr int kReloadSignal = SIGHUP;

// SIGHUP and the stop signals; block them before starting any thread.
sigset_t daemon_signals();

class CrashCleanup {
 public:
  // Installs the crash handlers for the segment `name` (served by this process now).
  explicit CrashCleanup(const std::string& segment_name);
  // Disarms: from here on the names may belong to the next daemon.
  ~CrashCleanup();
  CrashCleanup(const CrashCleanup&) = delete;
  CrashCleanup& operator=(const CrashCleanup&) = delete;

  // Unlinks the segment and lock file while armed; async-signal-safe.
  static void remove_files() noexcept;
};

}  // namespace estimator::service
