// SPDX-License-Identifier: Apache-2.0
// Kepler's published zips that issue 18 item 1 makes loadable
// (../shared/model-samples/kepler-model-db-more, skipped when absent):
//   - KNeighborsRegressorTrainer_1 (v0.6 rapl): _y is an object array of Python floats;
//   - SVRRegressorTrainer_1 (v0.6 acpi): platform.pkl is Pipeline([None, SVR]);
//   - LogarithmicRegressionTrainer_0 (v0.7): trainer.curvefit.CurveFitModel pickles.
// Each is loaded as the registry loads a zip and compared, on rows within and beyond the
// training range, with tools/kepler_model_db_more_reference.py (scikit-learn itself; the
// curve fits by hand with numpy from popt read by a restricted unpickler) to 1e-5 relative;
// the curve fit also with the weight-JSON form of the same model.
// Then fixtures of our own (tools/gen_kepler_model_db_more_fixtures.py, with scikit-learn's
// or numpy's outputs): object arrays of ints and floats, Pipelines with skipped steps and
// several transforms, the three curves, and the refusals (a str in an object array, an
// unsupported or misplaced Pipeline step, an unknown curve function).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "models/registry.h"
#include "models/sklearn_model.h"
#include "test_files.h"
#include "test_util.h"
#include "tests/support/shell_command.h"

