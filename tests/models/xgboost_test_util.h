// SPDX-License-Identifier: Apache-2.0
// Helpers shared by the XGBoost tests (xgboost_model_test, xgboost_isa_test,
// xgboost_ubjson_test): load a model or fail the test, predict one output per row.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "models/stages.h"
#include "models/xgboost_model.h"

namespace estimator::models::testing {

// load_xgboost_json(text, file, isa); a failure fails the test and gives nullptr.
inline std::unique_ptr<Regressor> must_load_xgboost(std::string_view text, std::string_view file,
                                                    std::optional<xgboost::Isa> isa = {}) {
  Result<std::unique_ptr<Regressor>> r = load_xgboost_json(text, file, isa);
  if (!r.ok()) {
    ADD_FAILURE() << "load_xgboost_json(" << file << "): " << r.status().to_string();
    return nullptr;
  }
  return std::move(*r);
}

// The regressor's single output for each row of x (outputs start as a sentinel, so a row
// the regressor does not write shows).
inline std::vector<double> predict_column(const Regressor& sut, const RowMatrixD& x) {
  RowMatrixD out = RowMatrixD::Constant(x.rows(), 1, -12345.0);
  Scratch scratch;
  sut.predict(x, out, scratch);
  return {out.data(), out.data() + out.size()};
}

}  // namespace estimator::models::testing
