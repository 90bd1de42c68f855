// SPDX-License-Identifier: Apache-2.0
// `estimator predict`: evaluates one model offline, without the daemon, on the same CSV
// as `estimator estimate`. The model is a folder, a kepler-model-db zip, or a single file
// (weight JSON, XGBoost JSON, .pkl, .h5, .keras). Columns are matched by name to the
// model's features; a single model file declares no feature names, so it takes the CSV's
// numeric columns in order. --components names the outputs of a model that does not name
// them (one model file and no "components" in metadata.json), in order; for any other
// model it selects output columns by name.
#pragma once

#include <string>
#include <vector>

namespace estimator::service {

struct PredictOptions {
  std::string model_path;
  std::string csv_path;                 // "-" = stdin
  std::vector<std::string> components;  // select by name, or name a nameless model's outputs
  std::vector<std::string> system_values;  // NAME=VALUE, beside the CSV's system columns
};

int run_predict(const PredictOptions& options);

}  // namespace estimator::service
