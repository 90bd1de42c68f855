// SPDX-License-Identifier: Apache-2.0
// Which format a file of a model-server model is, by its name, and the stage it becomes:
//   .pkl .sav .joblib  scikit-learn joblib pickle (restricted reader, models/sklearn_model.h;
//                      Kepler's curve-fit pickles too, models/curve_fit.h)
//   .json              XGBoost JSON (models/xgboost_model.h)
//   .ubj               XGBoost UBJSON (models/xgboost_ubjson.h)
//   .h5                Keras HDF5 (models/keras_model.h)
//   .keras             Keras 3 zip (models/keras_model.h)
// Anything else is refused naming the file.
#pragma once

#include <string_view>

#include "models/pipeline_model.h"

namespace estimator::models {

Result<Stage> load_stage(std::string_view file, std::string_view bytes);

}  // namespace estimator::models