namespace estimator::models {
namespace {

namespace fs = std::filesystem;
using ::estimator::testing::command_output;
using ::estimator::testing::shell_quote;
using testing::evaluate;

const fs::path kSamples = fs::path(ESTIMATOR_SHARED_DIR) / "model-samples" / "kepler-model-db-more";
const fs::path kFixtures = fs::path(ESTIMATOR_FIXTURES_DIR) / "kepler_model_db_more";
constexpr double kTolerance = 1e-5;  // KEPLER.md section 6

const char* const kKnn = "v0.6_nx12_rapl_AbsPower_CounterOnly_KNeighborsRegressorTrainer_1.zip";
const char* const kSvr = "v0.6_nx12_acpi_AbsPower_CounterOnly_SVRRegressorTrainer_1.zip";
const char* const kCurve =
    "v0.7_ec2_intel_rapl_AbsPower_BPFOnly_LogarithmicRegressionTrainer_0.zip";

#define REQUIRE_SAMPLE(zip)                                                                      \
  if (!fs::exists(kSamples / (zip))) {                                                           \
    GTEST_SKIP() << "Kepler's zip " << (kSamples / (zip)).string()                               \
                 << " is not there (the shared/ folder beside the repository): nothing to load"; \
  }

bool have_sklearn() {
  static const bool ok =
      std::system("/usr/bin/python3 -c 'import sklearn, joblib, numpy' >/dev/null 2>&1") == 0;
  return ok;
}

#define REQUIRE_REFERENCE()                                                                   \
  if (!have_sklearn()) {                                                                      \
    GTEST_SKIP() << "/usr/bin/python3 with scikit-learn, joblib and numpy is not installed: " \
                    "no reference to compare with";                                           \
  }

std::unique_ptr<Model> load_zip(const char* zip) {
  auto members = testing::zip_members(kSamples / zip);
  if (!members) {
    ADD_FAILURE() << "cannot read " << zip;
    return nullptr;
  }
  return testing::must_load(testing::make_folder((kSamples / zip).string(), std::move(*members)));
}

RowMatrixF to_matrix(const std::vector<std::vector<double>>& rows) {
  RowMatrixF m(static_cast<Eigen::Index>(rows.size()), static_cast<Eigen::Index>(rows[0].size()));
  for (std::size_t r = 0; r < rows.size(); ++r) {
    for (std::size_t c = 0; c < rows[r].size(); ++c) {
      m(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(c)) =
          static_cast<float>(rows[r][c]);
    }
  }
  return m;
}

// Every combination of per-feature values (feature 0 varying fastest), then random rows
// drawn from [0, 1.6 x the first value list's maximum] per feature.
std::vector<std::vector<double>> grid(const std::vector<std::vector<double>>& values) {
  std::vector<std::vector<double>> rows = {{}};
  for (const auto& column : values) {
    std::vector<std::vector<double>> next;
    for (double v : column) {
      for (auto row : rows) {
        row.push_back(v);
        next.push_back(std::move(row));
      }
    }
    rows = std::move(next);
  }
  std::mt19937 rng(18);
  for (int i = 0; i < 16; ++i) {
    std::vector<double> row;
    for (const auto& column : values) {
      const double top = *std::max_element(column.begin(), column.end());
      row.push_back(std::uniform_real_distribution<double>(0.0, 1.6 * top)(rng));
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

// The reference script's JSON for `zip` on `rows`; null (with a failure) when it fails.
nlohmann::json reference(const char* zip, const RowMatrixF& rows) {
  const fs::path in = fs::temp_directory_path() / ("kepler_more_rows_" + std::to_string(getpid()));
  {
    std::ofstream out(in);
    char buf[32];
    for (Eigen::Index r = 0; r < rows.rows(); ++r) {
      for (Eigen::Index c = 0; c < rows.cols(); ++c) {
        std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(rows(r, c)));
        out << buf << (c + 1 == rows.cols() ? "\n" : ",");
      }
    }
  }
  const std::string cmd = "/usr/bin/python3 " + shell_quote(KEPLER_MODEL_DB_MORE_REFERENCE) + " " +
                          shell_quote((kSamples / zip).string()) + " < " + shell_quote(in.string());
  const std::optional<std::string> text = command_output(cmd);
  fs::remove(in);
  if (!text) {
    ADD_FAILURE() << "reference script failed: " << cmd;
    return nullptr;
  }
  return nlohmann::json::parse(*text);
}

// Compares every component of `model` on `rows` with the reference (negatives clamped to
// 0, as the daemon answers); returns the largest relative difference.
double expect_matches_reference(const Model& model, const RowMatrixF& rows,
                                const nlohmann::json& ref) {
  std::vector<std::string_view> columns(model.info().features.begin(), model.info().features.end());
  const testing::Evaluation e = evaluate(model, columns, rows);
  EXPECT_TRUE(e.status.ok()) << e.status.to_string();
  double worst = 0;
  for (std::size_t c = 0; c < model.info().components.size(); ++c) {
    const std::string& name = model.info().components[c];
    const auto want = ref.at("components").at(name).get<std::vector<double>>();
    EXPECT_EQ(want.size(), static_cast<std::size_t>(rows.rows())) << name;
    for (std::size_t r = 0; r < want.size() && e.status.ok(); ++r) {
      const double w = std::max(want[r], 0.0);
      const double got = e.out(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(c));
      const double rel = std::abs(got - w) / std::max(std::abs(w), 1e-9);
      worst = std::max(worst, rel);
      EXPECT_LE(rel, kTolerance) << name << " row " << r << ": got " << got << ", reference " << w;
    }
  }
  return worst;
}

// ---- Kepler's zips ------------------------------------------------------------------

TEST(KeplerModelDbMore, KNeighborsWithObjectTargetsMatchesScikitLearn) {
  REQUIRE_SAMPLE(kKnn);
  auto m = load_zip(kKnn);
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->info().components, (std::vector<std::string>{"package", "core", "uncore", "dram"}));
  EXPECT_EQ(m->info().features,
            (std::vector<std::string>{"cache_miss", "cpu_cycles", "cpu_instructions"}));
  REQUIRE_REFERENCE();
  // scaler.pkl is a MinMaxScaler: data_max_ 9.869e7, 5.462e10, 0 (cpu_instructions is 0
  // in training; small values keep the neighbours from tying in the last bit).
  const RowMatrixF rows = to_matrix(grid({{0, 2.5e5, 1e6, 1e7, 2.5e7, 5e7, 9.87e7, 1.5e8, 3e8},
                                          {0, 1.5e8, 5e9, 2e10, 5.46e10, 8e10},
                                          {0, 2}}));
  const nlohmann::json ref = reference(kKnn, rows);
  ASSERT_FALSE(ref.is_null());
  const double worst = expect_matches_reference(*m, rows, ref);
  std::printf("KNeighborsRegressorTrainer_1: %ld rows, largest relative difference %.3g\n",
              static_cast<long>(rows.rows()), worst);
}

TEST(KeplerModelDbMore, PipelineOfNoneAndSvrMatchesScikitLearn) {
  REQUIRE_SAMPLE(kSvr);
  auto m = load_zip(kSvr);
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->info().components, std::vector<std::string>{"platform"});
  REQUIRE_REFERENCE();
  // scaler.pkl is a StandardScaler: mean_ 1.10e7, 1.06e10, 0; scale_ 1.87e7, 1.23e10, 1.
  const RowMatrixF rows = to_matrix(
      grid({{0, 1e6, 1.1e7, 3e7, 6e7, 1e8, 2e8}, {0, 1e9, 1.06e10, 2.3e10, 5e10, 1e11}, {0, 1.5}}));
  const nlohmann::json ref = reference(kSvr, rows);
  ASSERT_FALSE(ref.is_null());
  const double worst = expect_matches_reference(*m, rows, ref);
  std::printf("SVRRegressorTrainer_1: %ld rows, largest relative difference %.3g\n",
              static_cast<long>(rows.rows()), worst);
}

// scaler.pkl's max_abs_: bpf_cpu_time_ms 45613.33, bpf_page_cache_hit 0 (scale 1).
RowMatrixF curve_rows() {
  return to_matrix(grid(
      {{0, 5, 45, 456, 4561, 11403, 22807, 34210, 45613, 68420, 136840}, {0, 1, 10, 1000, 1e5}}));
}

TEST(KeplerModelDbMore, CurveFitPicklesMatchTheTrainersFormula) {
  REQUIRE_SAMPLE(kCurve);
  auto m = load_zip(kCurve);
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->info().model_class, "curvefit");
  EXPECT_EQ(m->info().components, (std::vector<std::string>{"package", "core", "uncore", "dram"}));
  EXPECT_EQ(m->info().features,
            (std::vector<std::string>{"bpf_cpu_time_ms", "bpf_page_cache_hit"}));
  REQUIRE_REFERENCE();
  const RowMatrixF rows = curve_rows();
  const nlohmann::json ref = reference(kCurve, rows);
  ASSERT_FALSE(ref.is_null());
  // The pickles' own feature index: dram's curve reads bpf_page_cache_hit.
  EXPECT_EQ(ref.at("feature_index").at("dram"), 1);
  EXPECT_EQ(ref.at("feature_index").at("package"), 0);
  const double worst = expect_matches_reference(*m, rows, ref);
  std::printf("LogarithmicRegressionTrainer_0: %ld rows, largest relative difference %.3g\n",
              static_cast<long>(rows.rows()), worst);
}

TEST(KeplerModelDbMore, CurveFitPicklesAgreeWithTheirWeightJsonForm) {
  REQUIRE_SAMPLE(kCurve);
  REQUIRE_REFERENCE();
  auto zip = load_zip(kCurve);
  ASSERT_NE(zip, nullptr);
  const RowMatrixF rows = curve_rows();
  const nlohmann::json ref = reference(kCurve, rows);
  ASSERT_FALSE(ref.is_null());
  // The weight JSON CurveFitTrainer.get_weight_dict writes for the same fit.
  auto weights = testing::must_load(testing::weight_folder(
      "LogarithmicRegressionTrainer_0",
      R"({"model_name": "LogarithmicRegressionTrainer_0", "model_class": "curvefit",
          "model_file": "weights.json", "features": ["bpf_cpu_time_ms", "bpf_page_cache_hit"]})",
      ref.at("weight_json").dump()));
  ASSERT_NE(weights, nullptr);
  const std::vector<std::string_view> columns = {"bpf_cpu_time_ms", "bpf_page_cache_hit"};
  const testing::Evaluation a = evaluate(*zip, columns, rows);
  const testing::Evaluation b = evaluate(*weights, columns, rows);
  ASSERT_TRUE(a.status.ok()) << a.status.to_string();
  ASSERT_TRUE(b.status.ok()) << b.status.to_string();
  // The weight form always reads the first feature; it agrees where the pickle does too
  // (every component but dram, whose pickle reads bpf_page_cache_hit).
  const std::vector<std::string>& names = weights->info().components;
  int compared = 0;
  for (std::size_t c = 0; c < zip->info().components.size(); ++c) {
    const std::string& name = zip->info().components[c];
    if (ref.at("feature_index").at(name) != 0) continue;
    const auto it = std::find(names.begin(), names.end(), name);
    ASSERT_NE(it, names.end()) << name;
    ++compared;
    const auto wc = static_cast<Eigen::Index>(it - names.begin());
    for (Eigen::Index r = 0; r < rows.rows(); ++r) {
      EXPECT_TRUE(testing::near_rel(b.out(r, wc), a.out(r, static_cast<Eigen::Index>(c)), 1e-6))
          << name << " row " << r;
    }
  }
  EXPECT_EQ(compared, 3);
}

