#include "shm/wait.h"

#include <time.h>

#include <cerrno>

namespace estimator::shm {

bool sem_wait_until(sem_t* sem, std::uint64_t deadline_ns) {
  const timespec ts{static_cast<time_t>(deadline_ns / 1'000'000'000ULL),
                    static_cast<long>(deadline_ns % 1'000'000'000ULL)};
  for (;;) {
    if (sem_clockwait(sem, CLOCK_MONOTONIC, &ts) == 0) return true;
    if (errno == EINTR) continue;
    if (errno != ETIMEDOUT) {
      // EINVAL: a peer scribbled on the semaphore. Back off so callers that loop on
      // waits do not turn into a busy loop.
      const timespec pause{0, 1'000'000};
      nanosleep(&pause, nullptr);
    }
    return false;
  }
}

void sem_drain(sem_t* sem) {
  for (int i = 0; i < 1024 && sem_trywait(sem) == 0; ++i) {
  }
}

}  // namespace estimator::shm
