// SPDX-License-Identifier: Apache-2.0
// Reading a scikit-learn estimator's fitted attributes out of the pickle's object model
// (models/pickle_value.h), for the estimator families (models/sklearn_*.cpp). Every reader
// returns a Result whose message names the class and the attribute ("Ridge.coef_ has
// shape (2, 3, 4)"); sklearn_stage() adds the file name in front.
#pragma once

#include <Eigen/Core>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "models/pickle.h"

// `decl` = the value of a Result, or return its Status from the enclosing function.
#define SKLEARN_CONCAT_INNER(a, b) a##b
#define SKLEARN_CONCAT(a, b) SKLEARN_CONCAT_INNER(a, b)
#define SKLEARN_TRY(decl, expr)                                          \
  auto SKLEARN_CONCAT(sklearn_try_, __LINE__) = (expr);                  \
  if (!SKLEARN_CONCAT(sklearn_try_, __LINE__).ok())                      \
    return SKLEARN_CONCAT(sklearn_try_, __LINE__).status();              \
  decl = std::move(SKLEARN_CONCAT(sklearn_try_, __LINE__)).value()
// Returns a non-ok Status from the enclosing function.
#define SKLEARN_CHECK(expr)                        \
  do {                                             \
    const ::estimator::Status sklearn_s = (expr);  \
    if (!sklearn_s.ok()) return sklearn_s;         \
  } while (false)

namespace estimator::models::sklearn {

// The refusal every reader gives: kInvalidArgument with `message`.
Status refuse(std::string message);

// One estimator's attributes (its BUILD state), with messages naming the class.
class Attrs {
 public:
  explicit Attrs(const pickle::Object& o) : o_(o) {}
  const pickle::Object& object() const { return o_; }
  const std::string& cls() const { return o_.name; }
  std::string where(std::string_view key) const { return o_.name + "." + std::string(key); }

  const pickle::Value* find(std::string_view key) const { return o_.attr(key); }
  // Missing: "<Class> has no attribute '<key>' (is it fitted?)".
  Result<const pickle::Value*> need(std::string_view key) const;
  Result<double> number(std::string_view key) const;  // finite
  Result<std::int64_t> integer(std::string_view key) const;
  Result<bool> flag(std::string_view key, bool fallback) const;  // fallback when absent
  Result<std::string> text(std::string_view key) const;
  // tensor() / vector_of() of the attribute.
  Result<struct Tensor> tensor(std::string_view key, bool finite = true) const;
  Result<std::vector<double>> vector(std::string_view key, std::int64_t n) const;

 private:
  const pickle::Object& o_;
};

// A finite number: an int, float, numpy scalar or one-element array.
Result<double> number_of(const pickle::Value& v, const std::string& what);
Result<std::int64_t> integer_of(const pickle::Value& v, const std::string& what);

// A numeric array with its shape, values in C order.
struct Tensor {
  std::vector<std::int64_t> shape;
  std::vector<double> values;
};

Result<const pickle::Array*> array_of(const pickle::Value& v, const std::string& what);
// Every value checked finite unless `finite` is false.
Result<Tensor> tensor(const pickle::Value& v, const std::string& what, bool finite = true);
// A 1-D array of n values (n < 0: any length); (1, n) is accepted as well.
Result<std::vector<double>> vector_of(const pickle::Value& v, const std::string& what,
                                      std::int64_t n);
Result<std::vector<std::int64_t>> ints_of(const pickle::Value& v, const std::string& what);

// n_features_in_ when present, checked against what the arrays say (from_arrays < 0:
// unknown); refused unless 1..2^20.
Result<Eigen::Index> feature_count(const Attrs& a, std::int64_t from_arrays);

Eigen::RowVectorXd row_vector(const std::vector<double>& v);

}  // namespace estimator::models::sklearn
