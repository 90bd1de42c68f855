// SPDX-License-Identifier: Apache-2.0
// metadata.json: the description every model folder carries (KEPLER.md section 5).
//
// Fields of every generation of Kepler's model server are accepted; names are made
// canonical here so that selection compares like with like: old output types
// (AbsModelWeight, DynComponentPower, ...) become AbsPower/DynPower, source aliases
// resolve through canonical_source, and -1 error figures (the model server's
// "undefined") become unknown. Components are not read here: the format loader fills them
// from the model file (for one model file with several outputs, from metadata.json's
// "components", models/registry.cpp).
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"
#include "models/model.h"
#include "models/model_folder.h"

namespace estimator::models {

struct Metadata {
  ModelInfo info;          // everything metadata.json and the path hints say
  std::string model_file;  // the file the format loader reads; empty when not stated
};

// Parses folder.files["metadata.json"]. Source and output type fall back to the folder's
// path hints; origin is set from the folder. The name may still be empty (a weight file
// can carry it); the trainer is derived from the name when metadata.json has none.
Result<Metadata> parse_metadata(const ModelFolder& folder);

// What Kepler's data/model_weight file names say, "<source>_<OutputType>Model.json"
// (intel_rapl_DynPowerModel.json; the source may hold underscores): both canonical, or
// both empty when the name is not of that form or names an unknown source or output type.
struct ModelKind {
  std::string source;
  std::string output_type;
};
ModelKind kind_from_weight_file_name(std::string_view file_name);

// "SGDRegressorTrainer_0" -> "SGDRegressorTrainer": Kepler names models
// <trainer>_<node type>.
std::string trainer_from_name(std::string_view model_name);

// The folder's "<origin>/<file>" label used in messages.
std::string file_label(const ModelFolder& folder, std::string_view file);

}  // namespace estimator::models
