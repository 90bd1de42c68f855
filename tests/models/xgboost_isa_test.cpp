// SPDX-License-Identifier: Apache-2.0
// Every SIMD evaluator of XGBoost forests against the scalar one (the reference): the same
// models and rows must give the same bits. Random forests (complete and ragged trees,
// depths 0 to 8, gbtree and dart), Kepler's XgboostFitTrainer_1 and the generated
// fixtures, on rows exactly on thresholds and one float step either side, NaN (missing:
// default_left), infinities and values beyond float's range, at row counts around the
// vector widths, the AVX2 passes and the block. An evaluator this CPU cannot run is
// reported as skipped, not passed.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "models/stages.h"
#include "models/xgboost_model.h"
#include "test_files.h"
#include "xgboost_test_util.h"

namespace estimator::models {
namespace {

namespace fs = std::filesystem;
using xgboost::Isa;

const fs::path kFixtures = ESTIMATOR_XGBOOST_FIXTURES;
const fs::path kKeplerZip =
    fs::path(ESTIMATOR_SHARED_DIR) / "model-samples/kepler-model-db/XgboostFitTrainer_1.zip";

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

std::unique_ptr<Regressor> must_load(const std::string& text, Isa isa) {
  return testing::must_load_xgboost(text, xgboost::isa_name(isa), isa);
}

// A random tree of at most `depth` levels: each node below the root becomes a leaf with
// probability `leaf_odds` (0 gives the complete tree). Thresholds come from `cuts` so
// that rows can hit them exactly.
nlohmann::json random_tree(std::mt19937& rng, int depth, double leaf_odds, int features,
                           const std::vector<float>& cuts) {
  std::vector<int> left, right, feature, default_left;
  std::vector<float> condition;
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::uniform_int_distribution<int> pick_feature(0, features - 1);
  std::uniform_int_distribution<std::size_t> pick_cut(0, cuts.size() - 1);
  // Breadth first from the root: (node, level).
  std::vector<std::pair<int, int>> queue{{0, 0}};
  left.push_back(-1);
  right.push_back(-1);
  feature.push_back(0);
  default_left.push_back(0);
  condition.push_back(0);
  for (std::size_t k = 0; k < queue.size(); ++k) {
    const auto [node, level] = queue[k];
    const auto at = static_cast<std::size_t>(node);
    const bool leaf = level == depth || (level > 0 && unit(rng) < leaf_odds);
    if (leaf) {
      condition[at] = static_cast<float>(unit(rng) * 20.0 - 10.0);
      continue;
    }
    feature[at] = pick_feature(rng);
    condition[at] = cuts[pick_cut(rng)];
    default_left[at] = unit(rng) < 0.5 ? 1 : 0;
    for (int side = 0; side < 2; ++side) {
      const int child = static_cast<int>(left.size());
      (side == 0 ? left : right)[at] = child;
      left.push_back(-1);
      right.push_back(-1);
      feature.push_back(0);
      default_left.push_back(0);
      condition.push_back(0);
      queue.emplace_back(child, level + 1);
    }
  }
  return {{"left_children", left},   {"right_children", right},
          {"split_indices", feature}, {"split_conditions", condition},
          {"default_left", default_left}};
}

std::string random_model(std::mt19937& rng, int trees, int features, const std::vector<float>& cuts,
                         bool dart) {
  std::uniform_int_distribution<int> pick_depth(0, 8);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  nlohmann::json forest = nlohmann::json::array();
  nlohmann::json weights = nlohmann::json::array();
  for (int t = 0; t < trees; ++t) {
    // Half complete trees (every level of the SIMD evaluators is full), half ragged.
    const double leaf_odds = t % 2 == 0 ? 0.0 : 0.3;
    forest.push_back(random_tree(rng, pick_depth(rng), leaf_odds, features, cuts));
    weights.push_back(0.5 + unit(rng));
  }
  nlohmann::json gbtree = {{"name", "gbtree"}, {"model", {{"trees", forest}}}};
  nlohmann::json booster = gbtree;
  if (dart) booster = {{"name", "dart"}, {"gbtree", gbtree}, {"weight_drop", weights}};
  const nlohmann::json doc = {
      {"learner",
       {{"gradient_booster", booster},
        {"learner_model_param",
         {{"base_score", "0.25"}, {"num_feature", std::to_string(features)}}},
        {"objective", {{"name", dart ? "reg:logistic" : "reg:squarederror"}}}}}};
  return doc.dump();
}

// Rows that exercise every comparison case: values on a threshold, one float step either
// side, NaN, infinities, beyond float's range, and ordinary values.
RowMatrixD hard_rows(std::mt19937& rng, Eigen::Index rows, int features,
                     const std::vector<float>& cuts) {
  std::uniform_int_distribution<int> kind(0, 9);
  std::uniform_int_distribution<std::size_t> pick_cut(0, cuts.size() - 1);
  std::uniform_real_distribution<double> value(-12.0, 12.0);
  RowMatrixD x(rows, features);
  for (Eigen::Index i = 0; i < rows; ++i) {
    for (int f = 0; f < features; ++f) {
      const float cut = cuts[pick_cut(rng)];
      double v = 0;
      switch (kind(rng)) {
        case 0: case 1: v = cut; break;
        case 2: v = std::nextafter(cut, -kInf); break;
        case 3: v = std::nextafter(cut, kInf); break;
        case 4: v = kNaN; break;
        case 5: v = (i + f) % 2 == 0 ? kInf : -kInf; break;
        case 6: v = (i + f) % 2 == 0 ? 1e300 : -1e300; break;
        default: v = value(rng); break;
      }
      x(i, f) = v;
    }
  }
  return x;
}

// Row counts around the vector widths (4, 8 and 16 rows), the AVX2 evaluator's passes of
// 64 rows, the block (128 rows) and a last block of one row, and a large request.
constexpr std::array<Eigen::Index, 20> kRowCounts = {1,  3,  4,  5,   7,   8,   9,   15,  16,  17,
                                                   31, 33, 63, 64, 65, 127, 128, 129, 257, 1000};

void expect_same_bits(const std::string& model, Isa isa, const RowMatrixD& x,
                      const std::string& what) {
  auto reference = must_load(model, Isa::kScalar);
  auto sut = must_load(model, isa);
  ASSERT_NE(reference, nullptr);
  ASSERT_NE(sut, nullptr);
  for (const Eigen::Index n : kRowCounts) {
    if (n > x.rows()) continue;
    const RowMatrixD rows = x.topRows(n);
    const std::vector<double> want = testing::predict_column(*reference, rows);
    const std::vector<double> got = testing::predict_column(*sut, rows);
    ASSERT_EQ(got.size(), want.size());
    for (std::size_t i = 0; i < want.size(); ++i) {
      // Bits, not values: the sums must be the scalar evaluator's.
      ASSERT_EQ(std::memcmp(&got[i], &want[i], sizeof(double)), 0)
          << what << ", " << n << " rows, row " << i << ": " << got[i] << " vs " << want[i];
    }
  }
}

class XGBoostIsa : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!xgboost::isa_supported(GetParam())) {
      GTEST_SKIP() << "this CPU does not run the " << xgboost::isa_name(GetParam())
                   << " evaluator: not tested here";
    }
  }
};

