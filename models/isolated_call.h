// SPDX-License-Identifier: Apache-2.0
// Runs a piece of third-party parsing code in a forked child process, so that a file that
// makes it crash or hang costs one refused model instead of the daemon.
//
// Why: HDF5 (Debian's 1.10) does not survive every corrupted file: a flipped byte can make
// it read out of bounds (SIGSEGV) or loop forever. Model files may arrive from a model
// server or a shared volume, so the daemon must treat them as hostile; a process boundary
// is the only defence that does not depend on the library's correctness.
//
// The child is a fork of the calling process: it sees the caller's memory (the file bytes
// need no copying), runs `body`, sends back its Result<std::string> through a pipe and
// exits with _exit. Only the calling thread exists in the child, so `body` must not take a
// lock another thread could have held at the fork (logging, for one): the caller holds the
// locks `body` needs across the call and `body` releases them first (it runs on the thread
// that owns them).
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace estimator::models {

struct IsolationLimits {
  std::chrono::milliseconds timeout{10'000};  // then the child is killed
  std::size_t max_output = 256U << 20U;       // bytes body may send back
};

// body's Result, or: kInvalidArgument "<what>: the parser crashed (signal N) ..." when
// the child dies, kDeadlineExceeded when it runs past the timeout, kResourceExhausted
// when the process cannot fork or the result is too large.
Result<std::string> call_isolated(std::string_view what,
                                  const std::function<Result<std::string>()>& body,
                                  const IsolationLimits& limits = {});

}  // namespace estimator::models
