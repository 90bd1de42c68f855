// SPDX-License-Identifier: Apache-2.0
// XGBoost JSON models: the split rule on hand-made trees, agreement with Python's
// booster on generated fixtures, Kepler's published XgboostFitTrainer_1 model, and
// refusal of malformed files. (Agreement with libxgboost's C API: xgboost_libxgboost_test.)
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "models/stages.h"
#include "models/xgboost_model.h"
#include "test_files.h"
#include "xgboost_test_util.h"

namespace estimator::models {
namespace {

namespace fs = std::filesystem;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kRelTol = 1e-5;

const fs::path kFixtures = ESTIMATOR_XGBOOST_FIXTURES;
const fs::path kSharedDir = ESTIMATOR_SHARED_DIR;
const fs::path kKeplerZip = kSharedDir / "model-samples/kepler-model-db/XgboostFitTrainer_1.zip";

using testing::read_file_bytes;
using testing::zip_member;

std::unique_ptr<Regressor> must_load(std::string_view text, std::string_view file) {
  return testing::must_load_xgboost(text, file);
}

std::vector<double> predict(const Regressor& sut, const RowMatrixD& x) {
  return testing::predict_column(sut, x);
}

double rel_error(double got, double want) {
  return std::abs(got - want) / std::max(std::abs(want), 1e-12);
}

// ---- the split rule, on hand-made models ---------------------------------------------

// A model around `trees` (a JSON array text) with the given learner parameters.
std::string model_json(const std::string& trees, const std::string& num_feature = "2",
                       const std::string& base_score = "0.5",
                       const std::string& objective = "reg:squarederror") {
  return R"({"learner": {"attributes": {}, "feature_names": [], "feature_types": [],
    "gradient_booster": {"model": {"trees": )" +
         trees + R"(}, "name": "gbtree"},
    "learner_model_param": {"base_score": ")" +
         base_score + R"(", "num_class": "0", "num_feature": ")" + num_feature +
         R"(", "num_target": "1"},
    "objective": {"name": ")" +
         objective + R"(", "reg_loss_param": {"scale_pos_weight": "1"}}},
    "version": [1, 7, 4]})";
}

// x0 < 0.1 -> 10, else 20; missing -> left.
constexpr const char* kStump = R"({"left_children": [1, -1, -1], "right_children": [2, -1, -1],
    "split_indices": [0, 0, 0], "split_conditions": [0.1, 10.0, 20.0],
    "default_left": [1, 0, 0]})";

TEST(XGBoostSplitRule, StrictLessThanInFloat32) {
  auto sut = must_load(model_json(std::string("[") + kStump + "]"), "stump.json");
  ASSERT_NE(sut, nullptr);
  const double below = std::nextafter(0.1F, 0.0F);
  RowMatrixD x(6, 2);
  x << 0.1, 0,   // float(0.1) == float(0.1): not less -> right. (In double, 0.1 is
                 // below the threshold 0.100000001490116: a double compare goes left.)
      below, 0,  // the float just below the threshold -> left
      0.05, 0,   //
      0.2, 0,    //
      kNaN, 0,   // missing -> default_left -> left
      -0.0, 0;
  const std::vector<double> got = predict(*sut, x);
  const std::vector<double> want = {20.5, 10.5, 10.5, 20.5, 10.5, 10.5};
  for (std::size_t i = 0; i < want.size(); ++i) EXPECT_DOUBLE_EQ(got[i], want[i]) << "row " << i;
}

