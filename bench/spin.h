// SPDX-License-Identifier: Apache-2.0
// The waiting of the bench's own ping-pongs (floor and limits modes): as shm::spin_until
// (a pause per poll, the clock every 64 polls), but it yields instead of pausing while the
// peer was last seen on this CPU. Nothing is pinned, so on a loaded machine both sides can
// share a CPU, and spinning there only keeps the peer off it until the scheduler preempts
// the spinner, milliseconds later. The limits are thus the least a same-CPU handoff costs.
#pragma once

#include <sched.h>

#include <atomic>
#include <cstdint>

#include "shm/wait.h"

namespace estimator::bench {

// True once ready() holds; false after spin_ns. `mine` and `peer` are the CPUs the two
// sides were last seen on; this side refreshes `mine`.
template <typename Ready>
bool spin_or_yield(Ready&& ready, std::uint64_t spin_ns, std::atomic<std::int32_t>& mine,
                   const std::atomic<std::int32_t>& peer) {
  if (ready()) return true;
  const std::uint64_t end = shm::monotonic_ns() + spin_ns;
  bool shared_cpu = false;
  for (unsigned n = 1;; ++n) {
    if (shared_cpu) {
      sched_yield();
    } else {
      shm::cpu_relax();
    }
    if (ready()) return true;
    if ((n & 63) == 0) {
      if (shm::monotonic_ns() >= end) return false;
      const int cpu = sched_getcpu();
      mine.store(cpu, std::memory_order_relaxed);
      shared_cpu = peer.load(std::memory_order_relaxed) == cpu;
    }
  }
}

}  // namespace estimator::bench
