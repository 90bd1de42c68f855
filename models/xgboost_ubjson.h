// SPDX-License-Identifier: Apache-2.0
// XGBoost models in Universal Binary JSON (models/ubjson.h): Booster.save_model
// ("model.ubj"), xgboost 2.x's default, and the "handle" bytes of an xgboost >= 1.6 pickle
// (XGBRegressor.__getstate__()["_Booster"].__getstate__()["handle"]), which hold the
// serialised booster {"Config": {...}, "Model": {"learner": ...}}.
//
// The document is the one models/xgboost_model.h describes for JSON, with two differences
// the loader accepts in either form: arrays are typed (split_conditions a float32 array,
// left_children an int32 one, default_left uint8) and some parameters are numbers where
// the JSON has strings.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

#include "common/status.h"
#include "models/stages.h"

namespace estimator::models {

// Whether learner.attributes.best_iteration (written by early stopping) limits the trees.
enum class BestIteration : std::uint8_t {
  // Every tree, as Booster.predict and XGBoosterPredict do by default (a Booster file).
  kIgnore,
  // Only the boosting rounds 0..best_iteration, as XGBRegressor.predict does (a pickled
  // XGBRegressor); a best_iteration that is not a non-negative integer is refused.
  kHonour,
};

// Parses `bytes` (the contents of `file`, named in messages): a model {"learner": ...} or
// the serialised form {"Config": ..., "Model": {"learner": ...}}; the Config is not read
// (the Model holds everything prediction needs). Then as load_xgboost_document.
Result<std::unique_ptr<Regressor>> load_xgboost_ubjson(
    std::string_view bytes, std::string_view file,
    BestIteration best_iteration = BestIteration::kIgnore);

}  // namespace estimator::models