TEST(XGBoostSplitRule, MissingFollowsDefaultLeftGivenAsIntOrBool) {
  const std::string right_int = R"({"left_children": [1, -1, -1], "right_children": [2, -1, -1],
      "split_indices": [1, 0, 0], "split_conditions": [3.0, -1.0, 1.0],
      "default_left": [0, 0, 0]})";
  const std::string left_bool = R"({"left_children": [1, -1, -1], "right_children": [2, -1, -1],
      "split_indices": [1, 0, 0], "split_conditions": [3.0, -100.0, 100.0],
      "default_left": [true, false, false]})";
  auto sut = must_load(model_json("[" + right_int + "," + left_bool + "]", "2", "0"), "m.json");
  ASSERT_NE(sut, nullptr);
  RowMatrixD x(3, 2);
  x << 0, kNaN,  // tree 1 right (+1), tree 2 left (-100)
      0, 2.0,    // both left: -1 - 100
      0, 3.0;    // both right: 1 + 100
  EXPECT_EQ(predict(*sut, x), (std::vector<double>{-99.0, -101.0, 101.0}));
}

TEST(XGBoostSplitRule, ValuesBeyondFloatRangeCompareAsInfinities) {
  auto sut = must_load(model_json(std::string("[") + kStump + "]"), "stump.json");
  ASSERT_NE(sut, nullptr);
  RowMatrixD x(4, 2);
  x << 1e300, 0, -1e300, 0, std::numeric_limits<double>::infinity(), 0,
      -std::numeric_limits<double>::infinity(), 0;
  EXPECT_EQ(predict(*sut, x), (std::vector<double>{20.5, 10.5, 20.5, 10.5}));
}

TEST(XGBoostLayout, NodesInAnyOrderWithUnreachableNodes) {
  // Node 0 splits on x1 < 5 with its left child numbered after its right one; node 2 is
  // unreachable (a pruned node: XGBoost keeps such slots), with a value that would show.
  const std::string tree = R"({"left_children": [3, -1, -1, 4, -1, -1],
      "right_children": [1, -1, -1, 5, -1, -1], "split_indices": [1, 0, 0, 0, 0, 0],
      "split_conditions": [5.0, 100.0, 999.0, 0.0, 1.0, 2.0],
      "default_left": [0, 0, 0, 1, 0, 0]})";
  auto sut = must_load(model_json("[" + tree + "," + kStump + "]", "2", "1000"), "m.json");
  ASSERT_NE(sut, nullptr);
  EXPECT_EQ(sut->inputs(), 2);
  EXPECT_EQ(sut->outputs(), 1);
  EXPECT_NE(sut->describe().find("2 trees"), std::string::npos) << sut->describe();
  RowMatrixD x(4, 2);
  x << -1, 4,  // tree 1: left, then x0 < 0 -> 1; stump: left 10 -> 1011
      0, 4,    // tree 1: 0 < 0 false -> 2; stump: 0 < 0.1 -> 10 -> 1012
      kNaN, 5, // tree 1: 5 < 5 false -> right 100; stump: NaN -> 10 -> 1110
      kNaN, 4.5;  // tree 1: left, NaN -> default_left -> 1; stump 10 -> 1011
  EXPECT_EQ(predict(*sut, x), (std::vector<double>{1011, 1012, 1110, 1011}));
}

// A chain of `depth` splits on x0 < 1, < 2, ...: split k's left leaf is 10k, the last
// right leaf 999; missing values go right (default_left 0) except at split 2.
std::string chain_tree(int depth) {
  std::string left = "[", right = "[", idx = "[", cond = "[", dl = "[";
  for (int k = 0; k < depth; ++k) {
    const std::string sep = k == 0 ? "" : ",";
    left += sep + std::to_string(2 * k + 1) + ",-1";
    right += sep + std::to_string(2 * k + 2) + ",-1";
    idx += sep + "0,0";
    cond += sep + std::to_string(k + 1) + "," + std::to_string(10 * k);
    dl += sep + (k == 2 ? "1" : "0") + ",0";
  }
  return R"({"left_children": )" + left + R"(,-1], "right_children": )" + right +
         R"(,-1], "split_indices": )" + idx + R"(,0], "split_conditions": )" + cond +
         R"(,999], "default_left": )" + dl + ",0]}";
}

