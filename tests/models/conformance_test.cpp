// SPDX-License-Identifier: Apache-2.0
// The properties every model format must have, checked on every format by one
// value-parameterised suite (DESIGN.md section 7, docs/models.md "Formats"):
//
//   BatchIndependence   row i's answer is the same alone, in batches of 7, 64 and 1000, at
//                       any position and among any other rows (bit for bit). Ratio models
//                       split measured node power over the batch by design: for them only
//                       the row order may not matter (a permuted batch permutes the answers).
//   StridedViews        predict() reads its rows from a window in the middle of a larger
//                       matrix and writes exactly rows x components floats into a window of
//                       a larger buffer (Model's views are dense row-major, so a "strided"
//                       view at this interface is an offset window; the stage-level
//                       outer-stride case is keras_model_test's): nothing around it changes
//                       and the values equal those of a view of its own.
//   NoAllocationAfterPlan  once a plan has served its largest batch, predict() of 1000, 64,
//                       7 and 1 rows allocates nothing: operator new and malloc are counted
//                       (tests/support/allocation_counter.h; malloc only without sanitizers).
//   NonFiniteInputs     "as documented" means (docs/models.md, "NaN and infinity"): the
//                       daemon refuses NaN and infinities before any model runs
//                       (service/request_handler.cpp), so at the Model interface the rule
//                       is that predict() never returns Ok with a non-finite or negative
//                       output. A non-finite value in a column the model evaluates is
//                       either refused with kInvalidValue or answered with finite values,
//                       as the Format declares for NaN and for infinities separately
//                       (conformance.h: arithmetic refuses; tree splits take a branch;
//                       saturating curves answer infinities); when answered, the other rows
//                       keep their answers. A non-finite value in a column the model does
//                       not use changes nothing.
//   NegativeClamp       over a sweep that includes negative and large inputs every output
//                       is >= 0 (model.h: negative predictions are clamped to 0); where the
//                       Format's sweep reaches negative raw predictions, zeros occur.
//   ConcurrentPredicts  four threads predicting on one model at once, each with its own
//                       plan (model.h: a plan holds predict()'s scratch and serves one thread
//                       at a time; a model serves any number), get the single-threaded
//                       answers.
//   HostileParameters   plan() refuses a request lacking a feature (kMissingFeatures naming
//                       it) and one with no columns; predict() refuses another model's plan,
//                       a matrix of other columns than the plan's and an output of the
//                       wrong shape, and answers zero rows with Ok.
//
// Adding a format: one line in kFormats below (a name, the folder it loads from with
// conformance.h's single_file/json_model helpers, its features, and what it does with
// NaN and infinities). New scikit-learn classes, Keras layers and UBJSON XGBoost files get
// the whole suite that way. Separate binary: it replaces operator new and malloc.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "models/registry.h"
#include "tests/models/conformance.h"

#define ESTIMATOR_COUNT_MALLOC 1
#include "tests/support/allocation_counter.h"

namespace estimator::models::conformance {
namespace {

const std::string kFixtures = ESTIMATOR_FIXTURES_DIR;
const std::string kSklearn = kFixtures + "/sklearn";
const std::string kSklearnMore = kFixtures + "/sklearn_more";  // tools/gen_conformance_fixtures.py
const std::string kXgboost = kFixtures + "/xgboost";
const std::string kXgboostUbj = kFixtures + "/xgboost_ubj";
const std::string kKeras = kFixtures + "/keras";
const std::string kDbMore = kFixtures + "/kepler_model_db_more";

const std::vector<std::string> kF5 = numbered("f", 5);
const std::vector<std::string> kF4 = numbered("f", 4);
const std::vector<std::string> kF3 = numbered("f", 3);

constexpr NonFinite kRefused = NonFinite::kRefused;
constexpr NonFinite kAnswered = NonFinite::kAnswered;
constexpr NonFinite kBySign = NonFinite::kBySign;

// Kepler weight JSON with every kind of term: bias, a categorical weight, scale and
// mean/variance normalisation; negative weights so that the sweep goes below 0.
const char* const kLinearWeights = R"({
  "package": {"All_Weights": {"Bias_Weight": 3.0,
    "Categorical_Variables": {"cpu_architecture": {"Sky Lake": {"weight": 1.5}}},
    "Numerical_Variables": {"cpu_cycles": {"scale": 2.0, "weight": 1.0},
                            "cache_miss": {"mean": 1.0, "variance": 4.0, "weight": -2.0}}}},
  "dram": {"All_Weights": {"Bias_Weight": 1.0,
    "Numerical_Variables": {"cpu_cycles": {"scale": 8.0, "weight": -1.0},
                            "cache_miss": {"scale": 4.0, "weight": 0.5}}}}})";

