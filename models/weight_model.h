// SPDX-License-Identifier: Apache-2.0
// Kepler's weight JSON: the linear regressor Kepler evaluates natively (KEPLER.md section 6).
//
//   {"model_name": "...",
//    "<component>": {"All_Weights": {
//        "Bias_Weight": b,
//        "Categorical_Variables": {"<feature>": {"<value>": {"weight": w}}},
//        "Numerical_Variables": {"<feature>": {"scale": s, "weight": w}}}}, ...}
//
//   power_c = b + sum of the categorical weights of the request's system values
//             + sum_j w_j * x_j / s_j                      (s_j = 0: term skipped)
//
// The format before October 2023 gives {"mean": m, "variance": v, "weight": w} instead of
// a scale: term = w * (x - m) / sqrt(v) (v = 0: term skipped). Both are folded at load time
// into one coefficient per feature and a bias offset, so evaluation is b' + sum c_j * x_j.
//
// A file whose top level is {"All_Weights": ...} (the 2023 AbsModelWeight samples) is a
// single-component model; Kepler used that form for its node total-power model, so the
// component is named "platform", the component acpi-style sources report. The component
// name "pkg" of older files is read as "package", the name Kepler's reply uses.
//
// Curve-fit trainers write the same document with "CurveFit_Weights" in place of the bias
// and only a scale per numerical variable:
//
//   "<component>": {"All_Weights": {"Categorical_Variables": {...},
//       "Numerical_Variables": {"<feature>": {"scale": s}, ...},
//       "CurveFit_Weights": [...]}}
//
//   power_c = sum of the categorical weights + curve(x),  x = v0 / s0   (no bias)
//
// where v0 is the model's first feature (metadata.json's order when it lists them, else
// the file's) and the curve is the trainer's (models/curve_fit.h, shared with the
// trainer's pickled CurveFitModel): ExponentialRegressionTrainer a*exp(b*x)+c,
// LogarithmicRegressionTrainer a*log(b*x+1)+c (weights [a, b, c]),
// LogisticRegressionTrainer A/(1+exp(-k*(x-x0)))+off (weights [A, x0, k, off]). Nothing in
// the weights says which: the trainer does (ModelInfo::trainer, the model name, or the
// file's model_name); a file whose trainer is none of the three, or is named
// inconsistently, is refused. The other features stay required, as Kepler maps them all.
// A curve that is not finite for a row (log of a negative number, exp overflow) fails
// the request with kInvalidValue, like any non-finite prediction.
#pragma once

#include <memory>
#include <string_view>

#include "common/status.h"
#include "models/json_fields.h"
#include "models/model.h"

namespace estimator::models {

// True when `doc` is a weight document: All_Weights at the top level or in a member.
bool is_weight_document(const json::Json& doc);

// Builds a weight model from `doc` (the contents of `file`, named in messages). `info`
// comes from metadata.json; components are filled from the document. Features are the
// numerical variables, ordered as info.features lists them, then in file order.
// info.model_class becomes "curvefit" when a component is a curve fit, else "weight".
Result<std::unique_ptr<Model>> load_weight_model(ModelInfo info, const json::Json& doc,
                                                 std::string_view file);

}  // namespace estimator::models
