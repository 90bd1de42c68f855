// SPDX-License-Identifier: Apache-2.0
#include "models/keras_eval.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>

namespace estimator::models::keras {

namespace {

// Keras's constants (keras.activations.selu).
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
void apply(const ActivationFn& a, MutView m) {
  switch (a.kind) {
    case Activation::kLinear:
      return;
    case Activation::kRelu:
      if (a.negative_slope == 0 && a.threshold == 0 && std::isinf(a.max_value)) {
        m = m.cwiseMax(0.0);
      } else {
        m = m.unaryExpr([&a](double x) {
          return x > a.threshold ? std::min(x, a.max_value) : a.negative_slope * (x - a.threshold);
        });
      }
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
      m = m.unaryExpr([&a](double x) { return x > 0 ? x : a.alpha * std::expm1(x); });
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

Status bad_plan(std::size_t node, const std::string& why) {
  return Status(Code::kInvalidArgument,
                "Keras graph node " + std::to_string(node) + ": " + why);
}

}  // namespace

Result<std::unique_ptr<KerasGraph>> KerasGraph::plan(std::vector<Node> nodes,
                                                     std::vector<std::size_t> outputs,
                                                     std::string description) {
  if (nodes.empty() || nodes[0].op != Op::kInput || !nodes[0].inputs.empty() ||
      nodes[0].width < 1) {
    return bad_plan(0, "the first node must be the input, with a width");
  }
  for (std::size_t i = 1; i < nodes.size(); ++i) {
    const Node& n = nodes[i];
    if (n.op == Op::kInput) return bad_plan(i, "a second input");
    if (n.inputs.empty()) return bad_plan(i, "reads nothing");
    for (std::size_t src : n.inputs) {
      if (src >= i) return bad_plan(i, "reads a node that does not come before it");
    }
    const Eigen::Index in = nodes[n.inputs[0]].width;
    const bool merge = n.op == Op::kConcatenate || n.op == Op::kAdd;
    if (!merge && n.inputs.size() != 1) return bad_plan(i, "reads more than one node");
    if (n.width < 1) return bad_plan(i, "has no width");
    switch (n.op) {
      case Op::kInput:
        break;
      case Op::kDense:
        if (n.kernel.rows() != in || n.kernel.cols() != n.width) {
          return bad_plan(i, "kernel shape disagrees with the widths");
        }
        if (n.bias.size() != 0 && n.bias.size() != n.width) return bad_plan(i, "bias length");
        break;
      case Op::kActivation:
        if (n.width != in) return bad_plan(i, "an activation changes the width");
        break;
      case Op::kAffine:
        if (n.width != in || n.scale.size() != in || n.bias.size() != in) {
          return bad_plan(i, "scale and offset lengths disagree with the width");
        }
        break;
      case Op::kConcatenate: {
        Eigen::Index sum = 0;
        for (std::size_t src : n.inputs) sum += nodes[src].width;
        if (sum != n.width) return bad_plan(i, "width is not the sum of its inputs'");
        break;
      }
      case Op::kAdd:
        for (std::size_t src : n.inputs) {
          if (nodes[src].width != n.width) return bad_plan(i, "adds tensors of different widths");
        }
        break;
    }
  }
  if (outputs.empty()) return bad_plan(0, "the model has no output");
  Eigen::Index width = 0;
  for (std::size_t o : outputs) {
    if (o >= nodes.size()) return bad_plan(o, "an output that does not exist");
    width += nodes[o].width;
  }
  return std::unique_ptr<KerasGraph>(
      new KerasGraph(std::move(nodes), std::move(outputs), std::move(description), width));
}

// Each row's product is one matrix-vector product: Eigen's products of a contiguous row
// need no heap memory, whatever the size, where its blocked matrix-matrix product takes a
// heap workspace beyond 128 KiB.
void KerasGraph::predict(const ConstRowsD& in, RowsD out, Scratch& scratch) const {
  assert(in.cols() == inputs() && out.rows() == in.rows() && out.cols() == outputs_width_);
  const Eigen::Index rows = in.rows();
  // Node i's values: the caller's input for node 0, scratch slot kRegressorSlots + i
  // otherwise (asking the scratch again returns the same, already grown, buffer).
  auto view = [&](std::size_t i) -> ConstView {
    if (i == 0) return ConstView(in.data(), rows, in.cols(), Eigen::OuterStride<>(in.outerStride()));
    const Eigen::Index w = nodes_[i].width;
    return ConstView(scratch.matrix(kRegressorSlots + i, rows, w).data(), rows, w,
                     Eigen::OuterStride<>(w));
  };
  for (std::size_t i = 1; i < nodes_.size(); ++i) {
    const Node& n = nodes_[i];
    MutView y(scratch.matrix(kRegressorSlots + i, rows, n.width).data(), rows, n.width,
              Eigen::OuterStride<>(n.width));
    const ConstView x = view(n.inputs[0]);
    switch (n.op) {
      case Op::kInput:
        break;
      case Op::kDense:
        for (Eigen::Index r = 0; r < rows; ++r) y.row(r).noalias() = x.row(r) * n.kernel;
        if (n.bias.size() != 0) y.rowwise() += n.bias;
        apply(n.activation, y);
        break;
      case Op::kActivation:
        y = x;
        apply(n.activation, y);
        break;
      case Op::kAffine:
        for (Eigen::Index r = 0; r < rows; ++r) {
          y.row(r) = x.row(r).cwiseProduct(n.scale) + n.bias;
        }
        break;
      case Op::kConcatenate: {
        Eigen::Index at = 0;
        for (std::size_t src : n.inputs) {
          const ConstView s = view(src);
          y.middleCols(at, s.cols()) = s;
          at += s.cols();
        }
        break;
      }
      case Op::kAdd:
        y = x;
        for (std::size_t k = 1; k < n.inputs.size(); ++k) y += view(n.inputs[k]);
        break;
    }
  }
  Eigen::Index at = 0;
  for (std::size_t o : outputs_) {
    const ConstView s = view(o);
    out.middleCols(at, s.cols()) = s;
    at += s.cols();
  }
}

std::string KerasGraph::serialize() const {
  std::string out;
  auto put = [&out](const auto& v) { out.append(reinterpret_cast<const char*>(&v), sizeof v); };
  auto put_doubles = [&out](const double* p, Eigen::Index n) {
    out.append(reinterpret_cast<const char*>(p), sizeof(double) * static_cast<std::size_t>(n));
  };
  put(static_cast<std::uint64_t>(description_.size()));
  out += description_;
  put(static_cast<std::uint64_t>(nodes_.size()));
  for (const Node& n : nodes_) {
    put(static_cast<std::uint8_t>(n.op));
    put(static_cast<std::uint8_t>(n.activation.kind));
    put(n.activation.negative_slope);
    put(n.activation.max_value);
    put(n.activation.threshold);
    put(n.activation.alpha);
    put(static_cast<std::uint64_t>(n.width));
    put(static_cast<std::uint64_t>(n.inputs.size()));
    for (std::size_t src : n.inputs) put(static_cast<std::uint64_t>(src));
    put(static_cast<std::uint64_t>(n.kernel.rows()));
    put(static_cast<std::uint64_t>(n.kernel.cols()));
    put_doubles(n.kernel.data(), n.kernel.size());
    put(static_cast<std::uint64_t>(n.scale.size()));
    put_doubles(n.scale.data(), n.scale.size());
    put(static_cast<std::uint64_t>(n.bias.size()));
    put_doubles(n.bias.data(), n.bias.size());
  }
  put(static_cast<std::uint64_t>(outputs_.size()));
  for (std::size_t o : outputs_) put(static_cast<std::uint64_t>(o));
  return out;
}

Result<std::unique_ptr<Regressor>> KerasGraph::deserialize(std::string_view bytes,
                                                           std::string_view file) {
  const Status bad(Code::kInternal, std::string(file) + ": malformed result from the loader");
  std::size_t at = 0;
  auto get = [&](auto& v) {
    if (bytes.size() - at < sizeof v) return false;
    std::memcpy(&v, bytes.data() + at, sizeof v);
    at += sizeof v;
    return true;
  };
  // A count of items of `size` bytes each that the remaining bytes can hold.
  auto get_count = [&](std::uint64_t& n, std::size_t size) {
    return get(n) && n <= (bytes.size() - at) / size;
  };
  auto get_doubles = [&](double* dst, std::uint64_t n) {
    if (n > (bytes.size() - at) / sizeof(double)) return false;
    if (n != 0) std::memcpy(dst, bytes.data() + at, n * sizeof(double));
    at += n * sizeof(double);
    return true;
  };
  std::uint64_t desc_len = 0, count = 0;
  if (!get_count(desc_len, 1)) return bad;
  std::string description(bytes.substr(at, desc_len));
  at += desc_len;
  if (!get_count(count, 1)) return bad;
  std::vector<Node> nodes(count);
  for (Node& n : nodes) {
    std::uint8_t op = 0, kind = 0;
    std::uint64_t width = 0, n_inputs = 0, rows = 0, cols = 0, scale = 0, bias = 0;
    if (!get(op) || !get(kind) || op > kLastOp || kind > kLastActivation ||
        !get(n.activation.negative_slope) || !get(n.activation.max_value) ||
        !get(n.activation.threshold) || !get(n.activation.alpha) || !get(width) ||
        !get_count(n_inputs, sizeof(std::uint64_t))) {
      return bad;
    }
    n.op = static_cast<Op>(op);
    n.activation.kind = static_cast<Activation>(kind);
    if (width > static_cast<std::uint64_t>(kMaxWidth)) return bad;
    n.width = static_cast<Eigen::Index>(width);
    n.inputs.resize(n_inputs);
    for (std::size_t& src : n.inputs) {
      std::uint64_t v = 0;
      if (!get(v) || v >= count) return bad;
      src = static_cast<std::size_t>(v);
    }
    if (!get(rows) || !get(cols) || (rows != 0 && cols > (bytes.size() - at) / sizeof(double) / rows)) {
      return bad;
    }
    n.kernel.resize(static_cast<Eigen::Index>(rows), static_cast<Eigen::Index>(cols));
    if (!get_doubles(n.kernel.data(), rows * cols)) return bad;
    if (!get_count(scale, sizeof(double))) return bad;
    n.scale.resize(static_cast<Eigen::Index>(scale));
    if (!get_doubles(n.scale.data(), scale)) return bad;
    if (!get_count(bias, sizeof(double))) return bad;
    n.bias.resize(static_cast<Eigen::Index>(bias));
    if (!get_doubles(n.bias.data(), bias)) return bad;
  }
  std::uint64_t n_outputs = 0;
  if (!get_count(n_outputs, sizeof(std::uint64_t))) return bad;
  std::vector<std::size_t> outputs(n_outputs);
  for (std::size_t& o : outputs) {
    std::uint64_t v = 0;
    if (!get(v)) return bad;
    o = static_cast<std::size_t>(v);
  }
  if (at != bytes.size()) return bad;
  Result<std::unique_ptr<KerasGraph>> g =
      plan(std::move(nodes), std::move(outputs), std::move(description));
  if (!g.ok()) return Status(Code::kInternal, std::string(file) + ": " + g.status().message());
  return std::unique_ptr<Regressor>(std::move(*g));
}

}  // namespace estimator::models::keras
