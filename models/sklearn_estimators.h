// SPDX-License-Identifier: Apache-2.0
// The builders of models/sklearn_model.cpp's table {class name -> builder}, one estimator
// family per file. Each turns a fitted estimator's attributes into a stage, or refuses
// with a message that names the class and the attribute.
#pragma once

#include <memory>
#include <utility>

#include "common/status.h"
#include "models/sklearn_fields.h"
#include "models/sklearn_model.h"

namespace estimator::models::sklearn {

// Nesting depth of Pipelines, so that a hostile file cannot recurse without end.
using Builder = Result<SklearnStage> (*)(const Attrs& a, int depth);

inline Result<SklearnStage> as_regressor(std::unique_ptr<Regressor> r) {
  return SklearnStage(std::move(r));
}
inline Result<SklearnStage> as_transform(std::unique_ptr<Transform> t) {
  return SklearnStage(std::move(t));
}

// sklearn_model.cpp: the table's dispatch, for composites.
Result<SklearnStage> convert_estimator(const pickle::Value& v, int depth);

// sklearn_preprocessing.cpp
Result<SklearnStage> build_max_abs_scaler(const Attrs& a, int depth);
Result<SklearnStage> build_standard_scaler(const Attrs& a, int depth);
Result<SklearnStage> build_min_max_scaler(const Attrs& a, int depth);
Result<SklearnStage> build_polynomial_features(const Attrs& a, int depth);
// sklearn_linear.cpp
Result<SklearnStage> build_linear(const Attrs& a, int depth);
// sklearn_trees.cpp
Result<SklearnStage> build_decision_tree(const Attrs& a, int depth);
Result<SklearnStage> build_forest(const Attrs& a, int depth);  // random and extra trees
Result<SklearnStage> build_gradient_boosting(const Attrs& a, int depth);
// sklearn_xgboost.cpp
Result<SklearnStage> build_xgb_regressor(const Attrs& a, int depth);
// sklearn_neighbors.cpp
Result<SklearnStage> build_k_neighbors(const Attrs& a, int depth);
// sklearn_svm.cpp
Result<SklearnStage> build_svr(const Attrs& a, int depth);
// sklearn_pipeline.cpp
Result<SklearnStage> build_pipeline(const Attrs& a, int depth);

}  // namespace estimator::models::sklearn
