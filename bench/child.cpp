// SPDX-License-Identifier: Apache-2.0
// Server processes of the benchmark (see child.h): fork, readiness pipe, SIGTERM + waitpid.
#include "bench/child.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <thread>

namespace estimator::bench {
namespace {

void write_all(int fd, const std::string& s) {
  std::size_t done = 0;
  while (done < s.size()) {
    const ssize_t n = write(fd, s.data() + done, s.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<std::size_t>(n);
  }
}

std::int64_t ms_left(std::chrono::steady_clock::time_point end) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(end -
                                                               std::chrono::steady_clock::now())
      .count();
}

}  // namespace

Result<std::unique_ptr<Child>> Child::spawn(std::string name, Body body) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    return Status(Code::kInternal, "pipe: " + std::string(std::strerror(errno)));
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    const int err = errno;
    close(fds[0]);
    close(fds[1]);
    return Status(Code::kResourceExhausted, "fork: " + std::string(std::strerror(err)));
  }
  if (pid == 0) {
    // The child: never returns into the parent's code, never runs its destructors.
    close(fds[0]);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(3);  // the parent died before prctl
    dup2(STDERR_FILENO, STDOUT_FILENO);
    const int ready_fd = fds[1];
    bool reported = false;
    const Ready ready = [&](const Status& s) {
      if (reported) return;
      reported = true;
      write_all(ready_fd, s.ok() ? std::string("ok\n") : s.to_string() + "\n");
      close(ready_fd);
    };
    const int code = body(ready);
    ready(Status(Code::kInternal, "server returned before it was ready"));
    std::fflush(nullptr);
    _exit(code);
  }
  close(fds[1]);
  std::unique_ptr<Child> c(new Child());
  c->name_ = std::move(name);
  c->pid_ = pid;
  c->ready_fd_ = fds[0];
  return c;
}

Child::~Child() { stop(); }

Status Child::wait_ready(std::chrono::milliseconds timeout) {
  if (ready_fd_ < 0) return Status(Code::kInternal, name_ + ": readiness already consumed");
  const auto end = std::chrono::steady_clock::now() + timeout;
  std::string line;
  for (;;) {
    const std::int64_t left = ms_left(end);
    if (left <= 0) {
      return Status(Code::kDeadlineExceeded,
                    name_ + " not ready within " + std::to_string(timeout.count()) + " ms");
    }
    pollfd p{ready_fd_, POLLIN, 0};
    const int r = poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;  // timeout: the loop reports it
    char buf[512];
    const ssize_t n = read(ready_fd_, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n > 0) {
      line.append(buf, static_cast<std::size_t>(n));
      if (line.find('\n') == std::string::npos) continue;
    }
    close(ready_fd_);
    ready_fd_ = -1;
    if (line == "ok\n") return Status::Ok();
    if (!line.empty() && line.back() == '\n') line.pop_back();
    return Status(Code::kUnavailable,
                  name_ + " failed to start: " + (line.empty() ? "exited" : line));
  }
}

bool Child::running() {
  if (pid_ <= 0) return false;
  int status = 0;
  const pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_ || (r < 0 && errno == ECHILD)) {
    pid_ = -1;
    return false;
  }
  return true;
}

void Child::stop(std::chrono::milliseconds grace) {
  if (ready_fd_ >= 0) {
    close(ready_fd_);
    ready_fd_ = -1;
  }
  if (pid_ <= 0) return;
  kill(pid_, SIGTERM);
  const auto end = std::chrono::steady_clock::now() + grace;
  while (running()) {
    if (ms_left(end) <= 0) {
      std::fprintf(stderr, "estimator-bench: %s (pid %d) ignored SIGTERM; killing it\n",
                   name_.c_str(), static_cast<int>(pid_));
      kill(pid_, SIGKILL);
      int status = 0;
      while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
      pid_ = -1;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

}  // namespace estimator::bench
