// SPDX-License-Identifier: Apache-2.0
// Counting heap allocations, for the tests that prove a path allocates nothing (DESIGN.md
// section 7). Replaces the global operator new and delete (every form, aligned included)
// with versions that count while an AllocationWindow is open.
//
// Include in exactly ONE .cpp file of a test executable: the replacements are definitions,
// and a binary has one operator new. Define ESTIMATOR_COUNT_MALLOC before including it to
// count malloc as well (Eigen takes a matrix product's workspace straight from malloc,
// which operator new alone would not see); under a sanitizer, which owns malloc, only
// operator new is counted, and kCountsMalloc says which.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

#if defined(ESTIMATOR_COUNT_MALLOC) && !defined(__SANITIZE_ADDRESS__) && \
    !defined(__SANITIZE_THREAD__)
#if defined(__has_feature)
#if !__has_feature(address_sanitizer) && !__has_feature(thread_sanitizer) && \
    !__has_feature(memory_sanitizer)
#define ESTIMATOR_ALLOCATION_COUNTER_MALLOC 1
#endif
#else
#define ESTIMATOR_ALLOCATION_COUNTER_MALLOC 1
#endif
#endif

namespace estimator::testing {

inline std::atomic<bool> g_counting_allocations{false};
inline std::atomic<long> g_allocations{0};

#ifdef ESTIMATOR_ALLOCATION_COUNTER_MALLOC
inline constexpr bool kCountsMalloc = true;
#else
inline constexpr bool kCountsMalloc = false;
#endif

// The calling thread's own count, for tests where other threads allocate meanwhile.
inline thread_local bool t_counting_allocations = false;
inline thread_local long t_allocations = 0;

inline void count_allocation() {
  if (g_counting_allocations.load(std::memory_order_relaxed)) {
    g_allocations.fetch_add(1, std::memory_order_relaxed);
  }
  if (t_counting_allocations) ++t_allocations;
}

// Counts the allocations of every thread while alive.
class AllocationWindow {
 public:
  AllocationWindow() {
    g_allocations.store(0);
    g_counting_allocations.store(true);
  }
  ~AllocationWindow() { g_counting_allocations.store(false); }
  AllocationWindow(const AllocationWindow&) = delete;
  AllocationWindow& operator=(const AllocationWindow&) = delete;
  long count() const { return g_allocations.load(); }
};

// Counts the allocations of the thread that opened it while alive.
class ThreadAllocationWindow {
 public:
  ThreadAllocationWindow() {
    t_allocations = 0;
    t_counting_allocations = true;
  }
  ~ThreadAllocationWindow() { t_counting_allocations = false; }
  ThreadAllocationWindow(const ThreadAllocationWindow&) = delete;
  ThreadAllocationWindow& operator=(const ThreadAllocationWindow&) = delete;
  long count() const { return t_allocations; }
};

inline void* counted_alloc(std::size_t n, std::size_t align = 0) {
  // With malloc counted, the malloc below counts (aligned_alloc is not counted: count here).
  if (!kCountsMalloc || align != 0) count_allocation();
  if (n == 0) n = 1;
  void* p = align == 0 ? std::malloc(n) : std::aligned_alloc(align, (n + align - 1) / align * align);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

inline void* counted_alloc_nothrow(std::size_t n, std::size_t align = 0) noexcept {
  try {
    return counted_alloc(n, align);
  } catch (...) {
    return nullptr;
  }
}

}  // namespace estimator::testing

#ifdef ESTIMATOR_ALLOCATION_COUNTER_MALLOC
// glibc's own entry point; memory from it is released by glibc's free as usual.
extern "C" void* __libc_malloc(std::size_t n) noexcept;  // NOLINT(bugprone-reserved-identifier)
extern "C" void* malloc(std::size_t n) noexcept {
  estimator::testing::count_allocation();
  return __libc_malloc(n);
}
#endif

void* operator new(std::size_t n) { return estimator::testing::counted_alloc(n); }
void* operator new[](std::size_t n) { return estimator::testing::counted_alloc(n); }
void* operator new(std::size_t n, std::align_val_t a) {
  return estimator::testing::counted_alloc(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a) {
  return estimator::testing::counted_alloc(n, static_cast<std::size_t>(a));
}
void* operator new(std::size_t n, const std::nothrow_t& /*unused*/) noexcept {
  return estimator::testing::counted_alloc_nothrow(n);
}
void* operator new[](std::size_t n, const std::nothrow_t& /*unused*/) noexcept {
  return estimator::testing::counted_alloc_nothrow(n);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t /*unused*/) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t /*unused*/) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t /*unused*/) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t /*unused*/) noexcept { std::free(p); }
void operator delete(void* p, std::size_t /*unused*/, std::align_val_t /*unused*/) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t /*unused*/, std::align_val_t /*unused*/) noexcept {
  std::free(p);
}
