// SPDX-License-Identifier: Apache-2.0
// Kepler weight JSON: both formulas, categorical variables, column mapping, refusals.
// Expected values are worked out by hand next to each check.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "test_util.h"

namespace estimator::models {
namespace {

using testing::evaluate;
using testing::must_load;
using testing::rows;
using testing::weight_folder;

constexpr const char* kMeta =
    R"({"model_name": "Hand_1", "model_class": "weight", "model_file": "weights.json"})";

// package: bias 10, Sky Lake +2.5, Haswell -1, cpu_cycles 2/4, cache_miss 3/0.5.
// dram:    bias 1, cpu_cycles 1/2, cache_miss skipped (scale 0).
constexpr const char* kScaleWeights = R"({
  "model_name": "Hand_1",
  "package": {"All_Weights": {
    "Bias_Weight": 10.0,
    "Categorical_Variables": {"cpu_architecture": {
      "Sky Lake": {"weight": 2.5}, "Haswell": {"weight": -1.0}}},
    "Numerical_Variables": {
      "cpu_cycles": {"scale": 4.0, "weight": 2.0},
      "cache_miss": {"scale": 0.5, "weight": 3.0}}}},
  "dram": {"All_Weights": {
    "Bias_Weight": 1.0,
    "Categorical_Variables": {},
    "Numerical_Variables": {
      "cpu_cycles": {"scale": 2.0, "weight": 1.0},
      "cache_miss": {"scale": 0.0, "weight": 100.0}}}}})";

TEST(WeightModel, ScaleFormulaWithCategorical) {
  auto sut = must_load(weight_folder("mem", kMeta, kScaleWeights));
  ASSERT_NE(sut, nullptr);
  EXPECT_EQ(sut->info().name, "Hand_1");
  EXPECT_EQ(sut->info().trainer, "Hand");
  EXPECT_EQ(sut->info().model_class, "weight");
  EXPECT_EQ(sut->info().components, (std::vector<std::string>{"package", "dram"}));
  EXPECT_EQ(sut->info().features, (std::vector<std::string>{"cpu_cycles", "cache_miss"}));

  const std::vector<SystemValue> sky{{"cpu_architecture", "Sky Lake"}};
  auto e = evaluate(*sut, {"cpu_cycles", "cache_miss"}, rows({{8, 1}, {0, 0.25F}}), sky);
  ASSERT_TRUE(e.status.ok()) << e.status.to_string();
  // package row 0: 10 + 2.5 + 2*8/4 + 3*1/0.5 = 10 + 2.5 + 4 + 6 = 22.5
  EXPECT_FLOAT_EQ(e.out(0, 0), 22.5F);
  // dram row 0: 1 + 1*8/2 (+ cache_miss skipped: scale 0) = 5
  EXPECT_FLOAT_EQ(e.out(0, 1), 5.0F);
  // package row 1: 10 + 2.5 + 0 + 3*0.25/0.5 = 14
  EXPECT_FLOAT_EQ(e.out(1, 0), 14.0F);
  // dram row 1: 1 + 0 = 1
  EXPECT_FLOAT_EQ(e.out(1, 1), 1.0F);
}

TEST(WeightModel, CategoricalValueSelection) {
  auto sut = must_load(weight_folder("mem", kMeta, kScaleWeights));
  ASSERT_NE(sut, nullptr);
  const auto x = rows({{8, 1}});
  // No system value: 10 + 4 + 6 = 20.
  EXPECT_FLOAT_EQ(evaluate(*sut, {"cpu_cycles", "cache_miss"}, x).out(0, 0), 20.0F);
  // Haswell: 10 - 1 + 4 + 6 = 19.
  EXPECT_FLOAT_EQ(evaluate(*sut, {"cpu_cycles", "cache_miss"}, x,
                           {{"cpu_architecture", "Haswell"}})
                      .out(0, 0),
                  19.0F);
  // A value the model does not know contributes 0: 20.
  EXPECT_FLOAT_EQ(evaluate(*sut, {"cpu_cycles", "cache_miss"}, x,
                           {{"cpu_architecture", "Zen 4"}})
                      .out(0, 0),
                  20.0F);
  // Another system feature's value is not looked up under cpu_architecture: 20.
  EXPECT_FLOAT_EQ(evaluate(*sut, {"cpu_cycles", "cache_miss"}, x, {{"vendor", "Sky Lake"}})
                      .out(0, 0),
                  20.0F);
}

