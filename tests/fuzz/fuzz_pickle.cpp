// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the restricted joblib/pickle reader and the scikit-learn conversion.
#include <cstdint>
#include <string_view>

#include "models/sklearn_model.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  (void)estimator::models::load_sklearn_pickle(
      std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.pkl");
  return 0;
}
