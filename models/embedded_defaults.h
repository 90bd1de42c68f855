// SPDX-License-Identifier: Apache-2.0
// The default models compiled into the binary (data/model), so that the daemon serves
// Kepler's default coefficients with no configuration and no file access. Link
// estimator_default_models to use it.
//
//   auto registry = Registry::build(embedded_model_folders());
#pragma once

#include <vector>

#include "models/model_folder.h"

namespace estimator::models {

// One folder per directory of data/model that holds a metadata.json, in path order.
// origin = "embedded:<relative folder>"; path_hints = the relative folder's components
// (e.g. {"rapl-sysfs", "AbsPower", "SGDRegressorTrainer_0"}).
std::vector<ModelFolder> embedded_model_folders();

}  // namespace estimator::models