TEST(WeightModel, MeanVarianceFormulaAndClamping) {
  // The pre-October-2023 form; cpu_time has variance 0 and is skipped.
  const char* weights = R"({"All_Weights": {
    "Bias_Weight": 5.0,
    "Categorical_Variables": {},
    "Numerical_Variables": {
      "cpu_instr": {"mean": 10.0, "variance": 4.0, "weight": 3.0},
      "cpu_time": {"mean": 1.0, "variance": 0.0, "weight": 50.0}}}})";
  auto sut = must_load(weight_folder("mem", kMeta, weights));
  ASSERT_NE(sut, nullptr);
  // Single-component files are the node total (platform) model.
  EXPECT_EQ(sut->info().components, (std::vector<std::string>{"platform"}));

  auto e = evaluate(*sut, {"cpu_instr", "cpu_time"}, rows({{14, 7}, {4, 7}, {10, 0}}));
  ASSERT_TRUE(e.status.ok()) << e.status.to_string();
  // 5 + 3*(14-10)/sqrt(4) = 5 + 6 = 11
  EXPECT_FLOAT_EQ(e.out(0, 0), 11.0F);
  // 5 + 3*(4-10)/2 = 5 - 9 = -4, clamped to 0
  EXPECT_FLOAT_EQ(e.out(1, 0), 0.0F);
  // 5 + 0 = 5
  EXPECT_FLOAT_EQ(e.out(2, 0), 5.0F);
}

TEST(WeightModel, ClampsNegativeScaleResults) {
  const char* weights = R"({"package": {"All_Weights": {"Bias_Weight": -10.0,
    "Numerical_Variables": {"cpu_cycles": {"scale": 1.0, "weight": 1.0}}}}})";
  auto sut = must_load(weight_folder("mem", kMeta, weights));
  ASSERT_NE(sut, nullptr);
  auto e = evaluate(*sut, {"cpu_cycles"}, rows({{3}, {12}}));
  ASSERT_TRUE(e.status.ok());
  EXPECT_FLOAT_EQ(e.out(0, 0), 0.0F);  // -10 + 3 = -7 -> 0
  EXPECT_FLOAT_EQ(e.out(1, 0), 2.0F);  // -10 + 12 = 2
}

TEST(WeightModel, MapsColumnsByNameIgnoringExtrasAndOrder) {
  auto sut = must_load(weight_folder("mem", kMeta, kScaleWeights));
  ASSERT_NE(sut, nullptr);
  auto e = evaluate(*sut, {"bpf_net_tx_irq", "cache_miss", "task_clock_ms", "cpu_cycles"},
                    rows({{99, 1, -5, 8}}), {{"cpu_architecture", "Sky Lake"}});
  ASSERT_TRUE(e.status.ok()) << e.status.to_string();
  EXPECT_FLOAT_EQ(e.out(0, 0), 22.5F);  // as in ScaleFormulaWithCategorical
  EXPECT_FLOAT_EQ(e.out(0, 1), 5.0F);
}

TEST(WeightModel, FeatureOrderFollowsMetadata) {
  const char* meta = R"({"model_name": "Hand_1", "model_class": "weight",
    "model_file": "weights.json", "features": ["cache_miss", "cpu_cycles"]})";
  auto sut = must_load(weight_folder("mem", meta, kScaleWeights));
  ASSERT_NE(sut, nullptr);
  EXPECT_EQ(sut->info().features, (std::vector<std::string>{"cache_miss", "cpu_cycles"}));
}

