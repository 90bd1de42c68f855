// SPDX-License-Identifier: Apache-2.0
// scikit-learn's linear regressors: prediction = x . coef_ + intercept_ (models/sklearn_model.h
// lists the classes).
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "models/shape_text.h"
#include "models/sklearn_estimators.h"

namespace estimator::models::sklearn {

namespace {

using pickle::Array;
using pickle::Value;

using ColMatrixD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic>;

class LinearRegressor final : public Regressor {
 public:
  LinearRegressor(std::string name, ColMatrixD coef, Eigen::RowVectorXd intercept)
      : name_(std::move(name)), coef_(std::move(coef)), intercept_(std::move(intercept)) {}

  Eigen::Index inputs() const override { return coef_.rows(); }
  Eigen::Index outputs() const override { return coef_.cols(); }
  void predict(const ConstRowsD& in, RowsD out, Scratch&) const override {
    for (Eigen::Index r = 0; r < in.rows(); ++r) {
      for (Eigen::Index k = 0; k < coef_.cols(); ++k) {
        out(r, k) = in.row(r).dot(coef_.col(k).transpose()) + intercept_(k);
      }
    }
  }
  std::string describe() const override {
    return name_ + "(" + std::to_string(coef_.rows()) +
           (coef_.cols() > 1 ? " -> " + std::to_string(coef_.cols()) : std::string()) + ")";
  }

 private:
  std::string name_;
  ColMatrixD coef_;  // inputs x outputs
  Eigen::RowVectorXd intercept_;
};

}  // namespace

Result<SklearnStage> build_linear(const Attrs& a, int) {
  SKLEARN_TRY(const Value* cv, a.need("coef_"));
  SKLEARN_TRY(const Tensor coef, tensor(*cv, a.where("coef_")));
  std::int64_t outputs = 1;
  std::int64_t n = 0;
  if (coef.shape.size() == 1) {
    n = coef.shape[0];
  } else if (coef.shape.size() == 2) {
    outputs = coef.shape[0];
    n = coef.shape[1];
  } else {
    return refuse(a.where("coef_") + " has shape " + shape_text(coef.shape));
  }
  if (outputs < 1) return refuse(a.where("coef_") + " has no output");
  SKLEARN_TRY(const Eigen::Index features, feature_count(a, n));

  Eigen::RowVectorXd intercept = Eigen::RowVectorXd::Zero(static_cast<Eigen::Index>(outputs));
  const Value* iv = a.find("intercept_");
  if (iv != nullptr && iv->kind() != pickle::Kind::kNone) {
    if (const Array* arr = iv->as<Array>(); arr != nullptr && !arr->shape.empty()) {
      SKLEARN_TRY(const std::vector<double> v, vector_of(*iv, a.where("intercept_"), -1));
      if (static_cast<std::int64_t>(v.size()) != outputs) {
        return refuse(a.where("intercept_") + " has " + std::to_string(v.size()) + " values for " +
                      std::to_string(outputs) + " outputs");
      }
      intercept = row_vector(v);
    } else {
      SKLEARN_TRY(const double c, number_of(*iv, a.where("intercept_")));
      intercept.setConstant(c);
    }
  }
  ColMatrixD m(features, static_cast<Eigen::Index>(outputs));
  for (std::int64_t k = 0; k < outputs; ++k) {
    for (std::int64_t j = 0; j < n; ++j) {
      m(static_cast<Eigen::Index>(j), static_cast<Eigen::Index>(k)) =
          coef.values[static_cast<std::size_t>(k * n + j)];
    }
  }
  return as_regressor(
      std::make_unique<LinearRegressor>(a.cls(), std::move(m), std::move(intercept)));
}

}  // namespace estimator::models::sklearn
