// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the UBJSON reader and the XGBoost UBJSON loader; a model that loads
// is also evaluated.
#include <cmath>
#include <cstdint>
#include <string_view>

#include "models/ubjson.h"
#include "models/xgboost_ubjson.h"

using namespace estimator::models;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  // The document alone, whatever it holds: dump() walks every value, so a string the
  // reader let through that is not UTF-8 would throw here.
  if (auto doc = ubjson::parse(bytes, "fuzz.ubj"); doc.ok()) (void)doc->dump();
  auto r = load_xgboost_ubjson(bytes, "fuzz.ubj");
  if (!r.ok() || r.value()->inputs() > 4096) return 0;
  Scratch scratch;
  RowMatrixD x = RowMatrixD::Constant(3, r.value()->inputs(), 0.5);
  x(1, 0) = std::nan("");
  RowMatrixD y(3, r.value()->outputs());
  r.value()->predict(x, y, scratch);
  return 0;
}
