// SPDX-License-Identifier: Apache-2.0
// predict() must not allocate (DESIGN.md section 7), counted by
// tests/support/allocation_counter.h (this binary's operator new).
#include <gtest/gtest.h>


#include "models/embedded_defaults.h"
#include "models/registry.h"
#include "test_util.h"
#include "tests/support/allocation_counter.h"

namespace estimator::models {
namespace {

using testing::make_folder;
using testing::must_load;
using testing::rows;

// Calls predict() once to warm the plan, then `repeat` times, and returns how many
// allocations happened in those.
long allocations_during_predict(const Model& model, std::vector<std::string_view> columns,
                                const RowMatrixF& x, std::vector<SystemValue> system,
                                std::vector<NodePower> node_power, int repeat = 100) {
  auto plan = model.plan(columns);
  EXPECT_TRUE(plan.ok()) << plan.status().to_string();
  if (!plan.ok()) return -1;
  RowMatrixF out(x.rows(), static_cast<Eigen::Index>(model.info().components.size()));
  const ModelInput in{ConstMatrixView(x.data(), x.rows(), x.cols()), system, node_power};
  const MatrixView view(out.data(), out.rows(), out.cols());
  // The first call of a plan may size its scratch memory (a plan serves one request shape
  // on one thread); every call after it must allocate nothing.
  bool all_ok = model.predict(**plan, in, view).ok();

  long count = 0;
  {
    const estimator::testing::AllocationWindow window;
    for (int i = 0; i < repeat; ++i) all_ok = model.predict(**plan, in, view).ok() && all_ok;
    count = window.count();
  }
  EXPECT_TRUE(all_ok);
  return count;
}

TEST(PredictAllocations, CountingHookWorks) {
  // Guards the test itself: a hook that never counts would make the others pass vacuously.
  long count = 0;
  std::vector<int>* p = nullptr;
  {
    const estimator::testing::AllocationWindow window;
    p = new std::vector<int>(100);
    count = window.count();
  }
  delete p;
  EXPECT_GE(count, 2);
}

TEST(PredictAllocations, WeightModelWithCategoricalAndManyRows) {
  auto model = must_load(make_folder(
      "mem/W", {{"metadata.json", R"({"model_name": "W_1", "model_file": "w.json"})"},
                {"w.json", R"({
        "package": {"All_Weights": {"Bias_Weight": 3.0,
          "Categorical_Variables": {"cpu_architecture": {"Sky Lake": {"weight": 1.5},
                                                         "Haswell": {"weight": 2.5}}},
          "Numerical_Variables": {"cpu_cycles": {"scale": 2.0, "weight": 1.0},
                                  "cache_miss": {"mean": 1.0, "variance": 4.0, "weight": 2.0}}}},
        "dram": {"All_Weights": {"Bias_Weight": 1.0,
          "Numerical_Variables": {"cache_miss": {"scale": 0.0, "weight": 1.0},
                                  "cpu_cycles": {"scale": 8.0, "weight": 1.0}}}}})"}}));
  ASSERT_NE(model, nullptr);
  RowMatrixF x = RowMatrixF::Random(500, 3).cwiseAbs();
  EXPECT_EQ(allocations_during_predict(*model, {"cache_miss", "x", "cpu_cycles"}, x,
                                       {{"cpu_architecture", "Haswell"}}, {}),
            0);
}

TEST(PredictAllocations, EmbeddedDefaultsIncludingRatio) {
  const auto registry = Registry::build(embedded_model_folders());
  ASSERT_EQ(registry->models().size(), 5U);
  RowMatrixF x = RowMatrixF::Random(256, 4).cwiseAbs();
  const float package[] = {30, 20};
  const float idle[] = {5, 5};
  const float dram[] = {4};
  for (const std::unique_ptr<Model>& m : registry->models()) {
    EXPECT_EQ(allocations_during_predict(
                  *m, {"bpf_cpu_time_ms", "bpf_page_cache_hit", "cpu_instructions", "cache_miss"},
                  x, {}, {{"package", package, idle}, {"dram", dram, {}}}),
              0)
        << m->info().origin;
  }
}

}  // namespace
}  // namespace estimator::models