// Trees up to depth 8 are padded to complete trees and evaluated without branches; deeper
// ones are walked node by node: both give the split rule's leaves, here along a chain
// (the tree padding turns most into pass-through nodes).
TEST(XGBoostLayout, ShallowAndDeepChainsBothEvaluators) {
  for (const int depth : {3, 8, 9, 12}) {
    auto sut = must_load(model_json("[" + chain_tree(depth) + "," + kStump + "]", "2", "0"),
                         "chain.json");
    ASSERT_NE(sut, nullptr);
    RowMatrixD x(6, 2);
    x << 0.5, 1,  // split 0: 0.5 < 1 -> 0; stump: right 20
        3.5, 1,   // split 3 -> 30
        2.0, 1,   // 2 < 2 false, 2 < 3 -> 20
        kNaN, 1,  // right, right, then split 2's default left -> 20; stump: left 10
        100, 1,   // past every split -> 999
        -1e300, 1;  // beyond float range: -inf -> split 0 -> 0; stump left 10
    const double last = 999;
    const std::vector<double> want = {20, depth > 3 ? 50.0 : last + 20, 40,
                                      depth > 2 ? 30.0 : last + 10, last + 20, 10};
    EXPECT_EQ(predict(*sut, x), want) << "depth " << depth;
    // Past one block and in lanes of 8 and single rows.
    RowMatrixD many(131, 2);
    for (Eigen::Index i = 0; i < many.rows(); ++i) many.row(i) = x.row(i % 6);
    const std::vector<double> got = predict(*sut, many);
    for (Eigen::Index i = 0; i < many.rows(); ++i) {
      EXPECT_EQ(got[static_cast<std::size_t>(i)], want[static_cast<std::size_t>(i % 6)])
          << "depth " << depth << " row " << i;
    }
  }
}

TEST(XGBoostObjective, LogisticAppliesSigmoidToTheMarginFromBaseScore) {
  // base_score 0.25 is a probability: margin starts at logit(0.25) = -ln 3.
  // Row 0: -ln 3 + 10 (left) ; row 1: -ln 3 + 20 (right); zero-tree case in next test.
  const std::string stump = R"({"left_children": [1, -1, -1], "right_children": [2, -1, -1],
      "split_indices": [0, 0, 0], "split_conditions": [0.5, 1.0, -1.0],
      "default_left": [0, 0, 0]})";
  auto sut = must_load(model_json("[" + stump + "]", "1", "0.25", "binary:logistic"), "l.json");
  ASSERT_NE(sut, nullptr);
  RowMatrixD x(2, 1);
  x << 0.0, 1.0;
  const std::vector<double> got = predict(*sut, x);
  // sigmoid(-ln 3 + 1) = 1 / (1 + 3/e) = 0.475367...; sigmoid(-ln 3 - 1) = 1 / (1 + 3e).
  EXPECT_NEAR(got[0], 1.0 / (1.0 + 3.0 / std::exp(1.0)), 1e-7);
  EXPECT_NEAR(got[1], 1.0 / (1.0 + 3.0 * std::exp(1.0)), 1e-7);
}

TEST(XGBoostObjective, NoTreesPredictsBaseScore) {
  auto sut = must_load(model_json("[]", "3", "1.33632E2"), "empty.json");
  ASSERT_NE(sut, nullptr);
  RowMatrixD x = RowMatrixD::Zero(2, 3);
  // base_score is read as a float32, like XGBoost: 133.632 -> 133.63200378...
  EXPECT_EQ(predict(*sut, x), (std::vector<double>{133.632F, 133.632F}));
}

// ---- generated fixtures: Python's xgboost predictions ----------------------------------

struct Fixture {
  std::string model_text;
  RowMatrixD rows;
  std::vector<double> expected;
};