std::string curve(const char* weights) {
  return std::string(R"({"package": {"All_Weights": {"Bias_Weight": 0.0,
      "Categorical_Variables": {},
      "Numerical_Variables": {"cpu_cycles": {"scale": 100.0}, "cache_miss": {"scale": 1.0}},
      "CurveFit_Weights": )") + weights + "}}}";
}
const std::vector<std::string> kWeightFeatures = {"cpu_cycles", "cache_miss"};

// A model-server component map: each component its own scaler chain and regressor.
const char* const kComponentMap = R"({
  "package": {"model_file": "linear.pkl", "features": ["f0", "f1", "f2", "f3", "f4"],
              "fe_files": ["standard.pkl"]},
  "core":    {"model_file": "gb.pkl", "features": ["f0", "f1", "f2", "f3", "f4"],
              "fe_files": ["maxabs.pkl"]},
  "dram":    {"model_file": "svr_rbf.pkl", "features": ["f0", "f1", "f2", "f3", "f4"],
              "fe_files": ["minmax.pkl"]}})";

std::map<std::string, std::string> sklearn_files(std::initializer_list<const char*> names) {
  std::map<std::string, std::string> files;
  for (const char* n : names) files[n] = read_fixture(kSklearn + "/" + n);
  return files;
}

// Every format that loads today. Ratio models need the node power below.
const Format kFormats[] = {
    // ---- Kepler weight JSON: linear and each curve kind
    {"WeightLinear", json_model("W", "", kLinearWeights), kWeightFeatures, kRefused, kRefused,
     0, 100, -100, 1000, true, true},
    {"WeightExponential",
     json_model("ExponentialRegressionTrainer_1", "", curve("[2.0, 0.5, -5.0]")),
     kWeightFeatures, kRefused, kBySign, 0, 100, -100, 1000, true, true},
    {"WeightLogarithmic",
     json_model("LogarithmicRegressionTrainer_1", "", curve("[1.0, 1.0, -2.0]")),
     kWeightFeatures, kRefused, kRefused, 0, 100, 0, 1000, true, true},
    {"WeightLogistic",
     json_model("LogisticRegressionTrainer_1", "", curve("[10.0, 1.0, 2.0, -3.0]")),
     kWeightFeatures, kRefused, kAnswered, 0, 100, -100, 1000, true, true},
    // ---- ratio models (node power split by usage)
    {"Ratio",
     json_model("R", R"(, "model_class": "ratio")",
                R"({"components": {"package": "cpu_instructions", "dram": "cache_miss"}})"),
     {"cpu_instructions", "cache_miss"}, kRefused, kRefused, 0, 100, 0, 1000, false},
    {"CorrRatio",
     json_model("CorrRatio", R"(, "model_class": "ratio", "features": ["a", "b"])",
                R"({"core_score": {"a": 0.25, "b": 0.75}, "dram_score": {"b": 1}})"),
     {"a", "b"}, kRefused, kRefused, 0, 100, 0, 1000, false},
    // ---- XGBoost JSON
    {"XgboostSquared", single_file(kXgboost, "squared_d3.json", kF5), kF5, kAnswered,
     kAnswered},
    {"XgboostLogistic", single_file(kXgboost, "logistic_d3.json", kF5), kF5, kAnswered,
     kAnswered},
    {"XgboostDart", single_file(kXgboost, "dart_d4.json", kF5), kF5, kAnswered, kAnswered},
    {"XgboostUbjson", single_file(kXgboostUbj, "logistic_d3.ubj", kF4), kF4, kAnswered,
     kAnswered},
    // ---- scikit-learn pickles: each regressor alone, the transforms as pipeline stages
    {"SklearnLinearRegression", single_file(kSklearn, "linear.pkl", kF5), kF5, kRefused,
     kRefused, 0, 100, -100, 1000, true, true},
    {"SklearnRidge", single_file(kSklearn, "ridge.pkl", kF5), kF5, kRefused, kRefused, 0, 100,
     -100, 1000, true, true},
    {"SklearnLasso", single_file(kSklearn, "lasso.pkl", kF5), kF5, kRefused, kRefused, 0, 100,
     -100, 1000, true, true},
    {"SklearnSGDRegressor", single_file(kSklearn, "sgd.pkl", kF5), kF5, kRefused, kRefused, 0,
     100, -100, 1000, true, true},
    {"SklearnGradientBoosting", single_file(kSklearn, "gb.pkl", kF5), kF5, kAnswered,
     kAnswered},
    // KNeighbors answers NaN and infinities (docs/models.md): a finding for its owner.
    {"SklearnKNeighbors", single_file(kSklearn, "knn.pkl", kF5), kF5, kAnswered, kAnswered},
    {"SklearnKNeighborsBrute", single_file(kSklearn, "knn_brute.pkl", kF5), kF5, kAnswered,
     kAnswered},
    // SVRs were trained on scaled rows: inputs near theirs, so that the kernels matter.
    {"SklearnSVRRbf", single_file(kSklearn, "svr_rbf.pkl", kF5), kF5, kRefused, kAnswered, -1,
     1, -10, 10},
    {"SklearnSVRLinear", single_file(kSklearn, "svr_linear.pkl", kF5), kF5, kRefused, kRefused,
     -1, 1, -10, 10},
    {"SklearnSVRPoly", single_file(kSklearn, "svr_poly.pkl", kF5), kF5, kRefused, kRefused, -1,
     1, -10, 10},
    {"SklearnStandardScalerStage",
     single_file(kSklearn, "linear.pkl", kF5, {"standard.pkl"}), kF5, kRefused, kRefused, 0,
     100, -100, 1000, true, true},
    {"SklearnMinMaxScalerStage", single_file(kSklearn, "linear.pkl", kF5, {"minmax.pkl"}),
     kF5, kRefused, kRefused, 0, 100, -100, 1000, true, true},
    {"SklearnMaxAbsScalerStage", single_file(kSklearn, "linear.pkl", kF5, {"maxabs.pkl"}),
     kF5, kRefused, kRefused, 0, 100, -100, 1000, true, true},
    // StandardScaler -> PolynomialFeatures -> Ridge in one pickled Pipeline.
    {"SklearnPipelineScalerPolyRidge", single_file(kDbMore, "pipeline_chain.pkl", kF3), kF3, kRefused,
     kRefused},
    {"SklearnPipelineNoneSvr", single_file(kDbMore, "pipeline_none_svr.pkl", kF3), kF3,
     kRefused, kAnswered},
    {"SklearnKNeighborsObjectY", single_file(kDbMore, "knn_object_y.pkl", kF3), kF3,
     kAnswered, kAnswered},
    // The regressors of issue 18 (tools/gen_conformance_fixtures.py).
    {"SklearnRidgeCV", single_file(kSklearnMore, "ridgecv.pkl", kF5), kF5, kRefused, kRefused,
     0, 100, -100, 1000, true, true},
    {"SklearnLassoCV", single_file(kSklearnMore, "lassocv.pkl", kF5), kF5, kRefused, kRefused,
     0, 100, -100, 1000, true, true},
    {"SklearnElasticNet", single_file(kSklearnMore, "elasticnet.pkl", kF5), kF5, kRefused,
     kRefused, 0, 100, -100, 1000, true, true},
    {"SklearnElasticNetCV", single_file(kSklearnMore, "elasticnetcv.pkl", kF5), kF5, kRefused,
     kRefused, 0, 100, -100, 1000, true, true},
    {"SklearnLinearSVR", single_file(kSklearnMore, "linearsvr.pkl", kF5), kF5, kRefused,
     kRefused, 0, 100, -100, 1000, true, true},
    {"SklearnDecisionTree", single_file(kSklearnMore, "tree.pkl", kF5), kF5, kAnswered,
     kAnswered},
    {"SklearnRandomForest", single_file(kSklearnMore, "forest.pkl", kF5), kF5, kAnswered,
     kAnswered},
    {"SklearnExtraTrees", single_file(kSklearnMore, "extratrees.pkl", kF5), kF5, kAnswered,
     kAnswered},
    {"XGBRegressorPickle", single_file(kSklearnMore, "xgbregressor.pkl", kF5), kF5, kAnswered,
     kAnswered},
    {"CurveFitPickleExpo", single_file(kDbMore, "curvefit_expo_func.pkl", kF3), kF3, kRefused,
     kBySign},
    {"CurveFitPickleLog", single_file(kDbMore, "curvefit_log_func.pkl", kF3), kF3, kRefused,
     kRefused, 0, 100, 0, 1000},
    {"CurveFitPickleLogi", single_file(kDbMore, "curvefit_logi_func.pkl", kF3), kF3, kRefused,
     kAnswered},
    // ---- Keras
    {"KerasH5EveryActivation",
     single_file(kKeras, "tfkeras2_activations.h5", kF4, {}, {"y0", "y1", "y2"}), kF4,
     kRefused, kRefused},
    {"KerasZipFunctional", single_file(kKeras, "functional_k3.keras", kF4), kF4, kRefused,
     kRefused},
    // BatchNormalization, ReLU/LeakyReLU/ELU/Softmax layers, Reshape, Flatten (issue 18).
    {"KerasH5Layers",
     single_file(kKeras, "tfkeras2_layers.h5", kF5, {}, {"y0", "y1", "y2", "y3"}), kF5,
     kRefused, kRefused},
    {"KerasZipLayers", single_file(kKeras, "keras3_layers.keras", kF4, {}, {"y0", "y1", "y2"}),
     kF4, kRefused, kRefused},
    // Functional DAGs with Add and Concatenate, two output layers.
    {"KerasH5FunctionalDag",
     single_file(kKeras, "functional_dag_k2.h5", numbered("f", 6), {}, {"y0", "y1", "y2", "y3"}),
     numbered("f", 6), kRefused, kRefused},
    {"KerasZipFunctionalDag",
     single_file(kKeras, "functional_dag_k3.keras", kF5, {}, {"y0", "y1", "y2"}), kF5,
     kRefused, kRefused},
    // ---- the model server's pipeline: a component map of scaler chains and regressors
    {"PipelineComponentMap",
     json_model("SGDRegressorTrainer_1", R"(, "model_class": "scikit")", kComponentMap,
                sklearn_files({"linear.pkl", "gb.pkl", "svr_rbf.pkl", "standard.pkl",
                               "maxabs.pkl", "minmax.pkl"})),
     kF5, kRefused, kRefused},
};

