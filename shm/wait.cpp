// SPDX-License-Identifier: Apache-2.0
#include "shm/wait.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>

namespace estimator::shm {
namespace {

// Not FUTEX_PRIVATE_FLAG: waiter and poster are different processes.
long futex(ShmSemaphore* sem, int op, std::uint32_t value, const timespec* deadline) {
  return syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&sem->count), op, value, deadline,
                 nullptr, FUTEX_BITSET_MATCH_ANY);
}

bool try_take(ShmSemaphore* sem) {
  std::uint32_t c = sem->count.load(std::memory_order_relaxed);
  while (c != 0) {
    if (sem->count.compare_exchange_weak(c, c - 1, std::memory_order_acquire,
                                         std::memory_order_relaxed)) {
      return true;
    }
  }
  return false;
}

}  // namespace

void sem_init_shared(ShmSemaphore* sem) {
  sem->count.store(0);
  for (auto& r : sem->reserved) r = 0;
}

void sem_post_shared(ShmSemaphore* sem) {
  sem->count.fetch_add(1, std::memory_order_release);
  futex(sem, FUTEX_WAKE, 1, nullptr);  // errors change nothing: the count is up
}

bool sem_wait_until(ShmSemaphore* sem, std::uint64_t deadline_ns) {
  const timespec ts{static_cast<time_t>(deadline_ns / 1'000'000'000ULL),
                    static_cast<long>(deadline_ns % 1'000'000'000ULL)};
  for (;;) {
    if (try_take(sem)) return true;
    if (monotonic_ns() >= deadline_ns) return false;
    // Sleeps only while the count is still 0 (the kernel compares it atomically), until
    // the absolute CLOCK_MONOTONIC deadline (FUTEX_WAIT_BITSET's clock). A wake-up, a
    // changed count (EAGAIN) or a signal (EINTR) all lead back to try_take.
    if (futex(sem, FUTEX_WAIT_BITSET, 0, &ts) != 0 && errno != ETIMEDOUT && errno != EAGAIN &&
        errno != EINTR) {
      // A peer scribbled on the word (or the kernel refused): back off so that callers
      // looping on waits do not turn into a busy loop.
      const timespec pause{0, 1'000'000};
      nanosleep(&pause, nullptr);
    }
  }
}

void sem_drain(ShmSemaphore* sem) { sem->count.store(0, std::memory_order_relaxed); }

}  // namespace estimator::shm
