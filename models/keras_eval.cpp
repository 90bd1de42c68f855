#include "models/keras_eval.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>

namespace estimator::models::keras {

namespace {

// Keras's constants (keras.activations.selu; elu with its default alpha 1).
constexpr double kSeluAlpha = 1.6732632423543772848170429916717;
constexpr double kSeluScale = 1.0507009873554804934193349852946;

double sigmoid(double x) {
  if (x >= 0) return 1.0 / (1.0 + std::exp(-x));
  const double e = std::exp(x);
  return e / (1.0 + e);
}

using MutView = Eigen::Map<RowMatrixD, 0, Eigen::OuterStride<>>;
using ConstView = Eigen::Map<const RowMatrixD, 0, Eigen::OuterStride<>>;

// In place, coefficient by coefficient (softmax row by row); never allocates.
void apply(Activation a, MutView m) {
  switch (a) {
    case Activation::kLinear:
      return;
    case Activation::kRelu:
      m = m.cwiseMax(0.0);
      return;
    case Activation::kSigmoid:
      m = m.unaryExpr([](double x) { return sigmoid(x); });
      return;
    case Activation::kTanh:
      m = m.array().tanh().matrix();
      return;
    case Activation::kSoftmax:
      for (Eigen::Index r = 0; r < m.rows(); ++r) {
        auto row = m.row(r);
        const double top = row.maxCoeff();
        row = (row.array() - top).exp().matrix();
        row /= row.sum();
      }
      return;
    case Activation::kSoftplus:
      m = m.unaryExpr(
          [](double x) { return std::max(x, 0.0) + std::log1p(std::exp(-std::abs(x))); });
      return;
    case Activation::kSoftsign:
      m = m.unaryExpr([](double x) { return x / (1.0 + std::abs(x)); });
      return;
    case Activation::kElu:
      m = m.unaryExpr([](double x) { return x > 0 ? x : std::expm1(x); });
      return;
    case Activation::kSelu:
      m = m.unaryExpr(
          [](double x) { return kSeluScale * (x > 0 ? x : kSeluAlpha * std::expm1(x)); });
      return;
    case Activation::kSwish:
      m = m.unaryExpr([](double x) { return x * sigmoid(x); });
      return;
    case Activation::kExponential:
      m = m.array().exp().matrix();
      return;
  }
}

}  // namespace

KerasRegressor::KerasRegressor(std::vector<Step> steps, Eigen::Index inputs, std::string description)
    : steps_(std::move(steps)), inputs_(inputs), description_(std::move(description)) {
  for (std::size_t i = 0; i < steps_.size(); ++i) {
    if (steps_[i].dense) last_dense_ = i;
  }
  outputs_ = steps_[last_dense_].kernel.cols();
}

// Dense layers alternate between two scratch slots; the last one writes into `out`,
// and the activations after it apply there in place. Each row is one matrix-vector
// product: Eigen's products of a contiguous row need no heap memory, whatever the size,
// where its blocked matrix-matrix product takes a heap workspace beyond 128 KiB.
void KerasRegressor::predict(const ConstRowsD& in, RowsD out, Scratch& scratch) const {
  assert(in.cols() == inputs_ && out.rows() == in.rows() && out.cols() == outputs_);
  const Eigen::Index rows = in.rows();
  const double* cur = in.data();
  double* cur_mut = nullptr;  // null while the current values are the caller's input
  Eigen::Index cur_cols = in.cols();
  Eigen::Index cur_stride = in.outerStride();
  std::size_t next_slot = kRegressorSlots;

  for (std::size_t i = 0; i < steps_.size(); ++i) {
    const Step& step = steps_[i];
    if (step.dense) {
      const Eigen::Index width = step.kernel.cols();
      double* dst = nullptr;
      Eigen::Index dst_stride = width;
      if (i == last_dense_) {
        dst = out.data();
        dst_stride = out.outerStride();
      } else {
        dst = scratch.matrix(next_slot, rows, width).data();
        next_slot = next_slot == kRegressorSlots ? kRegressorSlots + 1 : kRegressorSlots;
      }
      const ConstView src(cur, rows, cur_cols, Eigen::OuterStride<>(cur_stride));
      MutView y(dst, rows, width, Eigen::OuterStride<>(dst_stride));
      for (Eigen::Index r = 0; r < rows; ++r) y.row(r).noalias() = src.row(r) * step.kernel;
      if (step.bias.size() != 0) y.rowwise() += step.bias;
      apply(step.activation, y);
      cur = dst;
      cur_mut = dst;
      cur_cols = width;
      cur_stride = dst_stride;
    } else {
      if (cur_mut == nullptr) {  // an activation before any Dense: copy, then apply
        RowsD copy = scratch.matrix(next_slot, rows, cur_cols);
        next_slot = next_slot == kRegressorSlots ? kRegressorSlots + 1 : kRegressorSlots;
        copy = ConstView(cur, rows, cur_cols, Eigen::OuterStride<>(cur_stride));
        cur_mut = copy.data();
        cur = cur_mut;
        cur_stride = cur_cols;
      }
      apply(step.activation, MutView(cur_mut, rows, cur_cols, Eigen::OuterStride<>(cur_stride)));
    }
  }
}

std::string KerasRegressor::serialize() const {
  std::string out;
  auto put = [&out](const auto& v) { out.append(reinterpret_cast<const char*>(&v), sizeof v); };
  put(static_cast<std::uint64_t>(inputs_));
  put(static_cast<std::uint64_t>(description_.size()));
  out += description_;
  put(static_cast<std::uint64_t>(steps_.size()));
  for (const Step& s : steps_) {
    put(static_cast<std::uint8_t>(s.dense));
    put(static_cast<std::uint8_t>(s.activation));
    put(static_cast<std::uint64_t>(s.kernel.rows()));
    put(static_cast<std::uint64_t>(s.kernel.cols()));
    put(static_cast<std::uint64_t>(s.bias.size()));
    out.append(reinterpret_cast<const char*>(s.kernel.data()),
               sizeof(double) * static_cast<std::size_t>(s.kernel.size()));
    out.append(reinterpret_cast<const char*>(s.bias.data()),
               sizeof(double) * static_cast<std::size_t>(s.bias.size()));
  }
  return out;
}

Result<std::unique_ptr<Regressor>> KerasRegressor::deserialize(std::string_view bytes,
                                                               std::string_view file) {
  const Status bad(Code::kInternal, std::string(file) + ": malformed result from the loader");
  std::size_t at = 0;
  auto get = [&](auto& v) {
    if (bytes.size() - at < sizeof v) return false;
    std::memcpy(&v, bytes.data() + at, sizeof v);
    at += sizeof v;
    return true;
  };
  auto get_doubles = [&](double* dst, std::uint64_t n) {
    if (n > (bytes.size() - at) / sizeof(double)) return false;
    std::memcpy(dst, bytes.data() + at, n * sizeof(double));
    at += n * sizeof(double);
    return true;
  };
  std::uint64_t inputs = 0, desc_len = 0, count = 0;
  if (!get(inputs) || !get(desc_len) || desc_len > bytes.size() - at) return bad;
  std::string description(bytes.substr(at, desc_len));
  at += desc_len;
  if (!get(count) || count > bytes.size()) return bad;
  std::vector<Step> steps(count);
  bool any_dense = false;
  for (Step& s : steps) {
    std::uint8_t dense = 0, activation = 0;
    std::uint64_t rows = 0, cols = 0, bias = 0;
    if (!get(dense) || !get(activation) || !get(rows) || !get(cols) || !get(bias) ||
        activation > static_cast<std::uint8_t>(Activation::kExponential) ||
        (rows != 0 && cols > bytes.size() / rows) || bias > bytes.size()) {
      return bad;
    }
    s.dense = dense != 0;
    s.activation = static_cast<Activation>(activation);
    s.kernel.resize(static_cast<Eigen::Index>(rows), static_cast<Eigen::Index>(cols));
    s.bias.resize(static_cast<Eigen::Index>(bias));
    if (!get_doubles(s.kernel.data(), rows * cols) || !get_doubles(s.bias.data(), bias)) return bad;
    any_dense = any_dense || (s.dense && cols > 0);
  }
  if (!any_dense || at != bytes.size()) return bad;
  return std::unique_ptr<Regressor>(std::make_unique<KerasRegressor>(
      std::move(steps), static_cast<Eigen::Index>(inputs), std::move(description)));
}

}  // namespace estimator::models::keras
