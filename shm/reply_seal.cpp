// SPDX-License-Identifier: Apache-2.0
#include "shm/reply_seal.h"

#include <pthread.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <bit>
#include <cerrno>
#include <cstring>

namespace estimator::shm {
namespace {

constexpr std::uint64_t kA = 0x9E3779B97F4A7C15ULL;  // 2^64 / golden ratio
constexpr std::uint64_t kB = 0xBF58476D1CE4E5B9ULL;  // the odd multipliers of splitmix64
constexpr std::uint64_t kC = 0x94D049BB133111EBULL;

std::uint64_t load64(const std::uint8_t* p) {
  std::uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// For a fixed lane, a bijection of the word (and for a fixed word, of the lane): a change
// in any one word always changes the lane. One multiplication per word: the hash runs at
// the multiplier's throughput, the eight lanes hiding its latency.
std::uint64_t step(std::uint64_t lane, std::uint64_t word) {
  return std::rotl(lane ^ word, 29) * kA;
}

std::uint64_t finish(std::uint64_t h) {
  h ^= h >> 30;
  h *= kB;
  h ^= h >> 27;
  h *= kC;
  return h ^ (h >> 31);
}

// ---- nonces --------------------------------------------------------------------------

// SipHash-1-3 (Aumasson and Bernstein) of one 8-byte message, as specified in the paper.
std::uint64_t siphash13(std::uint64_t k0, std::uint64_t k1, std::uint64_t m) {
  std::uint64_t v0 = k0 ^ 0x736f6d6570736575ULL;
  std::uint64_t v1 = k1 ^ 0x646f72616e646f6dULL;
  std::uint64_t v2 = k0 ^ 0x6c7967656e657261ULL;
  std::uint64_t v3 = k1 ^ 0x7465646279746573ULL;
  const auto round = [&] {
    v0 += v1;
    v1 = std::rotl(v1, 13);
    v1 ^= v0;
    v0 = std::rotl(v0, 32);
    v2 += v3;
    v3 = std::rotl(v3, 16);
    v3 ^= v2;
    v0 += v3;
    v3 = std::rotl(v3, 21);
    v3 ^= v0;
    v2 += v1;
    v1 = std::rotl(v1, 17);
    v1 ^= v2;
    v2 = std::rotl(v2, 32);
  };
  const std::uint64_t last = std::uint64_t{8} << 56;  // the length byte, no tail bytes
  for (const std::uint64_t block : {m, last}) {
    v3 ^= block;
    round();
    v0 ^= block;
  }
  v2 ^= 0xFF;
  round();
  round();
  round();
  return v0 ^ v1 ^ v2 ^ v3;
}

// Bumped in every forked child: a thread's key is re-drawn when it differs.
std::atomic<std::uint32_t> g_forks{0};

struct NonceSource {
  std::uint64_t k0 = 0;
  std::uint64_t k1 = 0;
  std::uint64_t counter = 0;
  std::uint32_t forks = 0;
  bool keyed = false;

  void rekey() {
    static const int registered = pthread_atfork(nullptr, nullptr, [] { g_forks.fetch_add(1); });
    (void)registered;
    std::uint64_t key[2] = {0, 0};
    auto* p = reinterpret_cast<std::uint8_t*>(key);
    std::size_t got = 0;
    while (got < sizeof key) {
      const ssize_t n = getrandom(p + got, sizeof key - got, 0);
      if (n > 0) {
        got += static_cast<std::size_t>(n);
      } else if (n < 0 && errno != EINTR) {
        break;
      }
    }
    if (got < sizeof key) {
      // No getrandom (a kernel before 3.17, or a seccomp filter): a key a peer could
      // guess only by knowing our clock, pid and stack address to the nanosecond.
      timespec ts{};
      clock_gettime(CLOCK_MONOTONIC, &ts);
      key[0] ^= finish(static_cast<std::uint64_t>(ts.tv_nsec) ^
                       (static_cast<std::uint64_t>(ts.tv_sec) << 32) ^ kA);
      key[1] ^= finish(static_cast<std::uint64_t>(getpid()) ^ reinterpret_cast<std::uintptr_t>(&ts));
    }
    k0 = key[0];
    k1 = key[1];
    forks = g_forks.load(std::memory_order_relaxed);
    keyed = true;
  }
};

}  // namespace

std::uint64_t digest(std::span<const std::uint8_t> bytes, std::uint64_t key) {
  const std::uint8_t* p = bytes.data();
  std::size_t n = bytes.size();
  // Eight independent lanes, each starting from its own function of the key.
  std::uint64_t lane[8];
  for (std::uint64_t i = 0; i < 8; ++i) lane[i] = key + (i + 1) * kB;
  for (; n >= 64; p += 64, n -= 64) {
    for (std::size_t i = 0; i < 8; ++i) lane[i] = step(lane[i], load64(p + 8 * i));
  }
  std::uint64_t h = bytes.size() * kC;
  for (std::size_t i = 0; i < 8; ++i) h = step(h, lane[i]);
  for (; n >= 8; p += 8, n -= 8) h = step(h, load64(p));
  if (n != 0) {
    std::uint64_t tail = 0;
    std::memcpy(&tail, p, n);
    h = step(h, tail);
  }
  return finish(h);
}

std::uint64_t next_nonce() {
  static thread_local NonceSource source;
  if (!source.keyed || source.forks != g_forks.load(std::memory_order_relaxed)) source.rekey();
  for (;;) {
    const std::uint64_t n = siphash13(source.k0, source.k1, ++source.counter);
    if (n != 0) return n;  // 0 is what an unused slot holds
  }
}

}  // namespace estimator::shm
