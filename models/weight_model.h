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
// Curve-fit weights (CurveFit_Weights) are refused for now.
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
Result<std::unique_ptr<Model>> load_weight_model(ModelInfo info, const json::Json& doc,
                                                 std::string_view file);

}  // namespace estimator::models
