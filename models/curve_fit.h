// SPDX-License-Identifier: Apache-2.0
// Kepler's curve-fit trainers (kepler-model-server train/trainer/*RegressionTrainer, model
// class "curvefit"): their curves, shared by the two forms Kepler publishes a fit in.
//
//   trainer                       function   curve                       parameters
//   ExponentialRegressionTrainer  expo_func  a*exp(b*x)+c                [a, b, c]
//   LogarithmicRegressionTrainer  log_func   a*log(b*x+1)+c              [a, b, c]
//   LogisticRegressionTrainer     logi_func  A/(1+exp(-k*(x-x0)))+off    [A, x0, k, off]
//
// (log_func has been a*log(b*x+1)+c since kepler-model-server PR #232, February 2024; the
// trainer of January 2024 clipped a*log(b*x) at c instead and pickled the same name.)
//
// 1. The weight JSON (models/weight_model.h): CurveFit_Weights = the parameters, and the
//    curve is evaluated on the model's first feature divided by its scale.
// 2. The zip's component pickles (this file): a trainer.curvefit.CurveFitModel whose state
//    is {fit_func, popt, pcov, feature_index, p0_func}. The model server's estimator
//    evaluates fit_func(X[:, feature_index], *popt) on the rows after the fe_files
//    (scaler.pkl); feature_index is the feature group's main feature for the component
//    (for dram, e.g. bpf_page_cache_hit, where the weight JSON form uses the first one).
//    fit_func and p0_func are references to module-level functions of the trainer: the
//    pickle reader only records their names, and fit_func picks the curve by its name.
//    Allowed: <prefix>curvefit.CurveFitModel and <prefix><Trainer>.main.{<function>,
//    p0_func}, with the prefixes under which kepler-model-server's sources import them
//    ("trainer." and "train.trainer." in the src/train layout, where a Kepler v0.7 zip
//    names trainer.curvefit.CurveFitModel and train.trainer.LogarithmicRegressionTrainer.
//    main.log_func; "kepler_model.train.trainer." in the later package). Nothing is
//    imported or called.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "common/status.h"
#include "models/pickle.h"
#include "models/stages.h"

namespace estimator::models {

enum class Curve : std::uint8_t {
  kNone,  // not a curve (weight_model's linear components)
  kExponential,
  kLogarithmic,
  kLogistic,
};

struct CurveTrainer {
  std::string_view trainer;   // e.g. "LogarithmicRegressionTrainer"
  std::string_view function;  // the fit_func's name in the trainer's module
  Curve curve;
  std::string_view formula;
  std::size_t parameters;  // length of CurveFit_Weights / popt
};

inline constexpr std::array<CurveTrainer, 3> kCurveTrainers = {{
    {"ExponentialRegressionTrainer", "expo_func", Curve::kExponential, "a*exp(b*x)+c", 3},
    {"LogarithmicRegressionTrainer", "log_func", Curve::kLogarithmic, "a*log(b*x+1)+c", 3},
    {"LogisticRegressionTrainer", "logi_func", Curve::kLogistic, "A/(1+exp(-k*(x-x0)))+off", 4},
}};

// nullptr when `trainer` is not a curve-fit trainer.
const CurveTrainer* curve_trainer(std::string_view trainer);

// The curve at x with the parameters in the trainer's order.
inline double curve_value(Curve curve, const std::array<double, 4>& p, double x) {
  switch (curve) {
    case Curve::kExponential: return p[0] * std::exp(p[1] * x) + p[2];
    case Curve::kLogarithmic: return p[0] * std::log(p[1] * x + 1.0) + p[2];
    case Curve::kLogistic: return p[0] / (1.0 + std::exp(-p[2] * (x - p[1]))) + p[3];
    case Curve::kNone: break;
  }
  return 0;
}

// The names a curve-fit pickle may name: CurveFitModel and the trainers' functions.
std::span<const pickle::ClassName> curve_fit_classes();

// A CurveFitModel object (an Object named CurveFitModel) as a regressor of one output that
// reads column feature_index of any input at least that wide. Errors: kInvalidArgument,
// naming an unknown fit_func.
Result<std::unique_ptr<Regressor>> load_curve_fit(const pickle::Object& model);

}  // namespace estimator::models