// Measured node power for the ratio models (others ignore it).
const float kPackage[] = {40, 25};
const float kPackageIdle[] = {5, 5};
const float kCore[] = {30};
const float kDram[] = {8};
const NodePower kNodePower[] = {
    {"package", kPackage, kPackageIdle}, {"core", kCore, {}}, {"dram", kDram, {}}};
const SystemValue kSystem[] = {{"cpu_architecture", "Sky Lake"}};

// Columns of a request: one the model never reads first (so the plan must map by name),
// then the model's features.
constexpr std::string_view kUnused = "conformance_unused";

class Conformance : public ::testing::TestWithParam<Format> {
 public:
  void SetUp() override {
    Result<std::unique_ptr<Model>> m = load_model(GetParam().folder());
    ASSERT_TRUE(m.ok()) << m.status().to_string();
    model_ = std::move(*m);
    names_ = {std::string(kUnused)};
    for (const std::string& f : GetParam().features) names_.push_back(f);
    for (const std::string& n : names_) columns_.push_back(n);
    Result<std::unique_ptr<const Plan>> p = model_->plan(columns_);
    ASSERT_TRUE(p.ok()) << p.status().to_string();
    plan_ = std::move(*p);
  }

  Eigen::Index cols() const { return static_cast<Eigen::Index>(columns_.size()); }
  Eigen::Index components() const {
    return static_cast<Eigen::Index>(model_->info().components.size());
  }

