// SPDX-License-Identifier: Apache-2.0
// How a side waits for its peer: spin for a bounded time (no syscall, lowest latency while
// traffic flows), then block on a semaphore with a deadline (no CPU while idle). The
// sleep flag that tells the peer to post the semaphore is set only in the blocking phase,
// so a spinning peer is never woken by a syscall.
#pragma once

#include <sched.h>

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

// Calls ready() until it returns true, CLOCK_MONOTONIC reaches end_ns, or the peer turns
// out to run on this very CPU (peer_cpu() == the CPU we run on): spinning then only keeps
// the peer off the CPU it needs, so the caller should block at once. The clock and the
// CPU are read only every 64 polls: the poll is a cache-line load, they are vDSO calls.
template <typename Ready, typename PeerCpu>
bool spin_until_time(Ready&& ready, std::uint64_t end_ns, PeerCpu&& peer_cpu) {
  for (unsigned n = 1;; ++n) {
    cpu_relax();
    if (ready()) return true;
    if ((n & 63) == 0 &&
        (monotonic_ns() >= end_ns || peer_cpu() == static_cast<std::uint32_t>(sched_getcpu()))) {
      return false;
    }
  }
}

// The same for at most spin_ns from now (0: only one look).
template <typename Ready, typename PeerCpu>
bool spin_until(Ready&& ready, std::uint64_t spin_ns, PeerCpu&& peer_cpu) {
  if (ready()) return true;
  if (spin_ns == 0) return false;
  return spin_until_time(ready, monotonic_ns() + spin_ns, peer_cpu);
}

inline constexpr std::uint32_t kUnknownCpu = 0xFFFFFFFFu;

// The ShmSemaphore operations (shm/layout.h). Every futex error is returned or ignored,
// never fatal: the count lives in memory any client can scribble on.
void sem_init_shared(ShmSemaphore* sem);
// Adds one to the count and wakes one waiter.
void sem_post_shared(ShmSemaphore* sem);

// Blocks until the semaphore is posted (true) or CLOCK_MONOTONIC reaches deadline_ns
// (false). EINTR is retried.
bool sem_wait_until(ShmSemaphore* sem, std::uint64_t deadline_ns);

// Consumes posts left over from an earlier use (a post that raced with a successful
// re-check), so the next wait does not return early.
void sem_drain(ShmSemaphore* sem);

}  // namespace estimator::shm
