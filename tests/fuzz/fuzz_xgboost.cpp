// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the XGBoost JSON loader; a model that loads is also evaluated.
#include <cmath>
#include <cstdint>
#include <string_view>

#include "models/xgboost_model.h"

using namespace estimator::models;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto r = load_xgboost_json(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.json");
  if (!r.ok() || r.value()->inputs() > 4096) return 0;
  Scratch scratch;
  RowMatrixD x = RowMatrixD::Constant(3, r.value()->inputs(), 0.5);
  x(1, 0) = std::nan("");
  RowMatrixD y(3, r.value()->outputs());
  r.value()->predict(x, y, scratch);
  return 0;
}