TEST_P(XGBoostIsa, RandomForestsGiveTheScalarBits) {
  std::mt19937 rng(20261207);
  const std::vector<float> cuts = {-5.5F, -1.0F, 0.0F, 0.1F, 0.3F, 1.0F / 3.0F, 2.0F, 7.25F};
  for (int round = 0; round < 12; ++round) {
    const int features = 1 + round % 7;
    const bool dart = round % 3 == 2;
    const std::string model = random_model(rng, 30, features, cuts, dart);
    const RowMatrixD x = hard_rows(rng, 1000, features, cuts);
    expect_same_bits(model, GetParam(), x, "round " + std::to_string(round));
    if (HasFatalFailure()) return;
  }
}

// Complete trees of every depth alone: every level of the permute and gather paths.
TEST_P(XGBoostIsa, CompleteTreesOfEveryDepth) {
  std::mt19937 rng(7);
  const std::vector<float> cuts = {-1.0F, 0.0F, 0.5F, 1.5F, 3.0F};
  for (int depth = 0; depth <= 8; ++depth) {
    nlohmann::json forest = nlohmann::json::array();
    for (int t = 0; t < 3; ++t) forest.push_back(random_tree(rng, depth, 0.0, 4, cuts));
    const nlohmann::json doc = {
        {"learner",
         {{"gradient_booster", {{"name", "gbtree"}, {"model", {{"trees", forest}}}}},
          {"learner_model_param", {{"base_score", "0.5"}, {"num_feature", "4"}}},
          {"objective", {{"name", "reg:squarederror"}}}}}};
    expect_same_bits(doc.dump(), GetParam(), hard_rows(rng, 1000, 4, cuts),
                     "depth " + std::to_string(depth));
    if (HasFatalFailure()) return;
  }
}

