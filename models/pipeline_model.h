// SPDX-License-Identifier: Apache-2.0
// The model-server model: one pipeline per component, as kepler-model-db zips describe
// them in their component map (<Trainer>_<n>.json):
//
//   {"package": {"model_file": "package.pkl", "features": [...], "fe_files": ["scaler.pkl",
//                "poly_scaler.pkl"]}, "core": {...}, ...}
//
// For each component: the request columns named by "features" -> each fe_file's
// transform in order -> the model_file's regressor -> watts (negatives clamped to 0).
// An entry may carry "outputs": [names] (ours, for one model file giving several
// components, e.g. a Keras model with three output units): its regressor then gives one
// output per name, in that order, and the names are the model's components in place of
// the entry's key.
// Files are turned into stages by a StageLoader (models/stage_loader.h picks the format by
// file name), so this file knows nothing of pickles, XGBoost or Keras.
#pragma once

#include <functional>
#include <memory>
#include <string_view>
#include <variant>

#include "models/json_fields.h"
#include "models/model.h"
#include "models/model_folder.h"
#include "models/stages.h"

namespace estimator::models {

using Stage = std::variant<std::unique_ptr<Transform>, std::unique_ptr<Regressor>>;
using StageLoader = std::function<Result<Stage>(std::string_view file, std::string_view bytes)>;

// True when `doc` looks like a component map: an object whose members are objects with a
// "model_file".
bool is_component_map(const json::Json& doc);

// Builds the model from metadata (`info`), the component map (`map`, the contents of
// `map_file`) and the folder holding the files it names. A file shared by components
// (scaler.pkl) is loaded once.
Result<std::unique_ptr<Model>> load_pipeline_model(ModelInfo info, const json::Json& map,
                                                   std::string_view map_file,
                                                   const ModelFolder& folder,
                                                   const StageLoader& load);

}  // namespace estimator::models
