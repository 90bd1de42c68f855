// SPDX-License-Identifier: Apache-2.0
// A server process of the benchmark: forked from the (still single-threaded) parent, it
// reports readiness through a pipe and is stopped with SIGTERM, then SIGKILL, then reaped,
// by its owner's destructor on every exit path. A child also gets SIGTERM if the parent
// dies (PR_SET_PDEATHSIG), so an interrupted run leaves no server behind.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "common/status.h"

namespace estimator::bench {

class Child {
 public:
  // What the child runs; its return value is the child's exit code. Call ready(Status) once
  // the server can take requests (or with the error that prevents it).
  using Ready = std::function<void(const Status&)>;
  using Body = std::function<int(const Ready& ready)>;

  // Forks and runs `body` in the child, whose stdout is redirected to stderr so that
  // nothing a server prints can land among the results. Flush stdio before calling.
  static Result<std::unique_ptr<Child>> spawn(std::string name, Body body);

  ~Child();
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  // Ok once the child called ready(Ok) within `timeout`; its error, or "exited", otherwise.
  Status wait_ready(std::chrono::milliseconds timeout);

  // True while the process exists (has not been reaped).
  bool running();

  // SIGTERM, up to `grace` for it to exit, then SIGKILL; reaps. Idempotent.
  void stop(std::chrono::milliseconds grace = std::chrono::milliseconds(3000));

  const std::string& name() const { return name_; }
  pid_t pid() const { return pid_; }

 private:
  Child() = default;
  std::string name_;
  pid_t pid_ = -1;
  int ready_fd_ = -1;  // read end of the readiness pipe
};

}  // namespace estimator::bench
