// SPDX-License-Identifier: Apache-2.0
// The XGBoost loader against the reference library: libxgboost's C API loads the same
// JSON (XGBoosterLoadModelFromBuffer) and predicts the same rows (XGDMatrixCreateFromMat
// with missing = NaN). Rows are random, with missing values and values exactly at, just
// below and just above split thresholds, where the strict float32 `x < threshold` decides.
// Skips when the project was configured without libxgboost (Debian: libxgboost-dev and
// xgboost).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "models/stages.h"
#include "models/xgboost_model.h"
#include "test_files.h"

#ifdef ESTIMATOR_HAVE_LIBXGBOOST
#include <xgboost/c_api.h>
#endif

namespace estimator::models {
namespace {

#ifdef ESTIMATOR_HAVE_LIBXGBOOST

namespace fs = std::filesystem;

constexpr double kRelTol = 1e-5;
const fs::path kFixtures = ESTIMATOR_XGBOOST_FIXTURES;
const fs::path kKeplerZip =
    fs::path(ESTIMATOR_SHARED_DIR) / "model-samples/kepler-model-db/XgboostFitTrainer_1.zip";

using testing::read_file_bytes;
using testing::zip_member;

using RowMatrixF32 = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// libxgboost's predictions for `rows`; fails the test (and returns empty) on any error.
std::vector<float> reference_predict(const std::string& model_text, const RowMatrixF32& rows) {
  std::vector<float> out;
  BoosterHandle booster = nullptr;
  DMatrixHandle dmat = nullptr;
  auto check = [](int rc, const char* what) {
    if (rc != 0) ADD_FAILURE() << what << ": " << XGBGetLastError();
    return rc == 0;
  };
  if (check(XGBoosterCreate(nullptr, 0, &booster), "XGBoosterCreate") &&
      check(XGBoosterLoadModelFromBuffer(booster, model_text.data(), model_text.size()),
            "XGBoosterLoadModelFromBuffer") &&
      check(XGBoosterSetParam(booster, "nthread", "1"), "XGBoosterSetParam") &&
      check(XGDMatrixCreateFromMat(rows.data(), static_cast<bst_ulong>(rows.rows()),
                                   static_cast<bst_ulong>(rows.cols()),
                                   std::numeric_limits<float>::quiet_NaN(), &dmat),
            "XGDMatrixCreateFromMat")) {
    const char* config =
        R"({"type": 0, "training": false, "iteration_begin": 0, "iteration_end": 0,
            "strict_shape": false})";
    const bst_ulong* shape = nullptr;
    bst_ulong dims = 0;
    const float* result = nullptr;
    if (check(XGBoosterPredictFromDMatrix(booster, dmat, config, &shape, &dims, &result),
              "XGBoosterPredictFromDMatrix")) {
      bst_ulong size = 1;
      for (bst_ulong d = 0; d < dims; ++d) size *= shape[d];
      out.assign(result, result + size);
    }
  }
  if (dmat != nullptr) XGDMatrixFree(dmat);
  if (booster != nullptr) XGBoosterFree(booster);
  return out;
}

// Split thresholds of every internal node, by feature, as float32.
std::map<std::int64_t, std::vector<float>> thresholds(const std::string& model_text) {
  const nlohmann::json doc = nlohmann::json::parse(model_text);
  const auto& gb = doc.at("learner").at("gradient_booster");
  const auto& trees = gb.at("name") == "dart" ? gb.at("gbtree").at("model").at("trees")
                                              : gb.at("model").at("trees");
  std::map<std::int64_t, std::vector<float>> out;
  for (const auto& t : trees) {
    for (std::size_t i = 0; i < t.at("left_children").size(); ++i) {
      if (t["left_children"][i] == -1) continue;
      out[t["split_indices"][i].get<std::int64_t>()].push_back(
          t["split_conditions"][i].get<float>());
    }
  }
  return out;
}

// Rows whose cells are missing, a threshold of that feature, the float just below or just
// above one, or uniform in [0, scale).
RowMatrixF32 probe_rows(const std::string& model_text, Eigen::Index rows, Eigen::Index cols,
                        float scale, unsigned seed) {
  const auto by_feature = thresholds(model_text);
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> kind(0, 5);
  std::uniform_real_distribution<float> uniform(0.0F, scale);
  RowMatrixF32 x(rows, cols);
  for (Eigen::Index r = 0; r < rows; ++r) {
    for (Eigen::Index c = 0; c < cols; ++c) {
      const int k = kind(rng);
      const auto it = by_feature.find(c);
      float v = uniform(rng);
      if (k == 0) {
        v = std::numeric_limits<float>::quiet_NaN();
      } else if (k <= 3 && it != by_feature.end()) {
        const std::vector<float>& ts = it->second;
        v = ts[std::uniform_int_distribution<std::size_t>(0, ts.size() - 1)(rng)];
        if (k == 2) v = std::nextafter(v, -std::numeric_limits<float>::infinity());
        if (k == 3) v = std::nextafter(v, std::numeric_limits<float>::infinity());
      }
      x(r, c) = v;
    }
  }
  return x;
}

