// A Keras model's predict() must not allocate once its Scratch has grown (DESIGN.md
// section 7). Separate binary: it replaces malloc itself, not only operator new, because
// Eigen takes its temporaries (a matrix product's workspace) straight from malloc.
// Under a sanitizer, which owns malloc, only operator new is counted.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <new>
#include <optional>
#include <string>

#include "models/keras_model.h"

namespace {
std::atomic<bool> g_counting{false};
std::atomic<long> g_allocations{0};

void count() {
  if (g_counting.load(std::memory_order_relaxed)) {
    g_allocations.fetch_add(1, std::memory_order_relaxed);
  }
}
}  // namespace

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define KERAS_ALLOC_TEST_COUNTS_MALLOC 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define KERAS_ALLOC_TEST_COUNTS_MALLOC 0
#endif
#endif
#ifndef KERAS_ALLOC_TEST_COUNTS_MALLOC
#define KERAS_ALLOC_TEST_COUNTS_MALLOC 1
#endif

#if KERAS_ALLOC_TEST_COUNTS_MALLOC
// glibc's own entry point; memory from it is released by glibc's free as usual.
extern "C" void* __libc_malloc(std::size_t n) noexcept;  // NOLINT(bugprone-reserved-identifier)
extern "C" void* malloc(std::size_t n) noexcept {
  count();
  return __libc_malloc(n);
}
#endif

namespace {
void* counted_new(std::size_t n) {
#if !KERAS_ALLOC_TEST_COUNTS_MALLOC
  count();  // otherwise counted in malloc
#endif
  void* p = std::malloc(n == 0 ? 1 : n);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
}  // namespace

void* operator new(std::size_t n) { return counted_new(n); }
void* operator new[](std::size_t n) { return counted_new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t /*unused*/) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t /*unused*/) noexcept { std::free(p); }

namespace estimator::models {
namespace {

std::optional<std::string> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

TEST(KerasPredictAllocations, CountingHookWorks) {
  g_allocations = 0;
  g_counting = true;
  void* p = std::malloc(64);
  auto* v = new std::string(100, 'x');
  g_counting = false;
  std::free(p);
  delete v;
  EXPECT_GE(g_allocations.load(), KERAS_ALLOC_TEST_COUNTS_MALLOC ? 2 : 1);
}

#if KERAS_ALLOC_TEST_COUNTS_MALLOC
TEST(KerasPredictAllocations, HookSeesEigenProductWorkspace) {
  // Why malloc is counted: a blocked matrix-matrix product of this size takes its
  // workspace from malloc, which counting operator new alone would not see.
  RowMatrixD a = RowMatrixD::Random(500, 512);
  RowMatrixD b = RowMatrixD::Random(512, 512);
  RowMatrixD c(500, 512);
  g_allocations = 0;
  g_counting = true;
  c.noalias() = a * b;
  g_counting = false;
  EXPECT_GT(g_allocations.load(), 0);
}
#endif

// Model, rows: wide layers (512 and 100 units) at Kepler's largest request, 500 rows, so a
// matrix-matrix product would need a heap workspace.
void expect_no_allocation(const std::string& path, const std::string& name) {
  const std::optional<std::string> bytes = read_bytes(path);
  if (!bytes) GTEST_SKIP() << "model absent: " << path;
  Result<std::unique_ptr<Regressor>> sut =
      name.ends_with(".keras") ? load_keras_zip(*bytes, name) : load_keras_h5(*bytes, name);
  ASSERT_TRUE(sut.ok()) << sut.status().to_string();
  const Regressor& model = **sut;

  RowMatrixD x = RowMatrixD::Random(500, model.inputs());
  RowMatrixD out(500, model.outputs());
  Scratch scratch;
  model.predict(x, out, scratch);  // grows the scratch once

  g_allocations = 0;
  g_counting = true;
  for (int i = 0; i < 20; ++i) {
    model.predict(x, out, scratch);
    model.predict(x.topRows(1), out.topRows(1), scratch);
    model.predict(x.middleRows(3, 200), out.middleRows(3, 200), scratch);
  }
  g_counting = false;
  EXPECT_EQ(g_allocations.load(), 0) << name;
}

TEST(KerasPredictAllocations, RealSoftmaxModel512Units) {
  expect_no_allocation(std::string(ESTIMATOR_SHARED_DIR) +
                           "/model-samples/keras/"
                           "keras2.2.2_seq_mlp_6-512-16-3_softmax_fixedlen_strings.h5",
                       "keras2.2.2.h5");
}

TEST(KerasPredictAllocations, RealKerasZip100Units) {
  expect_no_allocation(std::string(ESTIMATOR_SHARED_DIR) +
                           "/model-samples/keras/keras3.7_zip_seq_mlp_6-100x3-1_regression.keras",
                       "keras3.7.keras");
}

TEST(KerasPredictAllocations, FixtureWithEveryActivation) {
  expect_no_allocation(std::string(KERAS_FIXTURES_DIR) + "/tfkeras2_activations.h5",
                       "tfkeras2_activations.h5");
}

TEST(KerasPredictAllocations, FixtureActivationBeforeFirstDense) {
  expect_no_allocation(std::string(KERAS_FIXTURES_DIR) + "/keras3_legacy.h5", "keras3_legacy.h5");
}

// BatchNormalization, ReLU with its parameters, LeakyReLU, ELU, Softmax, Reshape.
TEST(KerasPredictAllocations, FixtureWithEveryLayerKind) {
  expect_no_allocation(std::string(KERAS_FIXTURES_DIR) + "/tfkeras2_layers.h5",
                       "tfkeras2_layers.h5");
}

// A Functional DAG: Add, Concatenate, two outputs copied side by side.
TEST(KerasPredictAllocations, FixtureFunctionalGraph) {
  expect_no_allocation(std::string(KERAS_FIXTURES_DIR) + "/functional_dag_k3.keras",
                       "functional_dag_k3.keras");
}

}  // namespace
}  // namespace estimator::models