  // rows x cols of values in [low, high], the same for the same seed.
  RowMatrixF random_rows(Eigen::Index rows, unsigned seed, float low, float high) const {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> d(low, high);
    RowMatrixF x(rows, cols());
    for (Eigen::Index r = 0; r < rows; ++r) {
      for (Eigen::Index c = 0; c < cols(); ++c) x(r, c) = d(rng);
    }
    return x;
  }
  RowMatrixF valid_rows(Eigen::Index rows, unsigned seed) const {
    return random_rows(rows, seed, GetParam().low, GetParam().high);
  }

  ModelInput input(const float* x, Eigen::Index rows) const {
    return ModelInput{ConstMatrixView(x, rows, cols()), kSystem, kNodePower};
  }

  Status predict_with(const Plan& plan, const RowMatrixF& x, RowMatrixF& out) const {
    out = RowMatrixF::Constant(x.rows(), components(), -1.0F);
    return model_->predict(plan, input(x.data(), x.rows()),
                           MatrixView(out.data(), out.rows(), out.cols()));
  }
  RowMatrixF predict(const RowMatrixF& x) const {
    RowMatrixF out;
    const Status s = predict_with(*plan_, x, out);
    EXPECT_TRUE(s.ok()) << s.to_string();
    return out;
  }

 protected:
  std::unique_ptr<Model> model_;
  std::vector<std::string> names_;
  std::vector<std::string_view> columns_;
  std::unique_ptr<const Plan> plan_;
};

