// SPDX-License-Identifier: Apache-2.0
#include "models/stage_loader.h"

#include "models/keras_model.h"
#include "models/sklearn_model.h"
#include "models/xgboost_model.h"
#include "models/xgboost_ubjson.h"

namespace estimator::models {
namespace {

template <typename T>
Result<Stage> as_stage(Result<std::unique_ptr<T>> r) {
  if (!r.ok()) return r.status();
  return Stage(std::move(r).value());
}

}  // namespace

Result<Stage> load_stage(std::string_view file, std::string_view bytes) {
  if (file.ends_with(".pkl") || file.ends_with(".sav") || file.ends_with(".joblib")) {
    return load_sklearn_pickle(bytes, file);
  }
  if (file.ends_with(".json")) return as_stage(load_xgboost_json(bytes, file));
  if (file.ends_with(".ubj")) return as_stage(load_xgboost_ubjson(bytes, file));
  if (file.ends_with(".h5")) return as_stage(load_keras_h5(bytes, file));
  if (file.ends_with(".keras")) return as_stage(load_keras_zip(bytes, file));
  return Status(Code::kInvalidArgument,
                std::string(file) + ": unknown model file type (expected .pkl, .sav, .joblib, "
                                    ".json, .ubj, .h5 or .keras)");
}

}  // namespace estimator::models