TEST_P(XGBoostIsa, KeplerXgboostFitTrainer1) {
  std::mt19937 rng(42);
  // The scaled inputs of the model's 5 features are in [0, 1]; cuts from its own range.
  const std::vector<float> cuts = {0.0F, 0.01F, 0.1F, 0.25F, 0.5F, 0.75F, 1.0F};
  for (const char* member : {"package.json", "core.json", "uncore.json", "dram.json"}) {
    const std::optional<std::string> text = testing::zip_member(kKeplerZip, member);
    if (!text) GTEST_SKIP() << "needs " << kKeplerZip;
    RowMatrixD x = hard_rows(rng, 1000, 5, cuts);
    // Half the rows ordinary scaled inputs, so most of the trees' thresholds are crossed.
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    for (Eigen::Index i = 0; i < x.rows(); i += 2) {
      for (Eigen::Index f = 0; f < 5; ++f) x(i, f) = unit(rng);
    }
    expect_same_bits(*text, GetParam(), x, member);
    if (HasFatalFailure()) return;
  }
}

TEST_P(XGBoostIsa, GeneratedFixtures) {
  std::mt19937 rng(3);
  const std::vector<float> cuts = {-1.0F, 0.0F, 0.5F, 1.0F};
  for (const char* name : {"squared_d3", "squared_d5", "logistic_d3", "dart_d4"}) {
    const std::optional<std::string> text = testing::read_file_bytes(kFixtures / (std::string(name) + ".json"));
    ASSERT_TRUE(text) << name;
    auto probe = must_load(*text, Isa::kScalar);
    ASSERT_NE(probe, nullptr);
    const auto features = static_cast<int>(probe->inputs());
    expect_same_bits(*text, GetParam(), hard_rows(rng, 1000, features, cuts), name);
    if (HasFatalFailure()) return;
  }
}

TEST_P(XGBoostIsa, DescribeNamesTheEvaluator) {
  const std::string model = R"({"learner": {"learner_model_param": {"base_score": "0",
      "num_feature": "1"}, "objective": {"name": "reg:squarederror"},
      "gradient_booster": {"name": "gbtree", "model": {"trees": [{"left_children": [1, -1, -1],
      "right_children": [2, -1, -1], "split_indices": [0, 0, 0],
      "split_conditions": [0.5, 1.0, 2.0], "default_left": [1, 0, 0]}]}}}})";
  auto sut = must_load(model, GetParam());
  ASSERT_NE(sut, nullptr);
  EXPECT_EQ(sut->describe(), "XGBoost(gbtree, 1 trees, 1 features, reg:squarederror, " +
                                 std::string(xgboost::isa_name(GetParam())) + ")");
}

INSTANTIATE_TEST_SUITE_P(Evaluators, XGBoostIsa, ::testing::Values(Isa::kAvx2, Isa::kAvx512),
                         [](const ::testing::TestParamInfo<Isa>& p) {
                           return std::string(xgboost::isa_name(p.param));
                         });

TEST(XGBoostIsaChoice, DefaultIsOneThisCpuRuns) {
  EXPECT_TRUE(xgboost::isa_supported(default_xgboost_isa()));
  EXPECT_TRUE(xgboost::isa_supported(Isa::kScalar));
}

TEST(XGBoostIsaChoice, AnEvaluatorThisCpuCannotRunIsRefused) {
  for (const Isa isa : {Isa::kAvx2, Isa::kAvx512}) {
    if (xgboost::isa_supported(isa)) continue;
    const Result<std::unique_ptr<Regressor>> r = load_xgboost_json(
        R"({"learner": {"learner_model_param": {"base_score": "0", "num_feature": "1"},
            "objective": {"name": "reg:squarederror"},
            "gradient_booster": {"name": "gbtree", "model": {"trees": []}}}})",
        "m.json", isa);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("does not run"), std::string::npos);
    return;
  }
  GTEST_SKIP() << "this CPU runs every evaluator: nothing to refuse";
}

}  // namespace
}  // namespace estimator::models