::testing::AssertionResult same_row(const RowMatrixF& a, Eigen::Index ra, const RowMatrixF& b,
                                    Eigen::Index rb) {
  for (Eigen::Index c = 0; c < a.cols(); ++c) {
    if (a(ra, c) != b(rb, c)) {
      return ::testing::AssertionFailure() << "component " << c << ": " << a(ra, c) << " vs "
                                           << b(rb, c);
    }
  }
  return ::testing::AssertionSuccess();
}

TEST_P(Conformance, BatchIndependence) {
  const RowMatrixF x = valid_rows(1000, 1);
  const RowMatrixF all = predict(x);
  if (!GetParam().rows_independent) {
    // Only the order may not matter: the reversed batch gives the reversed answers.
    for (const Eigen::Index n : {1, 7, 64, 1000}) {
      const RowMatrixF batch = x.topRows(n);
      const RowMatrixF reversed = batch.colwise().reverse();
      const RowMatrixF a = predict(batch);
      const RowMatrixF b = predict(reversed);
      for (Eigen::Index r = 0; r < n; ++r) {
        ASSERT_TRUE(same_row(a, r, b, n - 1 - r)) << "batch " << n << " row " << r;
      }
    }
    return;
  }
  // Each batch size at several offsets, including the last rows.
  for (const Eigen::Index n : {1, 7, 64}) {
    for (const Eigen::Index start : {Eigen::Index{0}, Eigen::Index{5}, 1000 - n}) {
      const RowMatrixF part = predict(x.middleRows(start, n));
      for (Eigen::Index r = 0; r < n; ++r) {
        ASSERT_TRUE(same_row(part, r, all, start + r)) << "batch " << n << " at " << start;
      }
    }
  }
  // Row 0 among other neighbours: its answer does not move.
  RowMatrixF mixed = valid_rows(64, 2);
  mixed.row(17) = x.row(0);
  const RowMatrixF m = predict(mixed);
  EXPECT_TRUE(same_row(m, 17, all, 0));
}

