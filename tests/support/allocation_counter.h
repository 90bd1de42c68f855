// SPDX-License-Identifier: Apache-2.0
// Counting heap allocations, for the tests that prove a path allocates nothing (DESIGN.md
// section 7). Replaces the global operator new and delete (every form, aligned included)
// with versions that count while an AllocationWindow is open.
//
// Include in exactly ONE .cpp file of a test executable: the replacements are definitions,
// and a binary has one operator new. Only operator new is counted; a test that must also
// see malloc (Eigen's workspaces) replaces malloc itself (tests/models/keras_alloc_test.cpp).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

namespace estimator::testing {

inline std::atomic<bool> g_counting_allocations{false};
inline std::atomic<long> g_allocations{0};

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

inline void* counted_alloc(std::size_t n, std::size_t align = 0) {
  if (g_counting_allocations.load(std::memory_order_relaxed)) {
    g_allocations.fetch_add(1, std::memory_order_relaxed);
  }
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
