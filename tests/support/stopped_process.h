// SPDX-License-Identifier: Apache-2.0
// Stopping a process with SIGSTOP and knowing that it has stopped. kill(2) returns once the
// signal is queued: the thread that takes it must run to start the group stop, and every
// other thread stops only when it is next scheduled. On a loaded machine that takes
// hundreds of milliseconds, during which a "stopped" daemon still answers requests.
#pragma once

#include <dirent.h>
#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>

namespace estimator::testing {

// Whether every thread of `pid` is stopped (or exiting); false when the process is gone.
inline bool all_threads_stopped(pid_t pid) {
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = opendir(tasks.c_str());
  if (d == nullptr) return false;
  bool stopped = true;
  int seen = 0;
  for (dirent* e; stopped && (e = readdir(d)) != nullptr;) {
    if (e->d_name[0] == '.') continue;
    std::ifstream in(tasks + "/" + e->d_name + "/stat");
    std::string stat;
    if (!std::getline(in, stat)) continue;  // the thread ended meanwhile
    // "tid (comm) S ...": comm may hold spaces and parentheses, the state follows the last ')'.
    const std::size_t close = stat.rfind(')');
    const char state = close != std::string::npos && close + 2 < stat.size() ? stat[close + 2] : '?';
    stopped = state == 'T' || state == 't' || state == 'Z' || state == 'X';
    ++seen;
  }
  closedir(d);
  return stopped && seen > 0;
}

// Sends SIGSTOP to `pid` and waits until all its threads have stopped; false when that did
// not happen within `limit` (or the process is gone).
inline bool stop_process(pid_t pid, std::chrono::milliseconds limit = std::chrono::seconds(30)) {
  if (pid <= 0 || kill(pid, SIGSTOP) != 0) return false;
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!all_threads_stopped(pid)) {
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

}  // namespace estimator::testing
