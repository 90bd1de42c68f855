// SPDX-License-Identifier: Apache-2.0
#include "models/isolated_call.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <utility>

namespace estimator::models {
namespace {

// The child's message: one byte of Code, then the payload (Ok) or the error message.
void write_all(int fd, const char* data, std::size_t n) {
  while (n > 0) {
    const ssize_t w = write(fd, data, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    data += w;
    n -= static_cast<std::size_t>(w);
  }
}

[[noreturn]] void run_child(int fd, const std::function<Result<std::string>()>& body) {
  Result<std::string> r = Status(Code::kInternal, "no result");
  try {
    r = body();
  } catch (...) {
    r = Status(Code::kInternal, "the parser threw an exception");
  }
  const char code = static_cast<char>(r.ok() ? Code::kOk : r.status().code());
  write_all(fd, &code, 1);
  const std::string text = r.ok() ? std::move(*r) : r.status().message();
  write_all(fd, text.data(), text.size());
  _exit(0);  // no atexit handlers or static destructors: they belong to the parent
}

std::int64_t now_ms() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000 + ts.tv_nsec / 1'000'000;
}

}  // namespace

Result<std::string> call_isolated(std::string_view what,
                                  const std::function<Result<std::string>()>& body,
                                  const IsolationLimits& limits) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    return Status(Code::kResourceExhausted,
                  std::string(what) + ": cannot create a pipe: " + std::strerror(errno));
  }
  const pid_t pid = fork();
  if (pid < 0) {
    const int err = errno;
    close(fds[0]);
    close(fds[1]);
    return Status(Code::kResourceExhausted,
                  std::string(what) + ": cannot fork the parser: " + std::strerror(err));
  }
  if (pid == 0) {
    close(fds[0]);
    run_child(fds[1], body);
  }
  close(fds[1]);

  std::string out;
  bool too_large = false;
  bool timed_out = false;
  const std::int64_t deadline = now_ms() + limits.timeout.count();
  char buf[65536];
  for (;;) {
    const std::int64_t left = deadline - now_ms();
    if (left <= 0) {
      timed_out = true;
      break;
    }
    pollfd p{fds[0], POLLIN, 0};
    const int ready = poll(&p, 1, static_cast<int>(left));
    if (ready < 0 && errno == EINTR) continue;
    if (ready == 0) {
      timed_out = true;
      break;
    }
    const ssize_t n = read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EOF: the child exited (or closed the pipe)
    if (out.size() + static_cast<std::size_t>(n) > limits.max_output + 1) {
      too_large = true;
      break;
    }
    out.append(buf, static_cast<std::size_t>(n));
  }
  close(fds[0]);
  if (timed_out || too_large) kill(pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }

  const std::string who(what);
  if (timed_out) {
    return Status(Code::kDeadlineExceeded,
                  who + ": the parser did not finish within " +
                      std::to_string(limits.timeout.count()) +
                      " ms (killed); the file is corrupt or hostile");
  }
  if (too_large) {
    return Status(Code::kResourceExhausted, who + ": the parser's result exceeds " +
                                                std::to_string(limits.max_output) + " bytes");
  }
  if (WIFSIGNALED(status)) {
    return Status(Code::kInvalidArgument,
                  who + ": the parser crashed (signal " + std::to_string(WTERMSIG(status)) + ", " +
                      strsignal(WTERMSIG(status)) + "); the file is corrupt or hostile");
  }
  if (out.empty() || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return Status(Code::kInternal, who + ": the parser exited without a result");
  }
  const auto code = static_cast<Code>(static_cast<unsigned char>(out[0]));
  if (code == Code::kOk) return out.substr(1);
  return Status(code, out.substr(1));
}

}  // namespace estimator::models