Fixture read_fixture(const std::string& name) {
  Fixture f;
  const std::optional<std::string> model = read_file_bytes(kFixtures / (name + ".json"));
  const std::optional<std::string> rows = read_file_bytes(kFixtures / (name + ".rows.json"));
  if (!model || !rows) {
    ADD_FAILURE() << "fixture " << name << " missing under " << kFixtures
                  << " (regenerate: /usr/bin/python3 tools/gen_xgboost_fixtures.py)";
    return f;
  }
  f.model_text = *model;
  const nlohmann::json doc = nlohmann::json::parse(*rows);
  const auto& r = doc.at("rows");
  f.rows.resize(static_cast<Eigen::Index>(r.size()), static_cast<Eigen::Index>(r.at(0).size()));
  for (std::size_t i = 0; i < r.size(); ++i) {
    for (std::size_t j = 0; j < r[i].size(); ++j) {
      f.rows(static_cast<Eigen::Index>(i), static_cast<Eigen::Index>(j)) =
          r[i][j].is_null() ? kNaN : r[i][j].get<double>();
    }
  }
  for (const auto& e : doc.at("expected")) f.expected.push_back(e.get<double>());
  return f;
}

class XGBoostFixture : public ::testing::TestWithParam<const char*> {};

TEST_P(XGBoostFixture, MatchesPythonXGBoost) {
  const Fixture f = read_fixture(GetParam());
  ASSERT_FALSE(f.model_text.empty());
  ASSERT_EQ(static_cast<std::size_t>(f.rows.rows()), f.expected.size());
  // The probes must exercise what they are for: missing values in most rows.
  EXPECT_GT(f.rows.array().isNaN().count(), f.rows.rows() / 2);

  auto sut = must_load(f.model_text, GetParam());
  ASSERT_NE(sut, nullptr);
  EXPECT_EQ(sut->inputs(), 5);

  // Repeated past one block so both full and partial blocks are evaluated.
  const Eigen::Index n = f.rows.rows();
  const Eigen::Index copies = xgboost::kBlockRows / n + 1;
  RowMatrixD x(n * copies, f.rows.cols());
  for (Eigen::Index k = 0; k < copies; ++k) x.middleRows(k * n, n) = f.rows;
  const std::vector<double> got = predict(*sut, x);
  double worst = 0;
  for (Eigen::Index i = 0; i < x.rows(); ++i) {
    const double want = f.expected[static_cast<std::size_t>(i % n)];
    const double err = rel_error(got[static_cast<std::size_t>(i)], want);
    worst = std::max(worst, err);
    EXPECT_LE(err, kRelTol) << "row " << i << ": got " << got[static_cast<std::size_t>(i)]
                            << ", python xgboost " << want;
  }
  RecordProperty("max_relative_error", std::to_string(worst));
  std::cout << "[ measure  ] " << GetParam() << " vs python xgboost: max relative error "
            << worst << " over " << x.rows() << " rows\n";
}

INSTANTIATE_TEST_SUITE_P(Generated, XGBoostFixture,
                         ::testing::Values("squared_d3", "squared_d5", "dart_d4", "logistic_d3"));

// ---- Kepler's published model ---------------------------------------------------------

TEST(XGBoostKeplerSample, XgboostFitTrainer1PackageGoldenValues) {
  const std::optional<std::string> text = zip_member(kKeplerZip, "package.json");
  if (!text) GTEST_SKIP() << "needs " << kKeplerZip << " (the shared/ folder beside the repository)";
  auto sut = must_load(*text, "XgboostFitTrainer_1.zip/package.json");
  ASSERT_NE(sut, nullptr);
  EXPECT_EQ(sut->inputs(), 5);
  EXPECT_NE(sut->describe().find("100 trees"), std::string::npos) << sut->describe();
  RowMatrixD x(3, 5);
  x << 0, 0.1, 0.01, 0, 0,  //
      0, 0.5, 0.2, 0.1, 0,  //
      0, 0.9, 0.5, 0.5, 0;
  // model-samples/README.md: libxgboost 1.7.4 XGBoosterPredict on these scaled rows.
  const std::vector<double> want = {122.078941, 190.523636, 206.642792};
  const std::vector<double> got = predict(*sut, x);
  for (std::size_t i = 0; i < want.size(); ++i) {
    EXPECT_LE(rel_error(got[i], want[i]), kRelTol) << "row " << i << ": got " << got[i];
  }
}