TEST(WeightModel, MissingFeaturesAreNamed) {
  auto sut = must_load(weight_folder("mem", kMeta, kScaleWeights));
  ASSERT_NE(sut, nullptr);
  auto one = evaluate(*sut, {"cpu_cycles", "bpf_cpu_time_ms"}, rows({{1, 2}}));
  EXPECT_EQ(one.status.code(), Code::kMissingFeatures);
  EXPECT_EQ(one.status.message(),
            "model Hand_1 needs features missing from the request: cache_miss");
  auto both = evaluate(*sut, {"cpu_instr"}, rows({{1}}));
  EXPECT_EQ(both.status.code(), Code::kMissingFeatures);
  EXPECT_EQ(both.status.message(),
            "model Hand_1 needs features missing from the request: cpu_cycles, cache_miss");
  EXPECT_EQ(sut->missing_from(std::vector<std::string_view>{"cache_miss"}), "cpu_cycles");
}

TEST(WeightModel, ScaleZeroFeatureIsStillRequired) {
  // Kepler maps every listed feature, even one whose term is skipped.
  const char* weights = R"({"dram": {"All_Weights": {"Bias_Weight": 1.0,
    "Numerical_Variables": {"cache_miss": {"scale": 0.0, "weight": 100.0}}}}})";
  auto sut = must_load(weight_folder("mem", kMeta, weights));
  ASSERT_NE(sut, nullptr);
  EXPECT_EQ(evaluate(*sut, {}, rows({})).status.code(), Code::kMissingFeatures);
  auto e = evaluate(*sut, {"cache_miss"}, rows({{1e6F}}));
  ASSERT_TRUE(e.status.ok());
  EXPECT_FLOAT_EQ(e.out(0, 0), 1.0F);
}

TEST(WeightModel, OldComponentNamePkgIsPackage) {
  const char* weights = R"({"pkg": {"All_Weights": {"Bias_Weight": 1.0,
    "Numerical_Variables": {"x": {"scale": 1.0, "weight": 1.0}}}}})";
  auto sut = must_load(weight_folder("mem", kMeta, weights));
  ASSERT_NE(sut, nullptr);
  EXPECT_EQ(sut->info().components, (std::vector<std::string>{"package"}));
}

TEST(WeightModel, PredictChecksShapesPlansAndValues) {
  auto sut = must_load(weight_folder("mem", kMeta, kScaleWeights));
  ASSERT_NE(sut, nullptr);
  const std::vector<std::string_view> cols{"cpu_cycles", "cache_miss"};
  auto plan = sut->plan(cols);
  ASSERT_TRUE(plan.ok());

  RowMatrixF x = rows({{1, 2}});
  RowMatrixF out(1, 2);
  const ModelInput in{ConstMatrixView(x.data(), 1, 2), {}, {}};

  RowMatrixF wrong(1, 3);
  EXPECT_EQ(sut->predict(**plan, in, MatrixView(wrong.data(), 1, 3)).code(),
            Code::kInvalidArgument);

  RowMatrixF x3 = rows({{1, 2, 3}});
  const ModelInput in3{ConstMatrixView(x3.data(), 1, 3), {}, {}};
  EXPECT_EQ(sut->predict(**plan, in3, MatrixView(out.data(), 1, 2)).code(),
            Code::kInvalidArgument);

  RowMatrixF bad = rows({{1, std::nanf("")}});
  const ModelInput in_nan{ConstMatrixView(bad.data(), 1, 2), {}, {}};
  const Status s = sut->predict(**plan, in_nan, MatrixView(out.data(), 1, 2));
  EXPECT_EQ(s.code(), Code::kInvalidValue);
  EXPECT_NE(s.message().find("cache_miss"), std::string::npos) << s.message();

  const ModelInput in_ok{ConstMatrixView(x.data(), 1, 2), {}, {}};
  ASSERT_TRUE(sut->predict(**plan, in_ok, MatrixView(out.data(), 1, 2)).ok());
  // 10 + 2*1/4 + 3*2/0.5 = 10 + 0.5 + 12 = 22.5
  EXPECT_FLOAT_EQ(out(0, 0), 22.5F);
}

