// SPDX-License-Identifier: Apache-2.0
// Curve-fit weight files (KEPLER.md section 6): Kepler's published exponential model and
// hand-made exponential, logarithmic and logistic ones, each value worked out next to
// its check; then refusals.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "models/weight_model.h"
#include "test_util.h"
#include "tests/support/files.h"

namespace estimator::models {
namespace {

using estimator::testing::read_file;

namespace fs = std::filesystem;
using testing::evaluate;
using testing::must_load;
using testing::rows;
using testing::weight_folder;

const fs::path kModelDb = fs::path(ESTIMATOR_SHARED_DIR) / "kepler-samples/kepler-model-db-v0.7";
const std::string kPrefix = "ec2-0.7.11__rapl-sysfs_AbsPower_BPFOnly_";

std::string meta(const std::string& model_name) {
  return R"({"model_name": ")" + model_name +
         R"(", "model_class": "curvefit", "model_file": "weights.json"})";
}

// Predictions are float32 (the wire type): compare to 1e-6 relative.
void expect_rel(double got, double want, const char* what) {
  EXPECT_LE(std::abs(got - want), 1e-6 * std::max(std::abs(want), 1.0))
      << what << ": got " << got << ", want " << want;
}

TEST(CurveFitKeplerSample, ExponentialRegressionTrainer0) {
  const fs::path file = kModelDb / (kPrefix + "ExponentialRegressionTrainer_0.json");
  if (!fs::exists(file)) GTEST_SKIP() << "needs " << file;
  // The weight file names no trainer (no model_name): metadata.json's model_name does,
  // as in the model server's zip (ExponentialRegressionTrainer_0.zip/metadata.json).
  auto sut = must_load(weight_folder("ec2/ExponentialRegressionTrainer_0",
                                     meta("ExponentialRegressionTrainer_0"), read_file(file)));
  ASSERT_NE(sut, nullptr);
  EXPECT_EQ(sut->info().model_class, "curvefit");
  EXPECT_EQ(sut->info().trainer, "ExponentialRegressionTrainer");
  EXPECT_EQ(sut->info().components,
            (std::vector<std::string>{"package", "core", "uncore", "dram"}));
  EXPECT_EQ(sut->info().features,
            (std::vector<std::string>{"bpf_cpu_time_ms", "bpf_page_cache_hit"}));

  // scale0 = 95877.00000000001, x = bpf_cpu_time_ms / scale0.
  // package [a, b, c] = [1800828.6572112294, 0.00017356410721908495, -1800685.0481741317]
  //   x = 0: a + c                                          = 143.6090370977763
  //   x = 0.5 (47938.5): a * exp(b / 2) + c
  //        = 1800828.65721 * 1.0000867858 - 1800685.04817 = 299.89542749826796
  //   x = 1 (95877): a * exp(b) + c                          = 456.19538134126924
  // core, uncore [0, 1, 0]: 0 * exp(x) + 0                   = 0
  // dram [a, b, c] = [-2305.06675435385, 1, 2326.0265443714743]
  //   x = 0: a + c                                          = 20.959790017624528
  //   x = 0.5: -2305.06675 * 1.6487212707 + 2326.02654      = -1474.386... -> clamped to 0
  // bpf_page_cache_hit (the second feature) must not matter.
  auto e = evaluate(*sut, {"bpf_page_cache_hit", "bpf_cpu_time_ms"},
                    rows({{0, 0}, {1e6F, 47938.5F}, {3, 95877}}));
  ASSERT_TRUE(e.status.ok()) << e.status.to_string();
  expect_rel(e.out(0, 0), 143.6090370977763, "package x=0");
  expect_rel(e.out(1, 0), 299.89542749826796, "package x=0.5");
  expect_rel(e.out(2, 0), 456.19538134126924, "package x=1");
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(e.out(r, 1), 0.0F) << "core row " << r;
    EXPECT_EQ(e.out(r, 2), 0.0F) << "uncore row " << r;
  }
  expect_rel(e.out(0, 3), 20.959790017624528, "dram x=0");
  EXPECT_EQ(e.out(1, 3), 0.0F) << "dram x=0.5 is negative: clamped";
  EXPECT_EQ(e.out(2, 3), 0.0F);

  // The same file under the standalone name also works when the trainer comes only from
  // the folder name (a weight file downloaded without metadata of its own).
  auto by_folder = must_load(weight_folder(
      "dir/ExponentialRegressionTrainer_0",
      R"({"model_class": "curvefit", "model_file": "weights.json"})", read_file(file)));
  ASSERT_NE(by_folder, nullptr);
  EXPECT_EQ(by_folder->info().model_class, "curvefit");
}

