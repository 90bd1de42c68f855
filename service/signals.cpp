// SPDX-License-Identifier: Apache-2.0
#include "service/signals.h"

#include <unistd.h>

#include <climits>
#include <cstring>

namespace estimator::service {
namespace {

constexpr int kCrashSignals[] = {SIGSEGV, SIGABRT, SIGILL, SIGFPE, SIGSYS, SIGTRAP};

// Written before the handlers are installed, read by them: no allocation in the handler.
// The paths are where shm::ServerSegment puts the segment (shm_open) and its lock.
char g_segment_path[PATH_MAX];
char g_lock_path[PATH_MAX];
volatile sig_atomic_t g_armed = 0;
// A forked child (models/isolated_call's parser) inherits the handlers: its crash must not
// remove the daemon's segment.
pid_t g_owner = 0;
struct sigaction g_previous[NSIG];

void on_crash(int sig, siginfo_t* info, void*) {
  // The previous disposition first: a fault in what follows ends the process.
  sigaction(sig, &g_previous[sig], nullptr);
  CrashCleanup::remove_files();
  // A fault returns to the faulting instruction, which faults again under the previous
  // disposition; a signal that was sent (kill, abort's tgkill) is sent again.
  if (info == nullptr || info->si_code <= 0) raise(sig);
}

bool copy_path(char (&dest)[PATH_MAX], const std::string& path) {
  if (path.size() >= PATH_MAX) return false;
  std::memcpy(dest, path.c_str(), path.size() + 1);
  return true;
}

}  // namespace

sigset_t daemon_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int sig : {kReloadSignal, SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM, SIGVTALRM,
                  SIGPROF, SIGXCPU, SIGXFSZ, SIGIO, SIGPWR, SIGSTKFLT}) {
    sigaddset(&set, sig);
  }
  return set;
}

CrashCleanup::CrashCleanup(const std::string& segment_name) {
  if (!copy_path(g_segment_path, "/dev/shm/" + segment_name) ||
      !copy_path(g_lock_path, "/dev/shm/" + segment_name + ".lock")) {
    return;  // create() would have refused such a name already
  }
  struct sigaction action {};
  action.sa_sigaction = on_crash;
  action.sa_flags = SA_SIGINFO | SA_NODEFER;  // NODEFER: the re-raise is delivered at once
  sigemptyset(&action.sa_mask);
  for (int sig : kCrashSignals) sigaction(sig, &action, &g_previous[sig]);
  g_owner = getpid();
  g_armed = 1;
}

CrashCleanup::~CrashCleanup() { g_armed = 0; }

void CrashCleanup::remove_files() noexcept {
  if (g_armed == 0 || getpid() != g_owner) return;
  g_armed = 0;
  unlink(g_segment_path);
  unlink(g_lock_path);
}

}  // namespace estimator::service
