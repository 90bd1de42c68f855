// SPDX-License-Identifier: Apache-2.0
// A Keras model's predict() must not allocate once its Scratch has grown (DESIGN.md
// section 7). Separate binary: it counts malloc itself, not only operator new, because
// Eigen takes its temporaries (a matrix product's workspace) straight from malloc
// (tests/support/allocation_counter.h; under a sanitizer only operator new is counted).
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>

#include "models/keras_model.h"

#define ESTIMATOR_COUNT_MALLOC 1
#include "tests/support/allocation_counter.h"

namespace estimator::models {
namespace {

std::optional<std::string> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

using testing::AllocationWindow;
using testing::kCountsMalloc;

TEST(KerasPredictAllocations, CountingHookWorks) {
  long counted = 0;
  {
    AllocationWindow window;
    void* p = std::malloc(64);
    auto* v = new std::string(100, 'x');
    counted = window.count();
    std::free(p);
    delete v;
  }
  EXPECT_GE(counted, kCountsMalloc ? 2 : 1);
}

TEST(KerasPredictAllocations, HookSeesEigenProductWorkspace) {
  if (!kCountsMalloc) GTEST_SKIP() << "malloc belongs to the sanitizer in this build";
  // Why malloc is counted: a blocked matrix-matrix product of this size takes its
  // workspace from malloc, which counting operator new alone would not see.
  RowMatrixD a = RowMatrixD::Random(500, 512);
  RowMatrixD b = RowMatrixD::Random(512, 512);
  RowMatrixD c(500, 512);
  AllocationWindow window;
  c.noalias() = a * b;
  EXPECT_GT(window.count(), 0);
}

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

  long counted = 0;
  {
    AllocationWindow window;
    for (int i = 0; i < 20; ++i) {
      model.predict(x, out, scratch);
      model.predict(x.topRows(1), out.topRows(1), scratch);
      model.predict(x.middleRows(3, 200), out.middleRows(3, 200), scratch);
    }
    counted = window.count();
  }
  EXPECT_EQ(counted, 0) << name;
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