// Each curve by hand. Feature order: the metadata lists none, so the file's order:
// cpu_cycles first (x = cpu_cycles / scale), cache_miss second (unused by the curve).
std::string curve_doc(const std::string& weights, double scale0, const std::string& extra = "") {
  return R"({"package": {"All_Weights": {)" + extra + R"(
      "Categorical_Variables": {"cpu_architecture": {"Sky Lake": {"weight": 1.5}}},
      "Numerical_Variables": {"cpu_cycles": {"scale": )" +
         std::to_string(scale0) + R"(}, "cache_miss": {"scale": 1.0}},
      "CurveFit_Weights": )" +
         weights + "}}}";
}

TEST(CurveFitHand, Exponential) {
  // [a, b, c] = [2, 1, 5], scale 2: cpu_cycles 2 -> x = 1 -> 2e + 5 = 10.43656365691809;
  // cpu_cycles 0 -> x = 0 -> 2 + 5 = 7; Sky Lake adds 1.5.
  auto sut = must_load(weight_folder("h/ExponentialRegressionTrainer_1",
                                     meta("ExponentialRegressionTrainer_1"),
                                     curve_doc("[2.0, 1.0, 5.0]", 2.0)));
  ASSERT_NE(sut, nullptr);
  auto e = evaluate(*sut, {"cpu_cycles", "cache_miss"}, rows({{2, 100}, {0, 7}}));
  ASSERT_TRUE(e.status.ok()) << e.status.to_string();
  expect_rel(e.out(0, 0), 10.43656365691809, "x=1");
  expect_rel(e.out(1, 0), 7.0, "x=0");
  auto sky = evaluate(*sut, {"cpu_cycles", "cache_miss"}, rows({{2, 0}}),
                      {{"cpu_architecture", "Sky Lake"}});
  ASSERT_TRUE(sky.status.ok()) << sky.status.to_string();
  expect_rel(sky.out(0, 0), 11.93656365691809, "x=1, Sky Lake");
}

TEST(CurveFitHand, Logarithmic) {
  // [a, b, c] = [3, 0.5, 2], scale 4: cpu_cycles 8 -> x = 2 -> b*x + 1 = 2
  //   -> 3 ln 2 + 2 = 3 * 0.6931471805599453 + 2 = 4.079441541679836;
  // cpu_cycles 0 -> 3 ln 1 + 2 = 2.
  // A Bias_Weight in a curve-fit component is not used (no bias in the curve formula).
  auto sut = must_load(weight_folder("h/LogarithmicRegressionTrainer_1",
                                     meta("LogarithmicRegressionTrainer_1"),
                                     curve_doc("[3.0, 0.5, 2.0]", 4.0, R"("Bias_Weight": 100.0,)")));
  ASSERT_NE(sut, nullptr);
  auto e = evaluate(*sut, {"cache_miss", "cpu_cycles"}, rows({{5, 8}, {5, 0}}));
  ASSERT_TRUE(e.status.ok()) << e.status.to_string();
  expect_rel(e.out(0, 0), 4.079441541679836, "x=2");
  expect_rel(e.out(1, 0), 2.0, "x=0");
}

