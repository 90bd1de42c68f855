// SPDX-License-Identifier: Apache-2.0
#include "shm/sigbus_guard.h"

#include <signal.h>
#include <sys/mman.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <mutex>
#include <utility>

namespace estimator::shm {
namespace {

// One watched mapping. `base` is written last on registration and cleared first on
// removal, so the handler never sees a half-written entry as live.
struct Watched {
  std::atomic<std::uintptr_t> base{0};
  std::atomic<std::size_t> bytes{0};
  std::atomic<bool> tripped{false};
  std::atomic<bool> taken{false};  // the slot of the array belongs to a SigbusGuard
};
static_assert(std::atomic<std::uintptr_t>::is_always_lock_free &&
                  std::atomic<std::size_t>::is_always_lock_free &&
                  std::atomic<bool>::is_always_lock_free,
              "the signal handler may only use lock-free atomics");

Watched g_watched[SigbusGuard::kMaxWatched];
struct sigaction g_previous {};
std::once_flag g_installed;

void chain(int sig, siginfo_t* info, void* context) {
  if ((g_previous.sa_flags & SA_SIGINFO) != 0 && g_previous.sa_sigaction != nullptr) {
    g_previous.sa_sigaction(sig, info, context);
    return;
  }
  if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN) {
    g_previous.sa_handler(sig);
    return;
  }
  // Default (or ignored, which the kernel does not honour for a fault): restore it and
  // re-raise; the signal is blocked in this handler, so it lands when we return and the
  // process dies of SIGBUS as it would have without us.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(SIGBUS, &dfl, nullptr);
  raise(SIGBUS);
}

void on_sigbus(int sig, siginfo_t* info, void* context) {
  const int saved_errno = errno;
  const auto addr = reinterpret_cast<std::uintptr_t>(info != nullptr ? info->si_addr : nullptr);
  const bool fault = info != nullptr && info->si_code > 0;  // not kill()/sigqueue()
  for (Watched& w : g_watched) {
    const std::uintptr_t base = w.base.load(std::memory_order_acquire);
    if (!fault || base == 0) continue;
    const std::size_t bytes = w.bytes.load(std::memory_order_relaxed);
    if (addr < base || addr - base >= bytes) continue;
    // mmap is a plain system call: async-signal-safe in practice on Linux.
    void* p = mmap(reinterpret_cast<void*>(base), bytes, PROT_READ | PROT_WRITE,
                   MAP_FIXED | MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (p == MAP_FAILED) break;  // cannot repair: behave as if unwatched
    w.tripped.store(true, std::memory_order_release);
    errno = saved_errno;
    return;  // the faulting access retries on the zero pages
  }
  errno = saved_errno;
  chain(sig, info, context);
}

void install() {
  struct sigaction sa {};
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, &g_previous);
}

}  // namespace

Result<SigbusGuard> SigbusGuard::watch(void* base, std::size_t bytes) {
  std::call_once(g_installed, install);
  for (int i = 0; i < kMaxWatched; ++i) {
    Watched& w = g_watched[i];
    bool expected = false;
    if (!w.taken.compare_exchange_strong(expected, true, std::memory_order_acq_rel)) continue;
    w.tripped.store(false, std::memory_order_relaxed);
    w.bytes.store(bytes, std::memory_order_relaxed);
    w.base.store(reinterpret_cast<std::uintptr_t>(base), std::memory_order_release);
    return SigbusGuard(i);
  }
  return Status(Code::kResourceExhausted,
                "this process already maps " + std::to_string(kMaxWatched) + " segments");
}

SigbusGuard::SigbusGuard(SigbusGuard&& other) noexcept
    : index_(std::exchange(other.index_, -1)) {}

SigbusGuard& SigbusGuard::operator=(SigbusGuard&& other) noexcept {
  if (this != &other) {
    SigbusGuard gone(std::move(*this));
    index_ = std::exchange(other.index_, -1);
  }
  return *this;
}

SigbusGuard::~SigbusGuard() {
  if (index_ < 0) return;
  Watched& w = g_watched[index_];
  w.base.store(0, std::memory_order_release);
  w.taken.store(false, std::memory_order_release);
}

bool SigbusGuard::tripped() const {
  return index_ >= 0 && g_watched[index_].tripped.load(std::memory_order_acquire);
}

}  // namespace estimator::shm
