// SPDX-License-Identifier: Apache-2.0
#include "models/keras_model.h"
#include "models/shape_text.h"


#include <algorithm>
#include <cassert>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "models/hdf5_file.h"
#include "models/isolated_call.h"
#include "models/zip_archive.h"
#include "models/json_fields.h"

namespace estimator::models {

namespace {

using json::Json;
using json::Where;

// Bounds that keep a hostile file from making the loader allocate without limit. Kepler's
// Keras models have a few thousand weights; these are far above any real MLP.
constexpr std::size_t kMaxTensorValues = std::size_t{1} << 24;  // per weight, 128 MiB
constexpr std::size_t kMaxMemberBytes = std::size_t{1} << 28;   // per zip member, 256 MiB
constexpr double kMaxWidth = 1 << 20;                           // features or units

Status invalid(std::string message) { return Status(Code::kInvalidArgument, std::move(message)); }

// ---------------------------------------------------------------- activations

enum class Activation {
  kLinear,
  kRelu,
  kSigmoid,
  kTanh,
  kSoftmax,
  kSoftplus,
  kSoftsign,
  kElu,
  kSelu,
  kSwish,
  kExponential,
};

struct ActivationName {
  std::string_view name;
  Activation activation;
};

// Keras's names. "swish" and "silu" are the same function (Keras 3 renamed it).
constexpr ActivationName kActivations[] = {
    {"linear", Activation::kLinear},     {"relu", Activation::kRelu},
    {"sigmoid", Activation::kSigmoid},   {"tanh", Activation::kTanh},
    {"softmax", Activation::kSoftmax},   {"softplus", Activation::kSoftplus},
    {"softsign", Activation::kSoftsign}, {"elu", Activation::kElu},
    {"selu", Activation::kSelu},         {"swish", Activation::kSwish},
    {"silu", Activation::kSwish},        {"exponential", Activation::kExponential},
};

std::string_view activation_name(Activation a) {
  for (const ActivationName& n : kActivations) {
    if (n.activation == a) return n.name;
  }
  return "?";
}

// A Dense or Activation layer's "activation": a name; null (Keras's default, linear); or,
// as some Keras 3 versions serialize functions, {"class_name": ..., "config": "<name>"}.
Result<Activation> parse_activation(const Json* value, const Where& where) {
  if (value == nullptr) return Activation::kLinear;
  const Json* name = value;
  if (value->is_object()) {
    name = json::optional_member(*value, "config");
    if (name == nullptr || !name->is_string()) {
      return json::invalid(where,
                           "an activation given as an object must name a built-in "
                           "function in \"config\"");
    }
  }
  if (!name->is_string()) {
    return json::invalid(where,
                         std::string("expected an activation name, got ") + name->type_name());
  }
  const std::string& s = name->get_ref<const std::string&>();
  for (const ActivationName& n : kActivations) {
    if (s == n.name) return n.activation;
  }
  std::string supported;
  for (const ActivationName& n : kActivations) {
    if (!supported.empty()) supported += ", ";
    supported += n.name;
  }
  return json::invalid(where,
                       "activation \"" + s + "\" is not supported (supported: " + supported + ")");
}

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

// ---------------------------------------------------------------- model_config

enum class LayerKind { kIdentity, kDense, kActivation };

struct LayerSpec {
  std::string class_name;
  std::string name;
  LayerKind kind = LayerKind::kIdentity;
  Activation activation = Activation::kLinear;
  bool use_bias = true;
  Eigen::Index units = 0;
  Where where;
};

struct ModelSpec {
  std::string class_name;         // Sequential or Functional
  std::vector<LayerSpec> layers;  // in evaluation order
  Eigen::Index input_width = -1;  // as declared by the config; -1 when it declares none
};

// Layers that do nothing at inference on a batch of flat rows.
constexpr std::string_view kIdentityLayers[] = {"InputLayer",   "Flatten",         "Dropout",
                                                "AlphaDropout", "GaussianDropout", "GaussianNoise"};

constexpr std::string_view kSupportedLayers =
    "Dense, Activation, InputLayer, Flatten, Dropout, AlphaDropout, GaussianDropout, "
    "GaussianNoise";

Result<Eigen::Index> positive_count(const Json& value, const Where& where) {
  if (!value.is_number() ||
      (!value.is_number_integer() && std::floor(value.get<double>()) != value.get<double>())) {
    return json::invalid(where, std::string("expected a positive integer, got ") +
                                    (value.is_number() ? "a fraction" : value.type_name()));
  }
  const double d = value.get<double>();
  if (d < 1 || d > kMaxWidth) {
    return json::invalid(where, "expected a positive integer up to " +
                                    std::to_string(static_cast<long>(kMaxWidth)) + ", got " +
                                    value.dump());
  }
  return static_cast<Eigen::Index>(d);
}

// A batch shape such as [null, 9]: the rows the model takes must be flat feature vectors.
Status declare_input(const Json& shape, const Where& where, ModelSpec& spec) {
  if (!shape.is_array()) {
    return json::invalid(where, std::string("expected a shape array, got ") + shape.type_name());
  }
  if (shape.size() != 2) {
    return json::invalid(
        where, "input shape " + shape.dump() + " is not a batch of flat rows ([null, features])");
  }
  Result<Eigen::Index> width = positive_count(shape[1], where / "[1]");
  if (!width.ok()) return width.status();
  if (spec.input_width >= 0 && spec.input_width != *width) {
    return json::invalid(where, "input width " + std::to_string(*width) +
                                    " disagrees with the width declared earlier, " +
                                    std::to_string(spec.input_width));
  }
  spec.input_width = *width;
  return Status::Ok();
}

Result<LayerSpec> parse_layer(const Json& layer, const Where& where, ModelSpec& spec) {
  Result<const Json*> cls = json::member(layer, where, "class_name");
  if (!cls.ok()) return cls.status();
  Result<std::string> class_name = json::string_value(**cls, where / "class_name");
  if (!class_name.ok()) return class_name.status();
  Result<const Json*> cfg_ptr = json::member(layer, where, "config");
  if (!cfg_ptr.ok()) return cfg_ptr.status();
  const Json& cfg = **cfg_ptr;
  const Where cfg_where = where / "config";

  LayerSpec out;
  out.class_name = std::move(*class_name);
  out.where = where;
  const Json* name = json::optional_member(cfg, "name");
  if (name == nullptr) name = json::optional_member(layer, "name");
  if (name != nullptr && name->is_string()) out.name = name->get<std::string>();
  const std::string label = "layer '" + out.name + "' (" + out.class_name + ")";

  if (out.class_name == "Sequential" || out.class_name == "Functional" ||
      out.class_name == "Model") {
    return json::invalid(where, label + " is a nested model, which is not supported");
  }
  const bool identity = std::find(std::begin(kIdentityLayers), std::end(kIdentityLayers),
                                  out.class_name) != std::end(kIdentityLayers);
  if (out.class_name != "Dense" && out.class_name != "Activation" && !identity) {
    return json::invalid(where, label + " is not supported (supported layers: " +
                                    std::string(kSupportedLayers) + ")");
  }
  if (Status s = json::expect_object(cfg, cfg_where); !s.ok()) return s;

  // Where each generation declares the input: batch_input_shape (Keras 2, on InputLayer or
  // on the first layer), batch_shape (Keras 3 InputLayer).
  for (const char* key : {"batch_input_shape", "batch_shape"}) {
    if (const Json* shape = json::optional_member(cfg, key); shape != nullptr) {
      if (Status s = declare_input(*shape, cfg_where / key, spec); !s.ok()) return s;
    }
  }

  if (out.class_name == "Dense") {
    out.kind = LayerKind::kDense;
    Result<const Json*> units = json::member(cfg, cfg_where, "units");
    if (!units.ok()) return units.status();
    Result<Eigen::Index> n = positive_count(**units, cfg_where / "units");
    if (!n.ok()) return n.status();
    out.units = *n;
    Result<Activation> a =
        parse_activation(json::optional_member(cfg, "activation"), cfg_where / "activation");
    if (!a.ok()) return a.status();
    out.activation = *a;
    if (const Json* bias = json::optional_member(cfg, "use_bias"); bias != nullptr) {
      if (!bias->is_boolean()) {
        return json::invalid(cfg_where / "use_bias",
                             std::string("expected true or false, got ") + bias->type_name());
      }
      out.use_bias = bias->get<bool>();
    }
  } else if (out.class_name == "Activation") {
    out.kind = LayerKind::kActivation;
    Result<const Json*> a_json = json::member(cfg, cfg_where, "activation");
    if (!a_json.ok()) return a_json.status();
    Result<Activation> a = parse_activation(*a_json, cfg_where / "activation");
    if (!a.ok()) return a.status();
    out.activation = *a;
  }
  return out;
}

Status parse_layer_list(const Json& layers, const Where& where, ModelSpec& spec) {
  if (!layers.is_array()) {
    return json::invalid(where,
                         std::string("expected an array of layers, got ") + layers.type_name());
  }
  for (std::size_t i = 0; i < layers.size(); ++i) {
    Result<LayerSpec> l = parse_layer(layers[i], where / ("[" + std::to_string(i) + "]"), spec);
    if (!l.ok()) return l.status();
    spec.layers.push_back(std::move(*l));
  }
  return Status::Ok();
}

// The layers an inbound node of a Functional layer reads from. Keras 2 writes a node as
// [[name, node, tensor, kwargs], ...]; Keras 3 as {"args": [...], "kwargs": {...}} holding
// {"class_name": "__keras_tensor__", "config": {"keras_history": [name, node, tensor]}}.
void keras3_sources(const Json& v, std::vector<std::string>& out) {
  if (v.is_object()) {
    const Json* cls = json::optional_member(v, "class_name");
    const Json* cfg = json::optional_member(v, "config");
    if (cls != nullptr && cls->is_string() && *cls == "__keras_tensor__" && cfg != nullptr) {
      const Json* history = json::optional_member(*cfg, "keras_history");
      if (history != nullptr && history->is_array() && !history->empty() &&
          (*history)[0].is_string()) {
        out.push_back((*history)[0].get<std::string>());
        return;
      }
    }
    for (const auto& item : v.items()) keras3_sources(item.value(), out);
  } else if (v.is_array()) {
    for (const Json& item : v) keras3_sources(item, out);
  }
}

Result<std::vector<std::string>> node_sources(const Json& node, const Where& where) {
  std::vector<std::string> out;
  if (node.is_object()) {
    keras3_sources(node, out);
  } else if (node.is_array()) {
    for (const Json& entry : node) {
      if (!entry.is_array() || entry.empty() || !entry[0].is_string()) {
        return json::invalid(where, "unrecognized inbound node entry " + entry.dump());
      }
      out.push_back(entry[0].get<std::string>());
    }
  } else {
    return json::invalid(where, std::string("unrecognized inbound node, a ") + node.type_name());
  }
  return out;
}

// input_layers / output_layers: [[name, 0, 0], ...] or, for a single tensor, [name, 0, 0].
Result<std::vector<std::string>> endpoint_names(const Json& obj, const Where& where,
                                                std::string_view key) {
  Result<const Json*> v = json::member(obj, where, key);
  if (!v.ok()) return v.status();
  const Json& list = **v;
  std::vector<std::string> out;
  if (list.is_array() && !list.empty() && list[0].is_string()) {
    out.push_back(list[0].get<std::string>());
    return out;
  }
  if (list.is_array()) {
    for (const Json& e : list) {
      if (!e.is_array() || e.empty() || !e[0].is_string()) {
        return json::invalid(where / key, "unrecognized entry " + e.dump());
      }
      out.push_back(e[0].get<std::string>());
    }
    return out;
  }
  return json::invalid(where / key, std::string("expected an array, got ") + list.type_name());
}

// A Functional model is accepted when it is a chain in config order: an InputLayer, then
// layers each fed by exactly the previous one, the last being the only output.
Status check_functional_chain(const Json& cfg, const Where& where, const ModelSpec& spec) {
  const Json& layers = cfg["layers"];
  const std::string refusal =
      "Functional model is not a single chain of layers; only "
      "Sequential models and Functional chains are supported";
  if (spec.layers.empty() || spec.layers.front().class_name != "InputLayer") {
    return json::invalid(where / "layers", refusal + " (the first layer is not an InputLayer)");
  }
  for (std::size_t i = 1; i < spec.layers.size(); ++i) {
    const Where lw = where / "layers" / ("[" + std::to_string(i) + "]") / "inbound_nodes";
    const Json* nodes = json::optional_member(layers[i], "inbound_nodes");
    if (nodes == nullptr || !nodes->is_array() || nodes->size() != 1) {
      return json::invalid(
          lw, refusal + " (layer '" + spec.layers[i].name + "' is not called exactly once)");
    }
    Result<std::vector<std::string>> src = node_sources((*nodes)[0], lw / "[0]");
    if (!src.ok()) return src.status();
    if (src->size() != 1 || src->front() != spec.layers[i - 1].name) {
      std::string got;
      for (const std::string& s : *src) got += (got.empty() ? "" : ", ") + s;
      return json::invalid(lw, refusal + " (layer '" + spec.layers[i].name + "' reads [" + got +
                                   "], not '" + spec.layers[i - 1].name + "')");
    }
  }
  Result<std::vector<std::string>> inputs = endpoint_names(cfg, where, "input_layers");
  if (!inputs.ok()) return inputs.status();
  Result<std::vector<std::string>> outputs = endpoint_names(cfg, where, "output_layers");
  if (!outputs.ok()) return outputs.status();
  if (*inputs != std::vector<std::string>{spec.layers.front().name}) {
    return json::invalid(where / "input_layers", refusal + " (inputs are not the first layer)");
  }
  if (*outputs != std::vector<std::string>{spec.layers.back().name}) {
    return json::invalid(where / "output_layers", refusal + " (outputs are not the last layer)");
  }
  return Status::Ok();
}

Result<ModelSpec> parse_model_config(const Json& doc, const Where& where) {
  Result<const Json*> cls = json::member(doc, where, "class_name");
  if (!cls.ok()) return cls.status();
  Result<std::string> class_name = json::string_value(**cls, where / "class_name");
  if (!class_name.ok()) return class_name.status();
  Result<const Json*> cfg = json::member(doc, where, "config");
  if (!cfg.ok()) return cfg.status();
  const Where cw = where / "config";

  ModelSpec spec;
  spec.class_name = *class_name;
  if (spec.class_name == "Sequential") {
    if ((*cfg)->is_array()) {
      // Keras up to 2.2: the config is the list of layers itself.
      if (Status s = parse_layer_list(**cfg, cw, spec); !s.ok()) return s;
    } else {
      Result<const Json*> layers = json::member(**cfg, cw, "layers");
      if (!layers.ok()) return layers.status();
      if (Status s = parse_layer_list(**layers, cw / "layers", spec); !s.ok()) return s;
      if (const Json* shape = json::optional_member(**cfg, "build_input_shape"); shape != nullptr) {
        if (Status s = declare_input(*shape, cw / "build_input_shape", spec); !s.ok()) return s;
      }
    }
  } else if (spec.class_name == "Functional" || spec.class_name == "Model") {
    spec.class_name = "Functional";
    Result<const Json*> layers = json::member(**cfg, cw, "layers");
    if (!layers.ok()) return layers.status();
    if (Status s = parse_layer_list(**layers, cw / "layers", spec); !s.ok()) return s;
    if (Status s = check_functional_chain(**cfg, cw, spec); !s.ok()) return s;
  } else {
    return json::invalid(
        where / "class_name",
        "model class " + spec.class_name + " is not supported (Sequential, or a Functional chain)");
  }
  return spec;
}

// ---------------------------------------------------------------- the regressor

struct Step {
  bool dense = false;
  RowMatrixD kernel;        // in x out, as Keras stores it: y = x K + b
  Eigen::RowVectorXd bias;  // empty when the layer has no bias
  Activation activation = Activation::kLinear;
};

class KerasRegressor final : public Regressor {
 public:
  KerasRegressor(std::vector<Step> steps, Eigen::Index inputs, std::string description)
      : steps_(std::move(steps)), inputs_(inputs), description_(std::move(description)) {
    for (std::size_t i = 0; i < steps_.size(); ++i) {
      if (steps_[i].dense) last_dense_ = i;
    }
    outputs_ = steps_[last_dense_].kernel.cols();
  }

