// SPDX-License-Identifier: Apache-2.0
// The machine's own limits, measured in the same run as the modes that carry requests:
//
//   cacheline - two processes ping-pong one 8-byte flag on one shared cache line: the
//               client stores 2s+1, the server, spinning, stores 2s+2, the client, spinning,
//               sees it. No payload, no copy: the least a hot cross-process round trip
//               costs (two cache-line transfers), the bound under the floor and the ring.
//   futex     - the same ping-pong on a shared 32-bit word, but neither side ever spins:
//               the client sets the word and FUTEX_WAKEs the server, then FUTEX_WAITs; the
//               server, asleep in FUTEX_WAIT, answers and FUTEX_WAKEs it. Two sleeps and
//               two wake-ups per round trip: the least a sleeping daemon can cost, which
//               the sleeping ring (semaphores are futexes underneath) is compared with.
//   memcpy    - one copy of the case's request bytes within this process: what moving the
//               request once costs with no second process at all.
//
// The reply check of the two ping-pongs is the flag itself: the server writes the value
// that answers exactly this round trip, so a stale or lost answer never passes.
#include <linux/futex.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <new>
#include <string>

#include "bench/child.h"
#include "bench/modes.h"
#include "bench/spin.h"
#include "shm/wait.h"

namespace estimator::bench {
namespace {

// One page shared with the child; the control block sits at its start. The flag shares
// its cache line with nothing the peer writes except the flag itself.
struct alignas(64) PingPong {
  std::atomic<std::uint64_t> flag{0};  // cacheline: 2s+1 asked, 2s+2 answered; kStop
  alignas(64) std::atomic<std::uint32_t> word{0};  // futex: the same protocol, 32 bits
  alignas(64) std::atomic<std::int32_t> client_cpu{-1};
  std::atomic<std::int32_t> server_cpu{-1};
};
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(sizeof(std::atomic<std::uint32_t>) == 4, "a futex is a 32-bit word");

constexpr std::uint64_t kStop = ~std::uint64_t{0};
constexpr std::uint32_t kStopWord = ~std::uint32_t{0};
constexpr long kFirstNapNs = 100'000;  // an idle spinning server naps, as the floor's does
constexpr long kLastNapNs = 16'000'000;

std::uint64_t to_ns(std::chrono::nanoseconds d) { return static_cast<std::uint64_t>(d.count()); }

// Shared-memory futexes (no FUTEX_PRIVATE_FLAG: the two processes map the word at
// different addresses of different address spaces).
long futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected, const timespec* t) {
  return syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT, expected, t,
                 nullptr, 0);
}
void futex_wake(std::atomic<std::uint32_t>& word) {
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE, 1, nullptr, nullptr,
          0);
}