// ---- fixtures of our own --------------------------------------------------------------

nlohmann::json manifest() {
  const auto text = testing::read_file_bytes(kFixtures / "manifest.json");
  if (!text) {
    ADD_FAILURE() << "no " << (kFixtures / "manifest.json").string();
    return nlohmann::json::object();
  }
  return nlohmann::json::parse(*text);
}

Result<SklearnStage> load_fixture(const std::string& file) {
  const auto bytes = testing::read_file_bytes(kFixtures / file);
  if (!bytes) return Status(Code::kNotFound, "no fixture " + file);
  return load_sklearn_pickle(*bytes, file);
}

TEST(KeplerModelDbMoreFixtures, AcceptedOnesMatchTheirReference) {
  const nlohmann::json m = manifest();
  const auto rows_list = m.at("rows").get<std::vector<std::vector<double>>>();
  RowMatrixD rows(static_cast<Eigen::Index>(rows_list.size()), 3);
  for (std::size_t r = 0; r < rows_list.size(); ++r) {
    for (Eigen::Index c = 0; c < 3; ++c)
      rows(static_cast<Eigen::Index>(r), c) = rows_list[r][static_cast<std::size_t>(c)];
  }
  ASSERT_EQ(m.at("accepted").size(), 6u);
  for (const auto& entry : m.at("accepted")) {
    const std::string file = entry.at("file");
    SCOPED_TRACE(file);
    Result<SklearnStage> stage = load_fixture(file);
    ASSERT_TRUE(stage.ok()) << stage.status().to_string();
    auto* r = std::get_if<std::unique_ptr<Regressor>>(&*stage);
    ASSERT_TRUE(r != nullptr && *r != nullptr);
    EXPECT_TRUE(takes_width(**r, 3)) << (*r)->describe();
    Scratch scratch;
    RowMatrixD out(rows.rows(), 1);
    (*r)->predict(rows, out, scratch);
    const auto want = entry.at("expected").get<std::vector<double>>();
    for (std::size_t i = 0; i < want.size(); ++i) {
      EXPECT_TRUE(testing::near_rel(want[i], out(static_cast<Eigen::Index>(i), 0), kTolerance))
          << "row " << i;
    }
  }
}

TEST(KeplerModelDbMoreFixtures, PipelineStepsAreListed) {
  Result<SklearnStage> stage = load_fixture("pipeline_chain.pkl");
  ASSERT_TRUE(stage.ok()) << stage.status().to_string();
  EXPECT_EQ(std::get<std::unique_ptr<Regressor>>(*stage)->describe(),
            "Pipeline(StandardScaler(3) -> PolynomialFeatures(3->10, degree 2) -> Ridge(10))");
}

TEST(KeplerModelDbMoreFixtures, RefusedOnesNameWhatIsUnsupported) {
  const nlohmann::json m = manifest();
  ASSERT_EQ(m.at("refused").size(), 6u);
  for (const auto& entry : m.at("refused")) {
    const std::string file = entry.at("file");
    Result<SklearnStage> stage = load_fixture(file);
    ASSERT_FALSE(stage.ok()) << file << " was accepted";
    EXPECT_EQ(stage.status().code(), Code::kInvalidArgument) << file;
    EXPECT_NE(stage.status().message().find(entry.at("message").get<std::string>()),
              std::string::npos)
        << file << ": " << stage.status().message();
  }
}

}  // namespace
}  // namespace estimator::models