TEST(CurveFitHand, Logistic) {
  // [A, x0, k, off] = [10, 1, 2, 3], scale 2:
  //   cpu_cycles 2 -> x = 1 = x0 -> 10 / (1 + e^0) + 3 = 8;
  //   cpu_cycles 4 -> x = 2 -> 10 / (1 + e^-2) + 3 = 10 / 1.1353352832366128 + 3
  //                 = 8.807970779778824 + 3 = 11.807970779778824;
  //   cpu_cycles 0 -> x = 0 -> 10 / (1 + e^2) + 3 = 10 / 8.38905609893065 + 3
  //                 = 1.1920292202211755 + 3 = 4.192029220221176.
  // With weights in the wrong order ([A, k, x0, off]) row 2 would give 10/(1+e^-1)+3.
  auto sut = must_load(weight_folder("h/LogisticRegressionTrainer_1",
                                     meta("LogisticRegressionTrainer_1"),
                                     curve_doc("[10.0, 1.0, 2.0, 3.0]", 2.0)));
  ASSERT_NE(sut, nullptr);
  auto e = evaluate(*sut, {"cpu_cycles", "cache_miss"}, rows({{2, 0}, {4, 0}, {0, 0}}));
  ASSERT_TRUE(e.status.ok()) << e.status.to_string();
  expect_rel(e.out(0, 0), 8.0, "x=x0");
  expect_rel(e.out(1, 0), 11.807970779778824, "x=2");
  expect_rel(e.out(2, 0), 4.192029220221176, "x=0");
}

TEST(CurveFitHand, FirstFeatureFollowsMetadataOrder) {
  // metadata.json lists cache_miss first: x = cache_miss / 1.0.
  // Exponential [2, 1, 5]: cache_miss 0 -> 7 whatever cpu_cycles is.
  auto sut = must_load(weight_folder(
      "h/ExponentialRegressionTrainer_1",
      R"({"model_name": "ExponentialRegressionTrainer_1", "model_class": "curvefit",
          "model_file": "weights.json", "features": ["cache_miss", "cpu_cycles"]})",
      curve_doc("[2.0, 1.0, 5.0]", 2.0)));
  ASSERT_NE(sut, nullptr);
  auto e = evaluate(*sut, {"cpu_cycles", "cache_miss"}, rows({{2, 0}, {0, 1}}));
  ASSERT_TRUE(e.status.ok()) << e.status.to_string();
  expect_rel(e.out(0, 0), 7.0, "cache_miss 0");
  expect_rel(e.out(1, 0), 2.0 * std::exp(1.0) + 5.0, "cache_miss 1");
}

TEST(CurveFitHand, TrainerFromTheWeightFilesModelName) {
  // Through the format's own entry point, with no trainer in ModelInfo.
  const json::Json doc = json::Json::parse(
      R"({"model_name": "LogisticRegressionTrainer_3",
          "package": {"All_Weights": {"Categorical_Variables": {},
            "Numerical_Variables": {"x": {"scale": 1.0}},
            "CurveFit_Weights": [10.0, 1.0, 2.0, 3.0]}}})");
  Result<std::unique_ptr<Model>> sut = load_weight_model(ModelInfo{}, doc, "w.json");
  ASSERT_TRUE(sut.ok()) << sut.status().to_string();
  auto e = evaluate(**sut, {"x"}, rows({{1}}));
  ASSERT_TRUE(e.status.ok()) << e.status.to_string();
  expect_rel(e.out(0, 0), 8.0, "x=x0");
}