  Eigen::Index inputs() const override { return inputs_; }
  Eigen::Index outputs() const override { return outputs_; }
  std::string describe() const override { return description_; }

  // Dense layers alternate between two scratch slots; the last one writes into `out`,
  // and the activations after it apply there in place. Each row is one matrix-vector
  // product: Eigen's products of a contiguous row need no heap memory, whatever the size,
  // where its blocked matrix-matrix product takes a heap workspace beyond 128 KiB.
  void predict(const ConstRowsD& in, RowsD out, Scratch& scratch) const override {
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

 // The loaded model as bytes, for the trip from the isolated loader (a child process,
  // see load_isolated) back to the daemon: native-endian, same binary on both ends.
  std::string serialize() const {
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

  // The inverse of serialize(); checks every length against the bytes it has.
  static Result<std::unique_ptr<Regressor>> deserialize(std::string_view bytes,
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

 private:
  std::vector<Step> steps_;
  std::size_t last_dense_ = 0;
  Eigen::Index inputs_;
  Eigen::Index outputs_ = 0;
  std::string description_;
};

// The weights of one Dense layer as found in the file, with where they were found.
struct DenseWeights {
  hdf5::Tensor kernel;
  std::optional<hdf5::Tensor> bias;
  std::string kernel_at;  // "<file>: <HDF5 path>", for messages
  std::string bias_at;
};

// Reads the weights of the Dense layer at `position` in ModelSpec::layers, which is the
// `dense_index`-th Dense layer of the model (both 0-based).
using WeightReader =
    std::function<Result<DenseWeights>(std::size_t position, std::size_t dense_index)>;

// `what`: "<file>: layer 'x' (Dense): kernel <HDF5 path>".
Status check_finite(const hdf5::Tensor& t, const std::string& what) {
  for (std::size_t i = 0; i < t.values.size(); ++i) {
    if (!std::isfinite(t.values[i])) {
      return Status(Code::kInvalidValue, what + ": value " + std::to_string(i) + " is " +
                                             (std::isnan(t.values[i]) ? "NaN" : "infinite"));
    }
  }
  return Status::Ok();
}


Result<std::unique_ptr<Regressor>> build(const ModelSpec& spec, const WeightReader& read,
                                         std::string_view file, std::string_view version) {
  std::vector<Step> steps;
  Eigen::Index width = spec.input_width;
  Eigen::Index inputs = spec.input_width;
  std::size_t dense_index = 0;
  std::string topology;

  for (std::size_t pos = 0; pos < spec.layers.size(); ++pos) {
    const LayerSpec& layer = spec.layers[pos];
    const std::string label =
        std::string(file) + ": layer '" + layer.name + "' (" + layer.class_name + ")";
    if (layer.kind == LayerKind::kIdentity) continue;
    if (layer.kind == LayerKind::kActivation) {
      if (layer.activation == Activation::kLinear) continue;
      topology += " -> " + std::string(activation_name(layer.activation));
      // Folded into the Dense before it when that one is linear: same function, one pass.
      if (!steps.empty() && steps.back().dense && steps.back().activation == Activation::kLinear) {
        steps.back().activation = layer.activation;
      } else {
        Step s;
        s.activation = layer.activation;
        steps.push_back(std::move(s));
      }
      continue;
    }

    Result<DenseWeights> w = read(pos, dense_index++);
    if (!w.ok()) return w.status();
    const hdf5::Tensor& k = w->kernel;
    if (k.shape.size() != 2) {
      return invalid(label + ": kernel " + w->kernel_at + " has shape " + shape_text(k.shape) +
                     ", expected (inputs, units)");
    }
    const auto k_in = static_cast<Eigen::Index>(k.shape[0]);
    const auto k_out = static_cast<Eigen::Index>(k.shape[1]);
    if (k_out != layer.units) {
      return invalid(label + ": kernel " + w->kernel_at + " has shape " + shape_text(k.shape) +
                     " but the layer has " + std::to_string(layer.units) + " units");
    }
    if (k_in == 0) return invalid(label + ": kernel " + w->kernel_at + " has no input rows");
    if (width >= 0 && k_in != width) {
      return invalid(label + ": kernel " + w->kernel_at + " has shape " + shape_text(k.shape) +
                     " but its input has width " + std::to_string(width));
    }
    if (Status s = check_finite(k, label + ": kernel " + w->kernel_at); !s.ok()) return s;
    if (inputs < 0) inputs = k_in;
    if (topology.empty()) topology = std::to_string(k_in);

    Step step;
    step.dense = true;
    step.activation = layer.activation;
    step.kernel = Eigen::Map<const RowMatrixD>(k.values.data(), k_in, k_out);
    if (w->bias.has_value()) {
      const hdf5::Tensor& b = *w->bias;
      if (b.shape.size() != 1 || static_cast<Eigen::Index>(b.shape[0]) != k_out) {
        return invalid(label + ": bias " + w->bias_at + " has shape " + shape_text(b.shape) +
                       ", expected (" + std::to_string(k_out) + ",)");
      }
      if (Status s = check_finite(b, label + ": bias " + w->bias_at); !s.ok()) return s;
      step.bias = Eigen::Map<const Eigen::RowVectorXd>(b.values.data(), k_out);
    }
    steps.push_back(std::move(step));
    width = k_out;
    topology += " -> Dense " + std::to_string(k_out);
    if (layer.activation != Activation::kLinear) {
      topology += " " + std::string(activation_name(layer.activation));
    }
  }
  if (dense_index == 0) {
    return invalid(std::string(file) + ": the model has no Dense layer");
  }
  std::string description = "Keras " + spec.class_name + " " + topology;
  if (!version.empty()) description += " (keras " + std::string(version) + ")";
  return std::unique_ptr<Regressor>(
      std::make_unique<KerasRegressor>(std::move(steps), inputs, std::move(description)));
}

// Converts what escapes a loader (allocation failure, a library throwing) into a Status.
template <typename F>
Result<std::unique_ptr<Regressor>> guarded(std::string_view file, F&& body) {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return Status(Code::kResourceExhausted, std::string(file) + ": out of memory while loading");
  } catch (const std::exception& e) {
    return Status(Code::kInternal, std::string(file) + ": " + e.what());
  }
}

// ---------------------------------------------------------------- legacy .h5

std::string joined(const std::vector<std::string>& names) {
  std::string s;
  for (const std::string& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

Result<std::unique_ptr<Regressor>> load_h5(std::string_view bytes, std::string_view file) {
  Result<std::unique_ptr<hdf5::File>> h5 = hdf5::File::open_image(bytes, file);
  if (!h5.ok()) return h5.status();
  Result<hdf5::Group> root = (*h5)->root();
  if (!root.ok()) return root.status();

  if (!root->has_attribute("model_config")) {
    if (root->has_attribute("layer_names")) {
      Result<std::vector<std::string>> names = root->string_list_attribute("layer_names");
      return invalid(std::string(file) +
                     ": a weights-only file (written by save_weights(): no model_config "
                     "attribute), so the architecture is unknown; layers: " +
                     (names.ok() ? joined(*names) : std::string("unreadable")));
    }
    return invalid(std::string(file) +
                   ": no model_config attribute at the root: not a Keras model file");
  }
  const std::string config_file = std::string(file) + ": model_config";
  Result<std::string> text = root->string_attribute("model_config");
  if (!text.ok()) return text.status();
  Result<Json> doc = json::parse(*text, config_file);
  if (!doc.ok()) return doc.status();
  Result<ModelSpec> spec = parse_model_config(*doc, Where{config_file, ""});
  if (!spec.ok()) return spec.status();

  std::string version;
  if (root->has_attribute("keras_version")) {
    Result<std::string> v = root->string_attribute("keras_version");
    if (v.ok()) version = *v;
  }

  Result<hdf5::Group> weights = root->group("model_weights");
  if (!weights.ok()) return weights.status();
  Result<std::vector<std::string>> layer_names = weights->string_list_attribute("layer_names");
  if (!layer_names.ok()) return layer_names.status();

  // The file's layers that have weights, in file order (what Keras's loader pairs, in
  // order, with the model's layers that have weights).
  struct FileLayer {
    std::string name;
    std::vector<std::string> weight_names;
  };
  std::vector<FileLayer> with_weights;
  for (const std::string& name : *layer_names) {
    Result<hdf5::Group> g = weights->group(name);
    if (!g.ok()) return g.status();
    Result<std::vector<std::string>> wn = g->string_list_attribute("weight_names");
    if (!wn.ok()) return wn.status();
    if (!wn->empty()) with_weights.push_back({name, std::move(*wn)});
  }
  std::vector<std::string> dense_names;
  for (const LayerSpec& l : spec->layers) {
    if (l.kind == LayerKind::kDense) dense_names.push_back(l.name);
  }
  if (with_weights.size() != dense_names.size()) {
    std::vector<std::string> file_names;
    for (const FileLayer& f : with_weights) file_names.push_back(f.name);
    return invalid(std::string(file) + ": model_weights has weights for " +
                   std::to_string(with_weights.size()) + " layers (" + joined(file_names) +
                   ") but model_config has " + std::to_string(dense_names.size()) +
                   " Dense layers (" + joined(dense_names) + ")");
  }

  const hdf5::Group& wg = *weights;
  const WeightReader read = [&](std::size_t pos, std::size_t index) -> Result<DenseWeights> {
    const LayerSpec& layer = spec->layers[pos];
    const FileLayer& fl = with_weights[index];
    Result<hdf5::Group> g = wg.group(fl.name);
    if (!g.ok()) return g.status();
    const std::size_t expected = layer.use_bias ? 2 : 1;
    if (fl.weight_names.size() != expected) {
      return invalid(g->where() + ": weight_names lists " + std::to_string(fl.weight_names.size()) +
                     " weights [" + joined(fl.weight_names) + "] but Dense layer '" + layer.name +
                     "' has " + std::to_string(expected) +
                     (layer.use_bias ? " (kernel, bias)" : " (kernel; use_bias is false)"));
    }
    DenseWeights w;
    Result<hdf5::Tensor> k = g->read_float_dataset(fl.weight_names[0], kMaxTensorValues);
    if (!k.ok()) return k.status();
    w.kernel = std::move(*k);
    w.kernel_at = g->path() + "/" + fl.weight_names[0];
    if (layer.use_bias) {
      Result<hdf5::Tensor> b = g->read_float_dataset(fl.weight_names[1], kMaxTensorValues);
      if (!b.ok()) return b.status();
      w.bias = std::move(*b);
      w.bias_at = g->path() + "/" + fl.weight_names[1];
    }
    return w;
  };
  return build(*spec, read, file, version);
}

// ---------------------------------------------------------------- Keras 3 .keras

// keras.src.utils.naming.to_snake_case: drop non-word characters; put "_" before each
// capitalized word ("(.)([A-Z][a-z]+)"), then between a lower-case letter and a capital
// ("([a-z])([A-Z])"); lower-case. InputLayer -> input_layer, Conv2D -> conv2d.
std::string to_snake_case(std::string_view name) {
  auto upper = [](char c) { return std::isupper(static_cast<unsigned char>(c)) != 0; };
  auto lower = [](char c) { return std::islower(static_cast<unsigned char>(c)) != 0; };
  std::string s;
  for (char c : name) {
    if (std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_') s += c;
  }
  // Scans as the regular expression does: a match consumes the character before the
  // capital and the whole lower-case run after it.
  std::string a;
  for (std::size_t i = 0; i < s.size();) {
    a += s[i];
    if (i + 2 < s.size() && upper(s[i + 1]) && lower(s[i + 2])) {
      a += '_';
      std::size_t j = i + 2;
      while (j < s.size() && lower(s[j])) ++j;
      a.append(s, i + 1, j - (i + 1));
      i = j;
    } else {
      ++i;
    }
  }
  std::string b;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (i > 0 && lower(a[i - 1]) && upper(a[i])) b += '_';
    b += static_cast<char>(std::tolower(static_cast<unsigned char>(a[i])));
  }
  return b;
}

Result<std::unique_ptr<Regressor>> load_zip(std::string_view bytes, std::string_view file) {
  // read_zip checks every member's CRC as it reads it, before HDF5 parses anything.
  auto zip = read_zip(bytes, file);
  if (!zip.ok()) return zip.status();
  auto member = [&](const char* name) -> const std::string* {
    auto it = zip->find(name);
    return it == zip->end() ? nullptr : &it->second;
  };
  const std::string* config_text = member("config.json");
  if (config_text == nullptr) {
    return invalid(std::string(file) + ": no config.json in the archive: not a .keras file");
  }
  const std::string* weights_bytes = member("model.weights.h5");
  if (weights_bytes == nullptr) {
    return invalid(std::string(file) + ": model.weights.h5 is missing from the archive");
  }
  std::string version;
  if (const std::string* meta_text = member("metadata.json")) {
    {
      Result<Json> meta = json::parse(*meta_text, std::string(file) + ": metadata.json");
      if (meta.ok()) {
        const Json* v = json::optional_member(*meta, "keras_version");
        if (v != nullptr && v->is_string()) version = v->get<std::string>();
      }
    }
  }

  const std::string config_file = std::string(file) + ": config.json";
  Result<Json> doc = json::parse(*config_text, config_file);
  if (!doc.ok()) return doc.status();
  Result<ModelSpec> spec = parse_model_config(*doc, Where{config_file, ""});
  if (!spec.ok()) return spec.status();

  // Keras addresses a layer's variables by its class and rank among layers of that class.
  std::vector<std::string> keys;
  std::map<std::string, int> used;
  for (const LayerSpec& l : spec->layers) {
    std::string key = to_snake_case(l.class_name);
    auto [it, fresh] = used.try_emplace(key, 0);
    if (!fresh) key += "_" + std::to_string(++it->second);
    keys.push_back(std::move(key));
  }

  const std::string weights_file = std::string(file) + ": model.weights.h5";
  Result<std::unique_ptr<hdf5::File>> h5 = hdf5::File::open_image(*weights_bytes, weights_file);
  if (!h5.ok()) return h5.status();
  Result<hdf5::Group> root = (*h5)->root();
  if (!root.ok()) return root.status();
  // Keras 2.13's format (read by Keras 3) named the container _layer_checkpoint_dependencies.
  const char* container = root->exists("layers") || !root->exists("_layer_checkpoint_dependencies")
                              ? "layers"
                              : "_layer_checkpoint_dependencies";

  const hdf5::Group& rg = *root;
  const WeightReader read = [&](std::size_t pos,
                                std::size_t /*dense_index*/) -> Result<DenseWeights> {
    const LayerSpec& layer = spec->layers[pos];
    const std::string path = std::string(container) + "/" + keys[pos] + "/vars";
    Result<hdf5::Group> vars = rg.group(path);
    if (!vars.ok()) {
      return invalid(vars.status().message() + ": Keras stores the variables of layer '" +
                     layer.name + "' there");
    }
    if (vars->has_attribute("name")) {
      Result<std::string> stored = vars->string_attribute("name");
      if (!stored.ok()) return stored.status();
      if (*stored != layer.name) {
        return invalid(vars->where() + ": holds the variables of layer '" + *stored +
                       "', but config.json places layer '" + layer.name + "' there");
      }
    }
    Result<std::vector<std::string>> present = vars->children();
    if (!present.ok()) return present.status();
    const std::size_t expected = layer.use_bias ? 2 : 1;
    if (present->size() != expected) {
      return invalid(vars->where() + ": has " + std::to_string(present->size()) + " variables [" +
                     joined(*present) + "] but Dense layer '" + layer.name + "' has " +
                     std::to_string(expected) +
                     (layer.use_bias ? " (kernel, bias)" : " (kernel; use_bias is false)"));
    }
    DenseWeights w;
    Result<hdf5::Tensor> k = vars->read_float_dataset("0", kMaxTensorValues);
    if (!k.ok()) return k.status();
    w.kernel = std::move(*k);
    w.kernel_at = vars->path() + "/0";
    if (layer.use_bias) {
      Result<hdf5::Tensor> b = vars->read_float_dataset("1", kMaxTensorValues);
      if (!b.ok()) return b.status();
      w.bias = std::move(*b);
      w.bias_at = vars->path() + "/1";
    }
    return w;
  };
  return build(*spec, read, file, version);
}

// Runs `loader` (which reads HDF5) in a child process (models/isolated_call.h): HDF5 does
// not survive every corrupted file, and a crash or a hang there must cost one refused
// model, not the daemon. The library lock is held across the fork so that no other thread
// of this process is inside HDF5 at that moment; the child, running on this thread, drops
// it before loading.
template <typename Loader>
Result<std::unique_ptr<Regressor>> load_isolated(std::string_view file,
                                                 const IsolationLimits& limits, Loader&& loader) {
  std::unique_lock<std::mutex> lock = hdf5::lock_library();
  Result<std::string> bytes = call_isolated(file, [&]() -> Result<std::string> {
    lock.unlock();
    Result<std::unique_ptr<Regressor>> r = guarded(file, loader);
    if (!r.ok()) return r.status();
    return static_cast<const KerasRegressor&>(**r).serialize();
  }, limits);
  lock.unlock();
  if (!bytes.ok()) return bytes.status();
  return KerasRegressor::deserialize(*bytes, file);
}

}  // namespace

Result<std::unique_ptr<Regressor>> load_keras_h5(std::string_view bytes, std::string_view file,
                                                 const IsolationLimits& limits) {
  return load_isolated(file, limits, [&] { return load_h5(bytes, file); });
}

Result<std::unique_ptr<Regressor>> load_keras_zip(std::string_view bytes, std::string_view file,
                                                  const IsolationLimits& limits) {
  return load_isolated(file, limits, [&] { return load_zip(bytes, file); });
}

}  // namespace estimator::models
