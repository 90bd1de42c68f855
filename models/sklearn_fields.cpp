// SPDX-License-Identifier: Apache-2.0
#include "models/sklearn_fields.h"

#include <cmath>
#include <utility>

#include "models/shape_text.h"

namespace estimator::models::sklearn {

using pickle::Array;
using pickle::Value;

Status refuse(std::string message) { return Status(Code::kInvalidArgument, std::move(message)); }

Result<const Value*> Attrs::need(std::string_view key) const {
  const Value* v = o_.attr(key);
  if (v == nullptr) return refuse(o_.name + " has no attribute '" + std::string(key) + "' (is it fitted?)");
  return v;
}

Result<double> Attrs::number(std::string_view key) const {
  SKLEARN_TRY(const Value* v, need(key));
  return number_of(*v, where(key));
}

Result<std::int64_t> Attrs::integer(std::string_view key) const {
  SKLEARN_TRY(const Value* v, need(key));
  return integer_of(*v, where(key));
}

Result<bool> Attrs::flag(std::string_view key, bool fallback) const {
  const Value* v = find(key);
  if (v == nullptr) return fallback;
  const std::optional<bool> b = pickle::as_bool(*v);
  if (!b) return refuse(where(key) + " must be a bool, got " + pickle::describe(*v));
  return *b;
}

Result<std::string> Attrs::text(std::string_view key) const {
  SKLEARN_TRY(const Value* v, need(key));
  const std::optional<std::string_view> s = pickle::as_str(*v);
  if (!s) return refuse(where(key) + " must be a str, got " + pickle::describe(*v));
  return std::string(*s);
}

Result<Tensor> Attrs::tensor(std::string_view key, bool finite) const {
  SKLEARN_TRY(const Value* v, need(key));
  return sklearn::tensor(*v, where(key), finite);
}

Result<std::vector<double>> Attrs::vector(std::string_view key, std::int64_t n) const {
  SKLEARN_TRY(const Value* v, need(key));
  return vector_of(*v, where(key), n);
}

Result<double> number_of(const Value& v, const std::string& what) {
  std::optional<double> d = pickle::as_number(v);
  if (!d) {  // a one-element array counts as a number (intercept_ of shape (1,))
    if (const Array* a = v.as<Array>(); a != nullptr && a->built && a->count() == 1) {
      Result<std::vector<double>> e = pickle::array_doubles(*a, what);
      if (e.ok()) d = (*e)[0];
    }
  }
  if (!d) return refuse(what + " must be a number, got " + pickle::describe(v));
  if (!std::isfinite(*d)) return refuse(what + " is not finite");
  return *d;
}

Result<std::int64_t> integer_of(const Value& v, const std::string& what) {
  const std::optional<std::int64_t> i = pickle::as_int(v);
  if (!i) return refuse(what + " must be an int, got " + pickle::describe(v));
  return *i;
}

Result<const Array*> array_of(const Value& v, const std::string& what) {
  const Array* a = v.as<Array>();
  if (a == nullptr || !a->built)
    return refuse(what + " must be a numpy array, got " + pickle::describe(v));
  return a;
}

Result<Tensor> tensor(const Value& v, const std::string& what, bool finite) {
  SKLEARN_TRY(const Array* a, array_of(v, what));
  SKLEARN_TRY(std::vector<double> values, pickle::array_doubles(*a, what));
  if (finite) {
    for (std::size_t i = 0; i < values.size(); ++i) {
      if (!std::isfinite(values[i])) return refuse(what + "[" + std::to_string(i) + "] is not finite");
    }
  }
  return Tensor{a->shape, std::move(values)};
}

Result<std::vector<double>> vector_of(const Value& v, const std::string& what, std::int64_t n) {
  SKLEARN_TRY(Tensor t, tensor(v, what));
  const bool flat = t.shape.size() == 1 || (t.shape.size() == 2 && t.shape[0] == 1);
  if (!flat || (n >= 0 && static_cast<std::int64_t>(t.values.size()) != n)) {
    return refuse(what + " has shape " + shape_text(t.shape) + ", expected (" +
                  (n >= 0 ? std::to_string(n) : std::string("n")) + ",)");
  }
  return std::move(t.values);
}

Result<std::vector<std::int64_t>> ints_of(const Value& v, const std::string& what) {
  SKLEARN_TRY(const Array* a, array_of(v, what));
  return pickle::array_ints(*a, what);
}

Result<Eigen::Index> feature_count(const Attrs& a, std::int64_t from_arrays) {
  if (const Value* v = a.find("n_features_in_")) {
    SKLEARN_TRY(const std::int64_t n, integer_of(*v, a.where("n_features_in_")));
    if (from_arrays >= 0 && n != from_arrays) {
      return refuse(a.where("n_features_in_") + " is " + std::to_string(n) +
                    " but the fitted arrays have " + std::to_string(from_arrays) + " features");
    }
    from_arrays = n;
  }
  if (from_arrays <= 0 || from_arrays > (1 << 20))
    return refuse(a.cls() + " has " + std::to_string(from_arrays) + " input features");
  return static_cast<Eigen::Index>(from_arrays);
}

Eigen::RowVectorXd row_vector(const std::vector<double>& v) {
  Eigen::RowVectorXd r(static_cast<Eigen::Index>(v.size()));
  for (std::size_t i = 0; i < v.size(); ++i) r(static_cast<Eigen::Index>(i)) = v[i];
  return r;
}

}  // namespace estimator::models::sklearn
