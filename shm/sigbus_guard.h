// SPDX-License-Identifier: Apache-2.0
// Survives a peer that shrinks the segment. Any process that may open the segment can
// ftruncate it; the next touch of a page beyond the new end raises SIGBUS, which would
// kill the daemon and every attached client. As Wayland compositors do for a client that
// shrinks its shm pool, a process-wide SIGBUS handler maps anonymous zero pages over the
// whole registered mapping and returns, so the access retries and reads zeros; the
// mapping's owner sees tripped() (and zeros: the header's state reads "initializing") and
// lays out or attaches a new segment.
//
// The handler is installed once per process, on the first watch(), and chains to the
// handler it replaced for any SIGBUS outside a registered mapping (a default disposition
// still kills the process). The registry is a fixed array of atomics: the handler
// allocates nothing and takes no lock.
#pragma once

#include <cstddef>

#include "common/status.h"

namespace estimator::shm {

class SigbusGuard {
 public:
  // Registers [base, base + bytes). Fails only when the process already watches
  // kMaxWatched mappings.
  static Result<SigbusGuard> watch(void* base, std::size_t bytes);
  static constexpr int kMaxWatched = 1024;

  SigbusGuard() = default;
  SigbusGuard(SigbusGuard&& other) noexcept;
  SigbusGuard& operator=(SigbusGuard&& other) noexcept;
  SigbusGuard(const SigbusGuard&) = delete;
  SigbusGuard& operator=(const SigbusGuard&) = delete;
  // Unregisters; the mapping must be unmapped after this, never before (a fault in the
  // gap would reach the previous handler).
  ~SigbusGuard();

  // True once a fault hit the mapping: it has been replaced by private zero pages.
  bool tripped() const;

 private:
  explicit SigbusGuard(int index) : index_(index) {}
  int index_ = -1;
};

}  // namespace estimator::shm