TEST_P(Conformance, StridedViews) {
  constexpr Eigen::Index kRows = 37, kBefore = 3, kAfter = 5;
  const RowMatrixF wide = valid_rows(kRows + kBefore + kAfter, 3);
  const RowMatrixF own = wide.middleRows(kBefore, kRows);
  const RowMatrixF expected = predict(own);

  constexpr float kCanary = 12345.5F;
  const Eigen::Index cells = kRows * components();
  std::vector<float> buffer(static_cast<std::size_t>(cells + 1 + 7), kCanary);
  float* window = buffer.data() + 1;  // not 8-byte aligned
  const Status s = model_->predict(*plan_, input(wide.row(kBefore).data(), kRows),
                                   MatrixView(window, kRows, components()));
  ASSERT_TRUE(s.ok()) << s.to_string();
  EXPECT_EQ(buffer.front(), kCanary);
  for (std::size_t i = static_cast<std::size_t>(cells) + 1; i < buffer.size(); ++i) {
    EXPECT_EQ(buffer[i], kCanary) << "after the window, float " << i;
  }
  const MatrixView got(window, kRows, components());
  if (GetParam().rows_independent) {
    EXPECT_EQ(RowMatrixF(got), expected);
  } else {
    EXPECT_EQ(RowMatrixF(got), expected) << "the same rows: the same split";
  }
}

TEST_P(Conformance, NoAllocationAfterPlan) {
  const RowMatrixF x = valid_rows(1000, 4);
  RowMatrixF out(1000, components());
  // The largest batch first: a plan may size its scratch memory once.
  ASSERT_TRUE(model_->predict(*plan_, input(x.data(), 1000),
                              MatrixView(out.data(), 1000, components()))
                  .ok());
  long counted = 0;
  bool all_ok = true;
  {
    const estimator::testing::AllocationWindow window;
    for (int repeat = 0; repeat < 3; ++repeat) {
      for (const Eigen::Index n : {1000, 64, 7, 1}) {
        all_ok = model_->predict(*plan_, input(x.data(), n),
                                 MatrixView(out.data(), n, components()))
                     .ok() &&
                 all_ok;
      }
    }
    counted = window.count();
  }
  EXPECT_TRUE(all_ok);
  EXPECT_EQ(counted, 0) << (estimator::testing::kCountsMalloc ? "operator new and malloc"
                                                              : "operator new");
}

TEST_P(Conformance, NonFiniteInputs) {
  constexpr Eigen::Index kRows = 7, kBad = 3;
  const RowMatrixF clean = valid_rows(kRows, 5);
  const RowMatrixF expected = predict(clean);
  const float values[] = {std::numeric_limits<float>::quiet_NaN(),
                          std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity()};
  int refused = 0, answered_differently = 0;
  for (Eigen::Index c = 0; c < cols(); ++c) {
    for (const float v : values) {
      const NonFinite declared = std::isnan(v) ? GetParam().nan : GetParam().infinity;
      RowMatrixF x = clean;
      x(kBad, c) = v;
      RowMatrixF out;
      const Status s = predict_with(*plan_, x, out);
      const std::string where = std::string(columns_[static_cast<std::size_t>(c)]) + " = " +
                                std::to_string(v);
      if (c == 0) {  // the column no model reads: nothing changes
        ASSERT_TRUE(s.ok()) << where << ": " << s.to_string();
        EXPECT_EQ(out, expected) << where;
        continue;
      }
      if (!s.ok()) {
        ++refused;
        EXPECT_EQ(s.code(), Code::kInvalidValue) << where << ": " << s.to_string();
        EXPECT_NE(declared, kAnswered) << where << " was refused: " << s.to_string();
        continue;
      }
      for (Eigen::Index r = 0; r < kRows; ++r) {
        for (Eigen::Index k = 0; k < components(); ++k) {
          ASSERT_TRUE(std::isfinite(out(r, k)) && out(r, k) >= 0)
              << where << ": Ok with output " << out(r, k) << " at row " << r;
        }
        if (r != kBad && GetParam().rows_independent) {
          EXPECT_TRUE(same_row(out, r, expected, r)) << where << ", row " << r;
        }
      }
      // A refusing format answers only where the value does not reach the output (a
      // feature the model ignores, a term clamped to 0 either way).
      if (out != expected) {
        ++answered_differently;
        EXPECT_NE(declared, kRefused) << where << " was answered: " << out.row(kBad) << " for "
                                      << expected.row(kBad);
      }
    }
  }
  // The declaration is exercised: a refusing format refuses somewhere, an answering one
  // answers somewhere with a value that counted.
  if (GetParam().nan == kRefused) {
    EXPECT_GT(refused, 0);
  }
  if (GetParam().nan == kAnswered || GetParam().infinity == kAnswered) {
    EXPECT_GT(answered_differently, 0);
  }
}

