// SPDX-License-Identifier: Apache-2.0
// scikit-learn's support vector regression: SVR with its four kernels, the dual form
// sum_i dual_coef_i K(sv_i, x) + intercept_.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "models/shape_text.h"
#include "models/sklearn_estimators.h"

namespace estimator::models::sklearn {

namespace {

class SvrRegressor final : public Regressor {
 public:
  enum class Kernel { kLinear, kRbf, kPoly, kSigmoid };

  SvrRegressor(Kernel kernel, std::string kernel_name, RowMatrixD sv, std::vector<double> coef,
               double intercept, double gamma, double coef0, int degree, Eigen::Index features)
      : kernel_(kernel),
        kernel_name_(std::move(kernel_name)),
        sv_(std::move(sv)),
        coef_(std::move(coef)),
        intercept_(intercept),
        gamma_(gamma),
        coef0_(coef0),
        degree_(degree),
        features_(features) {}

  Eigen::Index inputs() const override { return features_; }
  void predict(const ConstRowsD& in, RowsD out, Scratch&) const override {
    for (Eigen::Index r = 0; r < in.rows(); ++r) {
      double sum = 0;
      for (Eigen::Index i = 0; i < sv_.rows(); ++i)
        sum += coef_[static_cast<std::size_t>(i)] * kernel(in, r, i);
      out(r, 0) = sum + intercept_;  // libsvm: sum - rho, with rho = -intercept_
    }
  }
  std::string describe() const override {
    return "SVR(" + kernel_name_ + ", " + std::to_string(sv_.rows()) + " support vectors)";
  }

 private:
  // libsvm's powi: exponentiation by squaring.
  static double powi(double base, int times) {
    double tmp = base;
    double ret = 1.0;
    for (int t = times; t > 0; t /= 2) {
      if (t % 2 == 1) ret *= tmp;
      tmp = tmp * tmp;
    }
    return ret;
  }

  double kernel(const ConstRowsD& in, Eigen::Index r, Eigen::Index i) const {
    double acc = 0;
    if (kernel_ == Kernel::kRbf) {
      for (Eigen::Index c = 0; c < features_; ++c) {
        const double d = in(r, c) - sv_(i, c);
        acc += d * d;
      }
      return std::exp(-gamma_ * acc);
    }
    for (Eigen::Index c = 0; c < features_; ++c) acc += in(r, c) * sv_(i, c);
    switch (kernel_) {
      case Kernel::kLinear:
        return acc;
      case Kernel::kPoly:
        return powi(gamma_ * acc + coef0_, degree_);
      case Kernel::kSigmoid:
        return std::tanh(gamma_ * acc + coef0_);
      case Kernel::kRbf:
        break;
    }
    return 0;
  }

  Kernel kernel_;
  std::string kernel_name_;
  RowMatrixD sv_;
  std::vector<double> coef_;
  double intercept_;
  double gamma_;
  double coef0_;
  int degree_;
  Eigen::Index features_;
};

}  // namespace

Result<SklearnStage> build_svr(const Attrs& a, int) {
  SKLEARN_TRY(const bool sparse, a.flag("_sparse", false));
  if (sparse) return refuse("SVR fitted on sparse data is not supported");
  SKLEARN_TRY(const std::string kernel_name, a.text("kernel"));
  SvrRegressor::Kernel kernel;
  if (kernel_name == "rbf") {
    kernel = SvrRegressor::Kernel::kRbf;
  } else if (kernel_name == "linear") {
    kernel = SvrRegressor::Kernel::kLinear;
  } else if (kernel_name == "poly") {
    kernel = SvrRegressor::Kernel::kPoly;
  } else if (kernel_name == "sigmoid") {
    kernel = SvrRegressor::Kernel::kSigmoid;
  } else {
    return refuse("SVR kernel '" + kernel_name +
                  "' is not supported (linear, rbf, poly, sigmoid)");
  }
  SKLEARN_TRY(const double gamma, a.number("_gamma"));
  double coef0 = 0.0;
  if (a.find("coef0") != nullptr) {
    SKLEARN_TRY(coef0, a.number("coef0"));
  }
  std::int64_t degree = 3;
  if (a.find("degree") != nullptr) {
    SKLEARN_TRY(degree, a.integer("degree"));
  }
  if (degree < 0 || degree > 64)
    return refuse("SVR degree " + std::to_string(degree) + " is not supported");

  SKLEARN_TRY(const Tensor sv, a.tensor("support_vectors_"));
  if (sv.shape.size() != 2)
    return refuse(a.where("support_vectors_") + " has shape " + shape_text(sv.shape));
  const std::int64_t n_sv = sv.shape[0];
  SKLEARN_TRY(const Eigen::Index features, feature_count(a, sv.shape[1]));
  SKLEARN_TRY(const Tensor dual, a.tensor("_dual_coef_"));
  if (dual.shape.size() != 2 || dual.shape[0] != 1 || dual.shape[1] != n_sv) {
    return refuse(a.where("_dual_coef_") + " has shape " + shape_text(dual.shape) + " for " +
                  std::to_string(n_sv) + " support vectors");
  }
  SKLEARN_TRY(const std::vector<double> intercept, a.vector("_intercept_", 1));
  RowMatrixD m(static_cast<Eigen::Index>(n_sv), features);
  std::copy(sv.values.begin(), sv.values.end(), m.data());
  return as_regressor(std::make_unique<SvrRegressor>(
      kernel, kernel_name, std::move(m), dual.values, intercept[0], gamma, coef0,
      static_cast<int>(degree), features));
}

}  // namespace estimator::models::sklearn
