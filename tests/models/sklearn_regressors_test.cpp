// SPDX-License-Identifier: Apache-2.0
// scikit-learn's regressors (and XGBoost's XGBRegressor) read from pickles written at test
// time by tools/gen_sklearn_regressors.py with Debian's scikit-learn, in joblib and plain
// pickle forms and in the hand-made layouts of other versions (numpy 2 module names, the
// tree node dtype of scikit-learn 1.3+, no n_features_in_), compared with the fitted
// estimator's own predict(). Classifiers and custom classes are refused by name.
// XGBRegressors trained with early stopping predict with the rounds up to best_iteration,
// as the wrapper does; their boosters saved as Booster files use every tree, as
// Booster.predict does.
#include "models/sklearn_model.h"
#include "models/xgboost_model.h"
#include "models/xgboost_ubjson.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <variant>
#include <vector>

#include "tests/support/shell_command.h"
#include "tests/support/files.h"

namespace estimator::models {
namespace {

using estimator::testing::read_file;

namespace fs = std::filesystem;
using nlohmann::json;
using estimator::testing::command_output;
using estimator::testing::shell_quote;

// Runs the generator once per test binary; the directory, or "" when there is no
// /usr/bin/python3 with scikit-learn (the tests then skip).
const fs::path& generated() {
  static const fs::path dir = []() -> fs::path {
    if (!command_output("/usr/bin/python3 -c 'import sklearn, joblib, numpy' 2>/dev/null"))
      return {};
    char tmpl[] = "/tmp/sklearn_regressors_XXXXXX";
    if (mkdtemp(tmpl) == nullptr) return {};
    const fs::path out(tmpl);
    const std::string cmd = "/usr/bin/python3 " + shell_quote(SKLEARN_REGRESSORS_SCRIPT) + " " +
                            shell_quote(out.string()) + " 2>/dev/null";
    if (!command_output(cmd)) {
      ADD_FAILURE() << "the generator failed: " << cmd;
      return {};
    }
    return out;
  }();
  return dir;
}

#define REQUIRE_GENERATED()                                                                  \
  if (generated().empty()) {                                                                 \
    GTEST_SKIP() << "/usr/bin/python3 with scikit-learn, joblib and numpy is not installed: " \
                    "no files and no reference to compare with";                             \
  }

json manifest() { return json::parse(read_file(generated() / "manifest.json")); }

RowMatrixD matrix(const json& rows) {
  RowMatrixD m(static_cast<Eigen::Index>(rows.size()), static_cast<Eigen::Index>(rows[0].size()));
  for (std::size_t r = 0; r < rows.size(); ++r) {
    for (std::size_t c = 0; c < rows[r].size(); ++c)
      m(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(c)) = rows[r][c].get<double>();
  }
  return m;
}

bool is_tree_model(const std::string& cls) {
  return cls.find("Tree") != std::string::npos || cls.find("Forest") != std::string::npos;
}

// Linear models and SVR to 1e-6 relative; trees exactly up to float rounding (the leaves
// are the same doubles; only the order of a forest's additions could differ); XGBoost
// predicts in float32.
double tolerance(const std::string& cls) {
  if (cls == "XGBRegressor") return 1e-6;
  if (is_tree_model(cls)) return 1e-12;
  return 1e-6;
}

TEST(SklearnRegressors, EveryClassAndFormMatchesScikitLearnsPredict) {
  REQUIRE_GENERATED();
  const json doc = manifest();
  std::map<std::string, double> worst;  // class -> largest relative difference
  std::map<std::string, int> files;
  for (const json& m : doc["models"]) {
    const std::string name = m["name"];
    const std::string cls = m["class"];
    SCOPED_TRACE(name);
    const std::string file = m["file"];
    auto stage = load_sklearn_pickle(read_file(generated() / file), file);
    ASSERT_TRUE(stage.ok()) << stage.status().to_string();
    auto* reg = std::get_if<std::unique_ptr<Regressor>>(&*stage);
    ASSERT_TRUE(reg != nullptr && *reg) << name << " is not a regressor";
    const RowMatrixD rows = matrix(m["rows"]);
    const RowMatrixD expected = matrix(m["expected"]);
    ASSERT_EQ((*reg)->inputs(), rows.cols());
    ASSERT_EQ((*reg)->outputs(), expected.cols());
    RowMatrixD out(rows.rows(), expected.cols());
    Scratch scratch;
    (*reg)->predict(rows, out, scratch);
    double rel = 0;
    for (Eigen::Index r = 0; r < rows.rows(); ++r) {
      for (Eigen::Index k = 0; k < expected.cols(); ++k) {
        const double e = expected(r, k);
        const double d = std::fabs(out(r, k) - e) / std::max(std::fabs(e), 1e-300);
        rel = std::max(rel, d);
        ASSERT_LE(d, tolerance(cls)) << "row " << r << " output " << k << ": " << out(r, k)
                                     << " vs scikit-learn's " << e;
      }
    }
    worst[cls] = std::max(worst[cls], rel);
    ++files[cls];
  }
  for (const auto& [cls, rel] : worst) {
    std::cout << "[ reference ] " << cls << ": " << files[cls]
              << " files, largest relative difference " << rel << "\n";
    ::testing::Test::RecordProperty("max_rel_" + cls, std::to_string(rel));
  }
  for (const char* cls :
       {"Ridge", "RidgeCV", "Lasso", "LassoCV", "ElasticNet", "ElasticNetCV", "LinearSVR",
        "DecisionTreeRegressor", "RandomForestRegressor", "ExtraTreesRegressor"}) {
    EXPECT_GT(files[cls], 0) << cls << " was not generated";
  }
}

// Predictions of `reg` on `rows`.
RowMatrixD predict(const Regressor& reg, const RowMatrixD& rows) {
  RowMatrixD out(rows.rows(), reg.outputs());
  Scratch scratch;
  reg.predict(rows, out, scratch);
  return out;
}

TEST(SklearnRegressors, BoosterFilesOfEarlyStoppedModelsUseEveryTree) {
  REQUIRE_GENERATED();
  const json doc = manifest();
  if (doc["boosters"].empty()) GTEST_SKIP() << "python3-xgboost is not installed";
  for (const json& b : doc["boosters"]) {
    const std::string file = b["file"];
    SCOPED_TRACE(file);
    const std::string bytes = read_file(generated() / file);
    Result<std::unique_ptr<Regressor>> booster = file.ends_with(".ubj")
                                                     ? load_xgboost_ubjson(bytes, file)
                                                     : load_xgboost_json(bytes, file);
    ASSERT_TRUE(booster.ok()) << booster.status().to_string();
    const RowMatrixD rows = matrix(b["rows"]);
    const RowMatrixD expected = matrix(b["expected"]);
    const RowMatrixD got = predict(**booster, rows);
    for (Eigen::Index r = 0; r < rows.rows(); ++r) {
      EXPECT_NEAR(got(r, 0), expected(r, 0), 1e-6 * std::max(1.0, std::fabs(expected(r, 0))))
          << "row " << r;
    }
    // The pickle of the same model stops at best_iteration: its answers differ.
    const std::string pickle = b["name"].get<std::string>() + "_joblib.pkl";
    auto stage = load_sklearn_pickle(read_file(generated() / pickle), pickle);
    ASSERT_TRUE(stage.ok()) << stage.status().to_string();
    auto* wrapper = std::get_if<std::unique_ptr<Regressor>>(&*stage);
    ASSERT_TRUE(wrapper != nullptr && *wrapper);
    EXPECT_FALSE(predict(**wrapper, rows).isApprox(got, 1e-6)) << "nothing was cut";
  }
}

TEST(SklearnRegressors, AMalformedBestIterationIsRefused) {
  REQUIRE_GENERATED();
  std::string bytes = read_file(generated() / "xgbregressor_early_joblib.pkl");
  if (bytes.empty()) GTEST_SKIP() << "python3-xgboost is not installed";
  // In the booster's UBJSON the attribute is a string: S, its length (a type marker and
  // an integer of that type), its digits.
  const std::string key = "best_iterationS";
  const std::size_t at = bytes.find(key);
  ASSERT_NE(at, std::string::npos);
  const std::size_t marker = at + key.size();
  const std::map<char, std::size_t> widths = {{'i', 1}, {'U', 1}, {'I', 2}, {'l', 4}, {'L', 8}};
  ASSERT_TRUE(marker < bytes.size() && widths.contains(bytes[marker]));
  const std::size_t digit = marker + 1 + widths.at(bytes[marker]);
  ASSERT_LT(digit, bytes.size());
  ASSERT_TRUE(bytes[digit] >= '0' && bytes[digit] <= '9');
  bytes[digit] = 'x';
  auto stage = load_sklearn_pickle(bytes, "early.pkl");
  ASSERT_FALSE(stage.ok());
  EXPECT_NE(stage.status().message().find(
                "learner.attributes.best_iteration: expected a non-negative integer"),
            std::string::npos)
      << stage.status().message();
}

TEST(SklearnRegressors, VersionLayoutsAreReallyDifferentFiles) {
  REQUIRE_GENERATED();
  // The hand-made layouts must differ from the installed one where it matters, or the
  // comparison above proves nothing about them.
  const std::string numpy2 = read_file(generated() / "forest_numpy2_pickle2.pkl");
  EXPECT_NE(numpy2.find("numpy._core.multiarray"), std::string::npos);
  EXPECT_EQ(numpy2.find("numpy.core."), std::string::npos);
  EXPECT_NE(read_file(generated() / "forest_missing.pkl").find("missing_go_to_left"),
            std::string::npos);
  EXPECT_EQ(read_file(generated() / "forest_joblib.pkl").find("missing_go_to_left"),
            std::string::npos);
  EXPECT_EQ(read_file(generated() / "ridge_nofeatures.pkl").find("n_features_in_"),
            std::string::npos);
}

TEST(SklearnRegressors, ClassifiersAndCustomClassesAreRefusedByName) {
  REQUIRE_GENERATED();
  const json doc = manifest();
  ASSERT_FALSE(doc["refused"].empty());
  for (const json& m : doc["refused"]) {
    const std::string file = m["file"];
    SCOPED_TRACE(file);
    auto stage = load_sklearn_pickle(read_file(generated() / file), file);
    ASSERT_FALSE(stage.ok());
    EXPECT_EQ(stage.status().code(), Code::kInvalidArgument);
    const std::string msg = stage.status().message();
    EXPECT_EQ(msg.rfind(file + ": ", 0), 0u) << msg;
    EXPECT_NE(msg.find(m["needle"].get<std::string>()), std::string::npos) << msg;
  }
}

TEST(SklearnRegressors, DamagedFilesAreRefusedNeverCrash) {
  REQUIRE_GENERATED();
  // Truncations and flipped bytes of one file per new family: each load either refuses or
  // gives a model whose predictions are finite or not, but it returns.
  for (const char* file : {"forest_2out_joblib.pkl", "tree_missing.pkl", "ridge_pickle2.pkl",
                           "linearsvr_numpy2_pickle5.pkl", "xgbregressor_pickle5.pkl"}) {
    const std::string bytes = read_file(generated() / file);
    if (bytes.empty()) continue;  // xgboost absent
    SCOPED_TRACE(file);
    for (std::size_t cut = 0; cut < bytes.size(); cut += 1 + bytes.size() / 97) {
      EXPECT_FALSE(load_sklearn_pickle(bytes.substr(0, cut), file).ok()) << "cut at " << cut;
    }
    std::uint32_t seed = 12345;
    for (int i = 0; i < 300; ++i) {
      std::string damaged = bytes;
      seed = seed * 1664525u + 1013904223u;
      damaged[seed % damaged.size()] ^= static_cast<char>(1 + (seed >> 24) % 255);
      auto stage = load_sklearn_pickle(damaged, file);
      if (!stage.ok()) {
        EXPECT_FALSE(stage.status().message().empty());
      }
    }
  }
}

}  // namespace
}  // namespace estimator::models
