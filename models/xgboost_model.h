// SPDX-License-Identifier: Apache-2.0
// XGBoost's JSON model format (Booster.save_model("model.json")), the component models of
// Kepler's XgboostFitTrainer zips (KEPLER.md section 6).
//
//   {"learner": {
//      "learner_model_param": {"base_score": "1.33632E2", "num_feature": "5",
//                              "num_class": "0", "num_target": "1"},
//      "objective": {"name": "reg:squarederror", ...},
//      "gradient_booster": {"name": "gbtree", "model": {"trees": [
//         {"left_children": [...], "right_children": [...], "split_indices": [...],
//          "split_conditions": [...], "default_left": [...], ...}, ...]}}}}
//
// Node i of a tree is a leaf when left_children[i] == -1; its value is then
// split_conditions[i]. Otherwise a row goes left when float(x[split_indices[i]]) <
// float(split_conditions[i]) (strict, in float32, as XGBoost compares), and a missing value
// (NaN) goes left when default_left[i] is set. The margin is base_score + the sum of one
// leaf per tree; the objective's link turns it into the prediction.
//
// Supported: boosters gbtree and dart (dart scales tree t by weight_drop[t]); objectives
// with an identity link (reg:squarederror, reg:linear, reg:squaredlogerror,
// reg:pseudohubererror, reg:absoluteerror) and with a sigmoid (reg:logistic,
// binary:logistic, where base_score is a probability and the margin starts at its logit).
// Everything else (gblinear, multi-class and multi-target models, categorical splits,
// other objectives) is refused by name.
//
// A file is untrusted input: every array length, child index, feature index and number is
// checked at load, and each tree must be a tree (every node reached at most once from the
// root), so evaluation needs no checks and always ends. Errors name the file and field:
// "package.json: learner.gradient_booster.model.trees[3].left_children[7]: child 40 is out
// of range (tree has 23 nodes)".
//
// Evaluation (models/xgboost_forest.h): forests of trees up to depth 8 are padded to
// complete trees and evaluated branch-free, by a scalar evaluator or one for AVX2 or
// AVX-512 picked at load; every evaluator gives the same bits. describe() names the one in
// use: "XGBoost(gbtree, 100 trees, 5 features, reg:squarederror, avx512)".
#pragma once

#include <memory>
#include <optional>
#include <string_view>

#include "common/status.h"
#include "models/json_fields.h"
#include "models/stages.h"
#include "models/xgboost_forest.h"

namespace estimator::models {

// True when `doc` looks like an XGBoost model: an object with learner.gradient_booster.
// Lets a caller that has already parsed a .json file pick the loader by content.
bool is_xgboost_document(const json::Json& doc);

// The evaluator a load uses when the caller names none: the fastest this CPU runs, or
// the one the environment variable ESTIMATOR_XGBOOST_ISA names ("scalar", "avx2",
// "avx512"; for comparing them, or to step around a suspected SIMD fault). Read once, at
// the first call; a name that is unknown or that this CPU cannot run is logged and
// ignored.
xgboost::Isa default_xgboost_isa();

// Parses `text` (the contents of `file`, named in messages) and builds the regressor:
// inputs() = num_feature, one output. Predictions are the objective's output (no clamping
// at 0: that is the pipeline's job). Evaluation reads input columns as float32 and does
// not allocate. `isa` forces an evaluator (tests compare them); one this CPU cannot run
// is refused.
Result<std::unique_ptr<Regressor>> load_xgboost_json(std::string_view text,
                                                     std::string_view file,
                                                     std::optional<xgboost::Isa> isa = {});

// The same from an already parsed document. (Not an overload: a std::string converts to
// a Json, which would make load_xgboost_json(text, file) ambiguous.)
Result<std::unique_ptr<Regressor>> load_xgboost_document(const json::Json& doc,
                                                         std::string_view file,
                                                         std::optional<xgboost::Isa> isa = {});

}  // namespace estimator::models