// predict() walks rows in blocks of 64 with no branch per row: every row of every block
// is clamped on its own, and a non-finite power anywhere (here past the first block, and
// negative as well as positive) is found and named by its row.
TEST(WeightModel, RowsAcrossBlocksClampAndTheBadRowIsNamed) {
  const char* weights = R"({"package": {"All_Weights": {"Bias_Weight": 0.5,
    "Numerical_Variables": {"cpu_cycles": {"scale": 1.0, "weight": 1.0},
                            "cache_miss": {"scale": 1.0, "weight": 1e300}}}}})";
  auto sut = must_load(weight_folder("mem", kMeta, weights));
  ASSERT_NE(sut, nullptr);
  auto plan = sut->plan(std::vector<std::string_view>{"cpu_cycles", "cache_miss"});
  ASSERT_TRUE(plan.ok());
  constexpr Eigen::Index kRows = 150;
  RowMatrixF x(kRows, 2);
  for (Eigen::Index r = 0; r < kRows; ++r) {
    x(r, 0) = static_cast<float>(r % 3 == 0 ? r : -r);  // 0.5 + x: positive, else clamped
    x(r, 1) = 0;
  }
  RowMatrixF out(kRows, 1);
  const ModelInput in{ConstMatrixView(x.data(), kRows, 2), {}, {}};
  ASSERT_TRUE(sut->predict(**plan, in, MatrixView(out.data(), kRows, 1)).ok());
  for (Eigen::Index r = 0; r < kRows; ++r) {
    EXPECT_EQ(out(r, 0), r % 3 == 0 ? static_cast<float>(r) + 0.5F : 0.0F) << "row " << r;
  }
  for (const float big : {1e30F, -1e30F}) {  // 1e300 * 1e30 overflows a double
    x(131, 1) = big;
    const Status s = sut->predict(**plan, in, MatrixView(out.data(), kRows, 1));
    EXPECT_EQ(s.code(), Code::kInvalidValue) << big;
    EXPECT_NE(s.message().find("overflows on row 131"), std::string::npos) << s.message();
  }
}

// ---- refusals ------------------------------------------------------------------------

Status load_error(const std::string& weights, const std::string& meta = kMeta) {
  Result<std::unique_ptr<Model>> m = load_model(weight_folder("dir/Hand_1", meta, weights));
  EXPECT_FALSE(m.ok()) << "loaded a malformed file:\n" << weights;
  return m.status();
}

void expect_mentions(const Status& s, std::initializer_list<std::string_view> parts) {
  for (std::string_view p : parts) {
    EXPECT_NE(s.message().find(p), std::string::npos)
        << "message \"" << s.message() << "\" lacks \"" << p << "\"";
  }
}

TEST(WeightModelRefusal, TruncatedJson) {
  const Status s = load_error(R"({"package": {"All_Weights": {"Bias_Weight": 1.0,)");
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  expect_mentions(s, {"dir/Hand_1/weights.json", "not valid JSON", "line 1"});
}

TEST(WeightModelRefusal, NanWeightAsString) {
  const Status s = load_error(R"({"package": {"All_Weights": {"Bias_Weight": 1.0,
    "Numerical_Variables": {"cpu_cycles": {"scale": 1.0, "weight": "NaN"}}}}})");
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  expect_mentions(s, {"dir/Hand_1/weights.json",
                      "package.All_Weights.Numerical_Variables.cpu_cycles.weight",
                      "expected a finite number, got string"});
}

