// SPDX-License-Identifier: Apache-2.0
// An owned file descriptor, closed when the owner goes (RAII for every fd the daemon and
// the clients open: sockets, pipes, epoll and event fds).
#pragma once

#include <unistd.h>

#include <utility>

namespace estimator {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  // Closes the descriptor now; returns close()'s result (0 when there was none), for the
  // callers that must know a write-back failed (a file being landed).
  int reset() {
    const int rc = fd_ >= 0 ? ::close(fd_) : 0;
    fd_ = -1;
    return rc;
  }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_ = -1;
};

}  // namespace estimator