TEST(XGBoostKeplerSample, EveryComponentLoads) {
  for (const char* member : {"package.json", "core.json", "uncore.json", "dram.json"}) {
    const std::optional<std::string> text = zip_member(kKeplerZip, member);
    if (!text) GTEST_SKIP() << "needs " << kKeplerZip << " (the shared/ folder beside the repository)";
    auto sut = must_load(*text, member);
    ASSERT_NE(sut, nullptr) << member;
    EXPECT_EQ(sut->inputs(), 5) << member;
  }
}

// ---- malformed files ------------------------------------------------------------------

std::string replaced(std::string text, const std::string& from, const std::string& to) {
  const std::size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << "test bug: '" << from << "' not in the model";
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return text;
}

const std::string kGood = model_json(std::string("[") + kStump + "," + kStump + "]");

Status load_error(const std::string& text) {
  Result<std::unique_ptr<Regressor>> r = load_xgboost_json(text, "bad.json");
  EXPECT_FALSE(r.ok()) << "loaded a malformed file:\n" << text;
  return r.status();
}

void expect_mentions(const Status& s, std::initializer_list<std::string_view> parts) {
  for (std::string_view p : parts) {
    EXPECT_NE(s.message().find(p), std::string::npos)
        << "message lacks \"" << p << "\": " << s.message();
  }
}

TEST(XGBoostRefusal, TheBaseModelLoads) {
  // Every refusal below is one edit away from this model.
  EXPECT_TRUE(load_xgboost_json(kGood, "good.json").ok());
}

TEST(XGBoostRefusal, TruncatedJson) {
  const Status s = load_error(kGood.substr(0, kGood.size() / 2));
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  expect_mentions(s, {"bad.json", "not valid JSON"});
}

TEST(XGBoostRefusal, ChildIndexOutOfRange) {
  expect_mentions(load_error(replaced(kGood, "\"right_children\": [2,", "\"right_children\": [7,")),
                  {"bad.json", "learner.gradient_booster.model.trees[0].right_children[0]",
                   "child 7", "out of range"});
  expect_mentions(load_error(replaced(kGood, "\"left_children\": [1,", "\"left_children\": [-2,")),
                  {"trees[0].left_children[0]", "child -2", "out of range"});
}

TEST(XGBoostRefusal, CycleAndSharedChild) {
  // Node 2 points back at the root.
  const std::string cycle = R"({"left_children": [1, -1, 0], "right_children": [2, -1, 1],
      "split_indices": [0, 0, 0], "split_conditions": [0.1, 10.0, 20.0],
      "default_left": [1, 0, 0]})";
  expect_mentions(load_error(model_json("[" + std::string(kStump) + "," + cycle + "]")),
                  {"trees[1].left_children[2]", "node 0 is reached twice", "not form a tree"});
  // Both children of the root are node 1.
  expect_mentions(load_error(replaced(kGood, "\"right_children\": [2,", "\"right_children\": [1,")),
                  {"trees[0].right_children[0]", "node 1 is reached twice"});
}

TEST(XGBoostRefusal, SplitIndexNotBelowNumFeature) {
  expect_mentions(load_error(replaced(kGood, "\"split_indices\": [0,", "\"split_indices\": [2,")),
                  {"trees[0].split_indices[0]", "feature 2", "num_feature 2"});
}

TEST(XGBoostRefusal, NonFiniteThresholdsAndLeaves) {
  expect_mentions(load_error(replaced(kGood, "[0.1, 10.0", "[\"NaN\", 10.0")),
                  {"trees[0].split_conditions[0]", "expected a finite number, got string"});
  const Status leaf = load_error(replaced(kGood, "[0.1, 10.0", "[0.1, 1e39"));
  expect_mentions(leaf, {"trees[0].split_conditions[1]", "float32"});
  EXPECT_EQ(leaf.code(), Code::kInvalidValue);
}