// Loads `model_text` with both, predicts `rows` and returns the largest relative error.
double compare(const std::string& label, const std::string& model_text, const RowMatrixF32& rows) {
  Result<std::unique_ptr<Regressor>> sut = load_xgboost_json(model_text, label);
  if (!sut.ok()) {
    ADD_FAILURE() << sut.status().to_string();
    return std::numeric_limits<double>::infinity();
  }
  const std::vector<float> want = reference_predict(model_text, rows);
  if (want.size() != static_cast<std::size_t>(rows.rows())) {
    ADD_FAILURE() << label << ": libxgboost gave " << want.size() << " predictions for "
                  << rows.rows() << " rows";
    return std::numeric_limits<double>::infinity();
  }
  const RowMatrixD x = rows.cast<double>();
  RowMatrixD got(rows.rows(), 1);
  Scratch scratch;
  (*sut)->predict(x, got, scratch);
  double worst = 0;
  for (Eigen::Index i = 0; i < rows.rows(); ++i) {
    const double w = want[static_cast<std::size_t>(i)];
    const double err = std::abs(got(i, 0) - w) / std::max(std::abs(w), 1e-12);
    worst = std::max(worst, err);
    EXPECT_LE(err, kRelTol) << label << " row " << i << ": got " << got(i, 0)
                            << ", libxgboost " << w;
  }
  std::cout << "[ measure  ] " << label << " vs libxgboost: max relative error " << worst
            << " over " << rows.rows() << " rows\n";
  return worst;
}

std::string with_objective(const std::string& model_text, const nlohmann::json& objective,
                           const char* base_score = nullptr) {
  nlohmann::ordered_json doc = nlohmann::ordered_json::parse(model_text);
  doc["learner"]["objective"] = objective;
  if (base_score != nullptr) doc["learner"]["learner_model_param"]["base_score"] = base_score;
  return doc.dump();
}

#define REQUIRE_LIBXGBOOST() (void)0

#else

#define REQUIRE_LIBXGBOOST() \
  GTEST_SKIP() << "built without libxgboost (install libxgboost-dev and xgboost, reconfigure)"

#endif

class LibXGBoostFixture : public ::testing::TestWithParam<const char*> {};

TEST_P(LibXGBoostFixture, AgreesOnRowsWithMissingValuesAndThresholds) {
  REQUIRE_LIBXGBOOST();
#ifdef ESTIMATOR_HAVE_LIBXGBOOST
  const std::optional<std::string> text = read_file_bytes(kFixtures / (std::string(GetParam()) + ".json"));
  ASSERT_TRUE(text.has_value()) << "fixture " << GetParam() << " missing under " << kFixtures;
  const RowMatrixF32 rows = probe_rows(*text, 1000, 5, 1.0F, 42);
  RecordProperty("max_relative_error", std::to_string(compare(GetParam(), *text, rows)));
#endif
}

INSTANTIATE_TEST_SUITE_P(Generated, LibXGBoostFixture,
                         ::testing::Values("squared_d3", "squared_d5", "dart_d4", "logistic_d3"));

TEST(LibXGBoost, OtherIdentityAndSigmoidObjectives) {
  REQUIRE_LIBXGBOOST();
#ifdef ESTIMATOR_HAVE_LIBXGBOOST
  const std::optional<std::string> squared = read_file_bytes(kFixtures / "squared_d3.json");
  const std::optional<std::string> logistic = read_file_bytes(kFixtures / "logistic_d3.json");
  ASSERT_TRUE(squared && logistic) << "fixtures missing under " << kFixtures;
  const RowMatrixF32 rows = probe_rows(*squared, 300, 5, 1.0F, 7);
  const nlohmann::json loss = {{"scale_pos_weight", "1"}};
  compare("reg:pseudohubererror",
          with_objective(*squared, {{"name", "reg:pseudohubererror"},
                                    {"pseudo_huber_param", {{"huber_slope", "1"}}}}),
          rows);
  compare("reg:absoluteerror", with_objective(*squared, {{"name", "reg:absoluteerror"}}), rows);
  compare("reg:squaredlogerror",
          with_objective(*squared, {{"name", "reg:squaredlogerror"}, {"reg_loss_param", loss}}),
          rows);
  compare("binary:logistic",
          with_objective(*logistic, {{"name", "binary:logistic"}, {"reg_loss_param", loss}},
                         "7E-1"),
          probe_rows(*logistic, 300, 5, 1.0F, 8));
#endif
}

TEST(LibXGBoost, KeplerXgboostFitTrainer1AllComponents) {
  REQUIRE_LIBXGBOOST();
#ifdef ESTIMATOR_HAVE_LIBXGBOOST
  for (const char* member : {"package.json", "core.json", "uncore.json", "dram.json"}) {
    const std::optional<std::string> text = zip_member(kKeplerZip, member);
    if (!text) GTEST_SKIP() << "needs " << kKeplerZip << " (the shared/ folder beside the repository)";
    // The model's inputs are MaxAbsScaler outputs: mostly in [0, 1].
    const RowMatrixF32 rows = probe_rows(*text, 1000, 5, 1.0F, 11);
    compare(std::string("XgboostFitTrainer_1/") + member, *text, rows);
  }
#endif
}

}  // namespace
}  // namespace estimator::models