TEST(WeightModelRefusal, HugeNumberOverflowsDouble) {
  const Status s = load_error(R"({"package": {"All_Weights": {"Bias_Weight": 1.0,
    "Numerical_Variables": {"cpu_cycles": {"scale": 1.0, "weight": 1e999}}}}})");
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  expect_mentions(s, {"dir/Hand_1/weights.json",
                      "package.All_Weights.Numerical_Variables.cpu_cycles.weight", "1e999"});
}

TEST(WeightModelRefusal, BareNanLiteral) {
  const Status s = load_error(R"({"package": {"All_Weights": {"Bias_Weight": NaN}}})");
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  expect_mentions(s, {"weights.json", "package.All_Weights.Bias_Weight"});
}

TEST(WeightModelRefusal, WrongTypes) {
  expect_mentions(load_error(R"({"package": {"All_Weights": {"Bias_Weight": 1.0,
      "Numerical_Variables": [1, 2]}}})"),
                  {"package.All_Weights.Numerical_Variables", "expected an object, got array"});
  expect_mentions(load_error(R"({"package": 3})"), {"package", "expected an object, got number"});
  expect_mentions(load_error(R"([1, 2, 3])"),
                  {"dir/Hand_1/weights.json", "expected an object, got array"});
  expect_mentions(load_error(R"({"package": {"All_Weights": {"Bias_Weight": true,
      "Numerical_Variables": {}}}})"),
                  {"package.All_Weights.Bias_Weight", "got boolean"});
  expect_mentions(load_error(R"({"package": {"All_Weights": {"Bias_Weight": 1.0,
      "Categorical_Variables": {"cpu_architecture": {"Haswell": {"weight": "x"}}},
      "Numerical_Variables": {}}}})"),
                  {"Categorical_Variables.cpu_architecture.Haswell.weight", "got string"});
}

TEST(WeightModelRefusal, MissingFields) {
  expect_mentions(load_error(R"({"package": {"All_Weights": {
      "Numerical_Variables": {}}}})"),
                  {"package.All_Weights.Bias_Weight: missing"});
  expect_mentions(load_error(R"({"package": {"All_Weights": {"Bias_Weight": 1.0}}})"),
                  {"package.All_Weights.Numerical_Variables: missing"});
  expect_mentions(load_error(R"({"package": {"All_Weights": {"Bias_Weight": 1.0,
      "Numerical_Variables": {"x": {"weight": 1.0}}}}})"),
                  {"Numerical_Variables.x", "\"scale\", or \"mean\" and \"variance\""});
  expect_mentions(load_error(R"({"package": {"All_Weights": {"Bias_Weight": 1.0,
      "Numerical_Variables": {"x": {"scale": 1.0}}}}})"),
                  {"Numerical_Variables.x.weight: missing"});
  expect_mentions(load_error(R"({"model_name": "only"})"), {"weights.json", "All_Weights"});
}

TEST(WeightModelRefusal, NegativeVariance) {
  expect_mentions(load_error(R"({"All_Weights": {"Bias_Weight": 1.0,
      "Numerical_Variables": {"x": {"mean": 1.0, "variance": -4.0, "weight": 1.0}}}})"),
                  {"All_Weights.Numerical_Variables.x.variance", "negative"});
}

// Curve fits load (curvefit_model_test.cpp), but only when a trainer names the curve: the
// weights alone do not say which of the three it is.
TEST(WeightModelRefusal, CurveFitWithoutACurveTrainerIsRefused) {
  const Status s = load_error(R"({"package": {"All_Weights": {"Categorical_Variables": {},
      "Numerical_Variables": {"bpf_cpu_time_ms": {"scale": 95877.0}},
      "CurveFit_Weights": [1.0, 0.5, 2.0]}}})");
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  expect_mentions(s, {"weights.json", "package.All_Weights.CurveFit_Weights", "curve-fit",
                      "need the trainer to choose the curve", "trainer \"Hand\"",
                      "is none of them"});
}

}  // namespace
}  // namespace estimator::models