TEST(XGBoostRefusal, MissingOrMistypedParts) {
  expect_mentions(load_error(replaced(kGood, "\"trees\":", "\"forest\":")),
                  {"bad.json", "learner.gradient_booster.model.trees", "missing"});
  expect_mentions(load_error(replaced(kGood, "\"default_left\": [1, 0, 0]", "\"default_left\": [1, 0]")),
                  {"trees[0].default_left", "has 2 entries but left_children has 3"});
  expect_mentions(load_error(replaced(kGood, "\"default_left\": [1,", "\"default_left\": [2,")),
                  {"trees[0].default_left[0]", "expected 0, 1, true or false"});
  expect_mentions(load_error(replaced(kGood, "\"left_children\": [1,", "\"left_children\": [1.5,")),
                  {"trees[0].left_children[0]", "expected an integer"});
  expect_mentions(load_error(replaced(kGood, "\"base_score\": \"0.5\"", "\"base_score\": \"half\"")),
                  {"learner.learner_model_param.base_score", "\"half\""});
  expect_mentions(load_error(replaced(kGood, "\"num_feature\": \"2\"", "\"num_feature\": \"0\"")),
                  {"learner.learner_model_param.num_feature", "between 1 and"});
  expect_mentions(load_error(R"({"learner": {}})"),
                  {"bad.json", "learner.learner_model_param", "missing"});
  expect_mentions(load_error("[1, 2]"), {"bad.json", "expected an object, got array"});
}

TEST(XGBoostRefusal, LeafWithARightChild) {
  expect_mentions(load_error(replaced(kGood, "\"right_children\": [2, -1, -1]",
                                      "\"right_children\": [2, 2, -1]")),
                  {"trees[0].right_children[1]", "is a leaf"});
}

TEST(XGBoostRefusal, UnsupportedObjectivesBoostersAndShapesByName) {
  expect_mentions(load_error(replaced(kGood, "reg:squarederror", "reg:gamma")),
                  {"learner.objective.name", "\"reg:gamma\" is not supported"});
  expect_mentions(load_error(replaced(kGood, "reg:squarederror", "multi:softprob")),
                  {"\"multi:softprob\"", "multi-class"});
  expect_mentions(load_error(replaced(kGood, "\"name\": \"gbtree\"", "\"name\": \"gblinear\"")),
                  {"learner.gradient_booster.name", "\"gblinear\" is not supported"});
  expect_mentions(load_error(replaced(kGood, "\"num_class\": \"0\"", "\"num_class\": \"3\"")),
                  {"learner.learner_model_param.num_class", "multi-class", "3 classes"});
  expect_mentions(load_error(replaced(kGood, "\"num_target\": \"1\"", "\"num_target\": \"2\"")),
                  {"learner.learner_model_param.num_target", "multi-output"});
  expect_mentions(load_error(replaced(kGood, "\"default_left\": [1, 0, 0]}",
                                      "\"default_left\": [1, 0, 0], \"split_type\": [1, 0, 0]}")),
                  {"trees[0].split_type[0]", "categorical"});
  expect_mentions(load_error(replaced(kGood, "\"feature_types\": []", "\"feature_types\": [\"q\", \"c\"]")),
                  {"learner.feature_types[1]", "categorical"});
  // A sigmoid objective needs base_score to be a probability.
  expect_mentions(load_error(replaced(replaced(kGood, "reg:squarederror", "reg:logistic"),
                                      "\"base_score\": \"0.5\"", "\"base_score\": \"2\"")),
                  {"learner.learner_model_param.base_score", "between 0 and 1", "reg:logistic"});
}

}  // namespace
}  // namespace estimator::models