TEST(CurveFitHand, NonFiniteCurveFailsTheRequest) {
  // Logarithmic [1, -1, 0], scale 1: x = 2 -> log(-1) is NaN.
  auto sut = must_load(weight_folder("h/LogarithmicRegressionTrainer_1",
                                     meta("LogarithmicRegressionTrainer_1"),
                                     curve_doc("[1.0, -1.0, 0.0]", 1.0)));
  ASSERT_NE(sut, nullptr);
  auto ok = evaluate(*sut, {"cpu_cycles", "cache_miss"}, rows({{0.5F, 0}}));
  EXPECT_TRUE(ok.status.ok()) << ok.status.to_string();  // log(0.5) < 0: clamped to 0
  EXPECT_EQ(ok.out(0, 0), 0.0F);
  auto bad = evaluate(*sut, {"cpu_cycles", "cache_miss"}, rows({{2, 0}}));
  EXPECT_EQ(bad.status.code(), Code::kInvalidValue);
  EXPECT_NE(bad.status.message().find("not a finite number on row 0"), std::string::npos)
      << bad.status.message();
}

Status load_error(const std::string& model_name, const std::string& weights) {
  Result<std::unique_ptr<Model>> m =
      load_model(weight_folder("dir/" + model_name, meta(model_name), weights));
  EXPECT_FALSE(m.ok()) << "loaded a malformed file:\n" << weights;
  return m.status();
}

void expect_mentions(const Status& s, std::initializer_list<std::string_view> parts) {
  for (std::string_view p : parts) {
    EXPECT_NE(s.message().find(p), std::string::npos)
        << "message lacks \"" << p << "\": " << s.message();
  }
}

TEST(CurveFitRefusal, WrongNumberOfWeights) {
  expect_mentions(load_error("LogisticRegressionTrainer_1", curve_doc("[10.0, 1.0, 2.0]", 2.0)),
                  {"weights.json", "package.All_Weights.CurveFit_Weights",
                   "LogisticRegressionTrainer", "needs an array of 4 weights, got 3 numbers"});
  expect_mentions(
      load_error("ExponentialRegressionTrainer_1", curve_doc("[2.0, 1.0, 5.0, 4.0]", 2.0)),
      {"package.All_Weights.CurveFit_Weights", "needs an array of 3 weights, got 4 numbers"});
  expect_mentions(load_error("ExponentialRegressionTrainer_1", curve_doc("{}", 2.0)),
                  {"CurveFit_Weights", "got object"});
}

TEST(CurveFitRefusal, BadNumbers) {
  expect_mentions(
      load_error("ExponentialRegressionTrainer_1", curve_doc("[2.0, \"NaN\", 5.0]", 2.0)),
      {"package.All_Weights.CurveFit_Weights[1]", "expected a finite number, got string"});
  expect_mentions(load_error("ExponentialRegressionTrainer_1", curve_doc("[2.0, 1.0, 5.0]", 0.0)),
                  {"package.All_Weights.Numerical_Variables.cpu_cycles.scale", "must not be 0"});
  expect_mentions(load_error("ExponentialRegressionTrainer_1",
                             R"({"package": {"All_Weights": {"Numerical_Variables": {"x": {}},
                                 "CurveFit_Weights": [1.0, 1.0, 1.0]}}})"),
                  {"package.All_Weights.Numerical_Variables.x.scale", "missing"});
  expect_mentions(load_error("ExponentialRegressionTrainer_1",
                             R"({"package": {"All_Weights": {"Numerical_Variables": {},
                                 "CurveFit_Weights": [1.0, 1.0, 1.0]}}})"),
                  {"package.All_Weights.Numerical_Variables", "at least one feature"});
}

TEST(CurveFitRefusal, UnknownOrConflictingTrainer) {
  expect_mentions(load_error("PolynomialRegressionTrainer_1", curve_doc("[2.0, 1.0, 5.0]", 2.0)),
                  {"package.All_Weights.CurveFit_Weights", "curve-fit",
                   "trainer \"PolynomialRegressionTrainer\"", "is none of them"});
  const std::string doc = R"({"model_name": "LogisticRegressionTrainer_1",)" +
                          curve_doc("[2.0, 1.0, 5.0]", 2.0).substr(1);
  expect_mentions(load_error("ExponentialRegressionTrainer_1", doc),
                  {"ambiguous", "ExponentialRegressionTrainer", "LogisticRegressionTrainer"});
}

}  // namespace
}  // namespace estimator::models
