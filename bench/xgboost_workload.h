// SPDX-License-Identifier: Apache-2.0
// The benchmark's tree model: an XGBoost JSON document of 100 full trees of depth 6 over
// every column of a case, generated deterministically (a fixed seed: the same bytes on
// every run and machine), wrapped as a kepler-model-db model folder (metadata.json, a
// component map naming package.json) and loaded by the registry like any published model.
// Its thresholds fall inside each column's value range (feature_scale), so rows walk to
// varied leaves instead of all taking one path.
#pragma once

#include <cstdint>
#include <string>

#include "models/registry.h"

namespace estimator::bench {

inline constexpr std::uint32_t kXGBoostTrees = 100;
inline constexpr std::uint32_t kXGBoostDepth = 6;

// "XgboostFitTrainer_bench<cols>": one model per feature count, since a model is only
// selected for requests carrying all of its features.
std::string xgboost_model_name(std::uint32_t cols);

// The XGBoost JSON document (Booster.save_model's layout, reg:squarederror, gbtree).
std::string xgboost_document(std::uint32_t cols);

// The folder the registry loads; its error figure (mae 1000) is far above the linear
// model's, so a request that names no model still gets the linear one.
models::ModelFolder xgboost_folder(std::uint32_t cols);

}  // namespace estimator::bench