timespec relative(std::uint64_t ns) {
  return timespec{static_cast<time_t>(ns / 1'000'000'000U),
                  static_cast<long>(ns % 1'000'000'000U)};
}

int serve_cacheline(PingPong& pp, std::uint64_t spin_ns, const Child::Ready& ready) {
  const pid_t parent = getppid();
  ready(Status::Ok());
  for (;;) {
    std::uint64_t v = 0;
    const auto asked = [&] {
      v = pp.flag.load(std::memory_order_acquire);
      return (v & 1) != 0;
    };
    bool got = spin_or_yield(asked, spin_ns, pp.server_cpu, pp.client_cpu);
    for (long nap_ns = kFirstNapNs; !got; nap_ns = std::min(2 * nap_ns, kLastNapNs)) {
      if (getppid() != parent) return 0;
      const timespec nap{0, nap_ns};
      nanosleep(&nap, nullptr);
      got = asked();
    }
    if (v == kStop) return 0;
    pp.flag.store(v + 1, std::memory_order_release);
  }
}

int serve_futex(PingPong& pp, const Child::Ready& ready) {
  const pid_t parent = getppid();
  ready(Status::Ok());
  for (;;) {
    const std::uint32_t v = pp.word.load(std::memory_order_acquire);
    if (v == kStopWord) return 0;
    if ((v & 1) == 0) {
      // Asleep until asked; the timeout only lets an orphan notice its parent is gone.
      const timespec t = relative(100'000'000);
      futex_wait(pp.word, v, &t);
      if (getppid() != parent) return 0;
      continue;
    }
    pp.word.store(v + 1, std::memory_order_release);
    futex_wake(pp.word);
  }
}

// The mapping and the child, shared by both ping-pongs.
class PingPongMode : public Mode {
 public:
  ~PingPongMode() override {
    if (pp_ != nullptr) {
      pp_->flag.store(kStop, std::memory_order_release);
      pp_->word.store(kStopWord, std::memory_order_release);
      futex_wake(pp_->word);
    }
    if (child_ != nullptr) child_->stop();
    if (pp_ != nullptr) munmap(pp_, sizeof(PingPong));
  }

  Status map() {
    void* p = mmap(nullptr, sizeof(PingPong), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                   -1, 0);
    if (p == MAP_FAILED) {
      return Status(Code::kResourceExhausted, "mmap: " + std::string(std::strerror(errno)));
    }
    pp_ = new (p) PingPong();
    return Status::Ok();
  }

  std::unique_ptr<Child> child_;
  PingPong* pp_ = nullptr;

 protected:
  Status lost(std::string_view what) {
    return Status(child_->running() ? Code::kDeadlineExceeded : Code::kUnavailable,
                  std::string(what) + ": no answer within the timeout");
  }
};

class CachelineMode final : public PingPongMode {
 public:
  explicit CachelineMode(const ModeOptions& options)
      : timeout_ns_(to_ns(options.timeout)) {}

  Status run(std::size_t, std::size_t count, Clock::time_point deadline,
             Samples* out) override {
    PingPong& pp = *pp_;
    for (std::size_t i = 0; i < count; ++i) {
      const std::uint64_t answered = 2 * ++seq_ + 2;
      const auto t0 = Clock::now();
      pp.flag.store(answered - 1, std::memory_order_release);
      const bool ok =
          spin_or_yield([&] { return pp.flag.load(std::memory_order_acquire) == answered; },
               timeout_ns_, pp.client_cpu, pp.server_cpu);
      const auto t1 = Clock::now();
      if (!ok) return lost("cacheline");
      if (out != nullptr) out->add(elapsed_ns(t0, t1));
      if (t1 >= deadline) break;
    }
    return Status::Ok();
  }

 private:
  std::uint64_t timeout_ns_;
  std::uint64_t seq_ = 0;
};

class FutexMode final : public PingPongMode {
 public:
  explicit FutexMode(const ModeOptions& options) : timeout_ns_(to_ns(options.timeout)) {}

  Status run(std::size_t, std::size_t count, Clock::time_point deadline,
             Samples* out) override {
    PingPong& pp = *pp_;
    for (std::size_t i = 0; i < count; ++i) {
      // 2^31 round trips before the word would wrap into kStopWord: far beyond any run.
      const std::uint32_t answered = 2 * ++seq_ + 2;
      const auto t0 = Clock::now();
      pp.word.store(answered - 1, std::memory_order_release);
      futex_wake(pp.word);
      const std::uint64_t end = shm::monotonic_ns() + timeout_ns_;
      for (;;) {
        const std::uint32_t v = pp.word.load(std::memory_order_acquire);
        if (v == answered) break;
        const std::uint64_t now = shm::monotonic_ns();
        if (now >= end) return lost("futex");
        const timespec t = relative(end - now);
        futex_wait(pp.word, v, &t);
      }
      const auto t1 = Clock::now();
      if (out != nullptr) out->add(elapsed_ns(t0, t1));
      if (t1 >= deadline) break;
    }
    return Status::Ok();
  }

 private:
  std::uint64_t timeout_ns_;
  std::uint32_t seq_ = 0;
};

class MemcpyMode final : public Mode {
 public:
  explicit MemcpyMode(const std::vector<Case>& cases)
      : cases_(cases), dst_(request_capacity() / 8 + 1) {}

  Status run(std::size_t index, std::size_t count, Clock::time_point deadline,
             Samples* out) override {
    const Case& c = cases_[index];
    const std::size_t n = c.request.size();
    if (n > dst_.size() * 8) return Status(Code::kTooLarge, "memcpy: request too large");
    auto* dst = reinterpret_cast<std::uint8_t*>(dst_.data());
    for (std::size_t i = 0; i < count; ++i) {
      // The barrier keeps the copy inside the timed window; the destination's first
      // byte is spoiled after each check, so a copy that did not happen cannot pass.
      const auto t0 = Clock::now();
      std::memcpy(dst, c.request.data(), n);
      asm volatile("" : : "r"(dst) : "memory");
      const auto t1 = Clock::now();
      const std::size_t tail = std::min<std::size_t>(n, 8);
      if (n == 0 || dst[0] != c.request[0] ||
          std::memcmp(dst + n - tail, c.request.data() + n - tail, tail) != 0) {
        return Status(Code::kInternal, "memcpy: the copy differs from the request");
      }
      dst[0] = static_cast<std::uint8_t>(~c.request[0]);
      if (out != nullptr) out->add(elapsed_ns(t0, t1));
      if (t1 >= deadline) break;
    }
    return Status::Ok();
  }

 private:
  const std::vector<Case>& cases_;
  std::vector<std::uint64_t> dst_;
};

}  // namespace

Result<std::unique_ptr<Mode>> start_cacheline(const ModeOptions& options) {
  auto mode = std::make_unique<CachelineMode>(options);
  if (Status s = mode->map(); !s.ok()) return s;
  const std::uint64_t spin_ns = to_ns(options.spin);
  PingPong* pp = mode->pp_;
  auto child = Child::spawn("cacheline server", [pp, spin_ns](const Child::Ready& ready) {
    return serve_cacheline(*pp, spin_ns, ready);
  });
  if (!child.ok()) return child.status();
  mode->child_ = std::move(child).value();
  if (Status s = mode->child_->wait_ready(std::chrono::milliseconds(10000)); !s.ok()) return s;
  return std::unique_ptr<Mode>(std::move(mode));
}

Result<std::unique_ptr<Mode>> start_futex(const ModeOptions& options) {
  auto mode = std::make_unique<FutexMode>(options);
  if (Status s = mode->map(); !s.ok()) return s;
  PingPong* pp = mode->pp_;
  auto child = Child::spawn("futex server", [pp](const Child::Ready& ready) {
    return serve_futex(*pp, ready);
  });
  if (!child.ok()) return child.status();
  mode->child_ = std::move(child).value();
  if (Status s = mode->child_->wait_ready(std::chrono::milliseconds(10000)); !s.ok()) return s;
  return std::unique_ptr<Mode>(std::move(mode));
}

std::unique_ptr<Mode> start_memcpy(const std::vector<Case>& cases) {
  return std::make_unique<MemcpyMode>(cases);
}

}  // namespace estimator::bench
