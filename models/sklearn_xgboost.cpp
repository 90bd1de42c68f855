// SPDX-License-Identifier: Apache-2.0
// xgboost's scikit-learn wrapper, XGBRegressor: its pickled Booster keeps the whole model
// as the bytes of XGBoost's own serialisation (UBJSON since xgboost 1.6), which
// models/xgboost_ubjson.h reads; nothing else of the wrapper matters to prediction. Its
// predict() stops at the booster's best_iteration (early stopping), and so do we.
#include <memory>
#include <string>
#include <utility>

#include "models/sklearn_estimators.h"
#include "models/xgboost_ubjson.h"

namespace estimator::models::sklearn {

using pickle::Object;
using pickle::Value;

Result<SklearnStage> build_xgb_regressor(const Attrs& a, int) {
  SKLEARN_TRY(const Value* bv, a.need("_Booster"));
  const Object* booster = bv->as<Object>();
  if (booster == nullptr || booster->name != "Booster") {
    return refuse(a.where("_Booster") + " must be an xgboost Booster, got " +
                  pickle::describe(*bv));
  }
  const Attrs b(*booster);
  SKLEARN_TRY(const Value* hv, b.need("handle"));
  const pickle::Bytes* handle = hv->as<pickle::Bytes>();
  if (handle == nullptr) {
    return refuse(a.where("_Booster") + ".handle must be the booster's bytes, got " +
                  pickle::describe(*hv));
  }
  Result<std::unique_ptr<Regressor>> r =
      load_xgboost_ubjson(handle->data, a.where("_Booster") + ".handle",
                          BestIteration::kHonour);
  if (!r.ok()) return r.status();
  return as_regressor(std::move(r).value());
}

}  // namespace estimator::models::sklearn