TEST_P(Conformance, NegativeClamp) {
  const RowMatrixF x = random_rows(1000, 6, GetParam().clamp_low, GetParam().clamp_high);
  const RowMatrixF out = predict(x);
  long zeros = 0;
  for (Eigen::Index i = 0; i < out.size(); ++i) {
    ASSERT_TRUE(out.data()[i] >= 0) << "output " << i << " = " << out.data()[i];
    zeros += out.data()[i] == 0 ? 1 : 0;
  }
  if (GetParam().sweep_goes_negative) {
    EXPECT_GT(zeros, 0) << "the clamp was never exercised";
  }
}

TEST_P(Conformance, ConcurrentPredicts) {
  constexpr int kThreads = 4, kRounds = 50;
  std::vector<RowMatrixF> inputs, expected;
  for (int t = 0; t < kThreads; ++t) {
    inputs.push_back(valid_rows(64, 10 + static_cast<unsigned>(t)));
    expected.push_back(predict(inputs.back()));
  }
  std::atomic<int> mismatches{0}, failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Result<std::unique_ptr<const Plan>> plan = model_->plan(columns_);
      if (!plan.ok()) {
        ++failures;
        return;
      }
      RowMatrixF out;
      for (int i = 0; i < kRounds; ++i) {
        const int which = (t + i) % kThreads;
        if (!predict_with(**plan, inputs[static_cast<std::size_t>(which)], out).ok()) {
          ++failures;
        } else if (out != expected[static_cast<std::size_t>(which)]) {
          ++mismatches;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(mismatches.load(), 0);
}

TEST_P(Conformance, HostileParameters) {
  // A request lacking the first feature, and one with no columns at all.
  std::vector<std::string_view> lacking = columns_;
  lacking.erase(lacking.begin() + 1);
  Result<std::unique_ptr<const Plan>> missing = model_->plan(lacking);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), Code::kMissingFeatures);
  EXPECT_NE(missing.status().message().find(GetParam().features[0]), std::string::npos)
      << missing.status().message();
  Result<std::unique_ptr<const Plan>> none = model_->plan({});
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), Code::kMissingFeatures);

  const RowMatrixF x = valid_rows(4, 7);
  RowMatrixF out(4, components());
  // A matrix of other columns than the plan was made for.
  const RowMatrixF narrow = x.leftCols(cols() - 1);
  Status s = model_->predict(*plan_, ModelInput{ConstMatrixView(narrow.data(), 4, cols() - 1),
                                                kSystem, kNodePower},
                             MatrixView(out.data(), 4, components()));
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.to_string();
  // Outputs of the wrong shape.
  s = model_->predict(*plan_, input(x.data(), 4), MatrixView(out.data(), 3, components()));
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.to_string();
  std::vector<float> wider(static_cast<std::size_t>(4 * (components() + 1)));
  s = model_->predict(*plan_, input(x.data(), 4), MatrixView(wider.data(), 4, components() + 1));
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.to_string();
  // Another model's plan.
  class Foreign final : public Plan {};
  const Foreign foreign;
  s = model_->predict(foreign, input(x.data(), 4), MatrixView(out.data(), 4, components()));
  EXPECT_EQ(s.code(), Code::kInternal) << s.to_string();
  // Zero rows: nothing to do, and nothing wrong.
  s = model_->predict(*plan_, input(x.data(), 0), MatrixView(out.data(), 0, components()));
  EXPECT_TRUE(s.ok()) << s.to_string();
}

INSTANTIATE_TEST_SUITE_P(Formats, Conformance, ::testing::ValuesIn(kFormats),
                         [](const ::testing::TestParamInfo<Format>& param) {
                           return param.param.name;
                         });

}  // namespace
}  // namespace estimator::models::conformance
