// How a side waits for its peer: spin for a bounded time (no syscall, lowest latency while
// traffic flows), then block on a semaphore with a deadline (no CPU while idle). The
// sleep flag that tells the peer to post the semaphore is set only in the blocking phase,
// so a spinning peer is never woken by a syscall.
#pragma once

#include <semaphore.h>

#include <cstdint>

#include "shm/segment.h"

namespace estimator::shm {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// Calls ready() until it returns true or spin_ns have passed. Reads the clock only every
// 64 polls: the poll is a cache-line load, the clock a vDSO call.
template <typename Ready>
bool spin_until(Ready&& ready, std::uint64_t spin_ns) {
  if (ready()) return true;
  if (spin_ns == 0) return false;
  const std::uint64_t end = monotonic_ns() + spin_ns;
  for (unsigned n = 1;; ++n) {
    cpu_relax();
    if (ready()) return true;
    if ((n & 63) == 0 && monotonic_ns() >= end) return false;
  }
}

// Blocks until the semaphore is posted (true) or CLOCK_MONOTONIC reaches deadline_ns
// (false). EINTR is retried.
bool sem_wait_until(sem_t* sem, std::uint64_t deadline_ns);

// Consumes posts left over from an earlier use (a post that raced with a successful
// re-check), so the next wait does not return early.
void sem_drain(sem_t* sem);

}  // namespace estimator::shm
