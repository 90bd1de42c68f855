// SPDX-License-Identifier: Apache-2.0
#include "models/keras_config.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace estimator::models::keras {

using json::Json;
using json::Where;

namespace {

// ---------------------------------------------------------------- activations

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

std::string number_text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

// A Dense or Activation layer's "activation": a name; null (Keras's default, linear); or,
// as some Keras 3 versions serialize functions, {"class_name": ..., "config": "<name>"}.
// The named functions take their default parameters (relu plain, elu with alpha 1).
Result<ActivationFn> parse_activation(const Json* value, const Where& where) {
  if (value == nullptr || value->is_null()) return ActivationFn{};
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
    if (s == n.name) return ActivationFn{.kind = n.activation};
  }
  std::string supported;
  for (const ActivationName& n : kActivations) {
    if (!supported.empty()) supported += ", ";
    supported += n.name;
  }
  return json::invalid(where,
                       "activation \"" + s + "\" is not supported (supported: " + supported + ")");
}

// ---------------------------------------------------------------- layer settings

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

// A finite number at cfg[key], `fallback` when absent. With `allow_null`, null also gives
// the fallback (ReLU's max_value: null means no cap).
Result<double> number_or(const Json& cfg, const Where& where, std::string_view key,
                         double fallback, bool allow_null = false) {
  const Json* v = json::optional_member(cfg, key);
  if (v == nullptr || (allow_null && v->is_null())) return fallback;
  return json::finite_number(*v, where / key);
}

Result<bool> bool_or(const Json& cfg, const Where& where, std::string_view key, bool fallback) {
  const Json* v = json::optional_member(cfg, key);
  if (v == nullptr) return fallback;
  if (!v->is_boolean()) {
    return json::invalid(where / key, std::string("expected true or false, got ") + v->type_name());
  }
  return v->get<bool>();
}

// An integer of the JSON document as int64, false when it is not one or does not fit
// (a huge unsigned value must not wrap around to -1).
bool as_int64(const Json& v, std::int64_t& out) {
  if (v.is_number_unsigned()) {
    const auto u = v.get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) return false;
    out = static_cast<std::int64_t>(u);
    return true;
  }
  if (!v.is_number_integer()) return false;
  out = v.get<std::int64_t>();
  return true;
}

// An "axis" that must be the last one of a batch of flat rows: -1 or 1, alone or in a
// list (tf.keras 2 saves BatchNormalization's axis as [1] once built).
Status expect_last_axis(const Json& cfg, const Where& where, const std::string& label) {
  const Json* v = json::optional_member(cfg, "axis");
  if (v == nullptr) return Status::Ok();
  const Json* a = v;
  if (v->is_array() && v->size() == 1) a = &(*v)[0];
  std::int64_t axis = 0;
  if (as_int64(*a, axis) && (axis == -1 || axis == 1)) return Status::Ok();
  return json::invalid(where / "axis", label + " works on axis " + v->dump() +
                                           "; only the last axis of flat rows (-1) is supported");
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

// Layers that pass their input on unchanged at inference, on a batch of flat rows.
constexpr std::string_view kIdentityLayers[] = {"Flatten",         "Dropout",      "AlphaDropout",
                                                "GaussianDropout", "GaussianNoise"};

constexpr std::string_view kSupportedLayers =
    "InputLayer, Dense, Activation, ReLU, LeakyReLU, ELU, Softmax, BatchNormalization, "
    "Concatenate, Add, Flatten, Reshape, Dropout, AlphaDropout, GaussianDropout, GaussianNoise";

Status parse_settings(const Json& cfg, const Where& cw, const std::string& label, LayerSpec& out) {
  const std::string& cls = out.class_name;
  if (cls == "InputLayer") {
    out.kind = LayerKind::kInput;
  } else if (std::find(std::begin(kIdentityLayers), std::end(kIdentityLayers), cls) !=
             std::end(kIdentityLayers)) {
    out.kind = LayerKind::kIdentity;
  } else if (cls == "Reshape") {
    out.kind = LayerKind::kIdentity;
    Result<const Json*> t = json::member(cfg, cw, "target_shape");
    if (!t.ok()) return t.status();
    if (!(*t)->is_array()) {
      return json::invalid(cw / "target_shape", std::string("expected an array, got ") +
                                                    (*t)->type_name());
    }
    for (const Json& d : **t) {
      std::int64_t v = 0;
      if (!as_int64(d, v) || out.target_shape.size() > 8) {
        return json::invalid(cw / "target_shape", "expected a few integers, got " + (*t)->dump());
      }
      out.target_shape.push_back(v);
    }
  } else if (cls == "Dense") {
    out.kind = LayerKind::kDense;
    Result<const Json*> units = json::member(cfg, cw, "units");
    if (!units.ok()) return units.status();
    Result<Eigen::Index> n = positive_count(**units, cw / "units");
    if (!n.ok()) return n.status();
    out.units = *n;
    Result<ActivationFn> a =
        parse_activation(json::optional_member(cfg, "activation"), cw / "activation");
    if (!a.ok()) return a.status();
    out.activation = *a;
    Result<bool> bias = bool_or(cfg, cw, "use_bias", true);
    if (!bias.ok()) return bias.status();
    out.use_bias = *bias;
  } else if (cls == "Activation") {
    out.kind = LayerKind::kActivation;
    Result<const Json*> a_json = json::member(cfg, cw, "activation");
    if (!a_json.ok()) return a_json.status();
    Result<ActivationFn> a = parse_activation(*a_json, cw / "activation");
    if (!a.ok()) return a.status();
    out.activation = *a;
  } else if (cls == "ReLU") {
    out.kind = LayerKind::kActivation;
    out.activation.kind = Activation::kRelu;
    const double inf = std::numeric_limits<double>::infinity();
    Result<double> max_value = number_or(cfg, cw, "max_value", inf, /*allow_null=*/true);
    if (!max_value.ok()) return max_value.status();
    Result<double> slope = number_or(cfg, cw, "negative_slope", 0.0);
    if (!slope.ok()) return slope.status();
    Result<double> threshold = number_or(cfg, cw, "threshold", 0.0);
    if (!threshold.ok()) return threshold.status();
    // Keras's ReLU layer refuses negative values of all three; its function is defined
    // (and computed here) for those it accepts.
    for (auto [key, v] : {std::pair{"max_value", *max_value}, std::pair{"negative_slope", *slope},
                          std::pair{"threshold", *threshold}}) {
      if (v < 0) return json::invalid(cw / key, label + ": a negative " + key + " is not valid");
    }
    out.activation.max_value = *max_value;
    out.activation.negative_slope = *slope;
    out.activation.threshold = *threshold;
  } else if (cls == "LeakyReLU") {
    out.kind = LayerKind::kActivation;
    out.activation.kind = Activation::kRelu;
    // Keras 3 saves negative_slope, Keras 2 alpha; both default to 0.3.
    const char* key = json::optional_member(cfg, "negative_slope") != nullptr ? "negative_slope"
                                                                              : "alpha";
    Result<double> slope = number_or(cfg, cw, key, 0.3);
    if (!slope.ok()) return slope.status();
    out.activation.negative_slope = *slope;
  } else if (cls == "ELU") {
    out.kind = LayerKind::kActivation;
    out.activation.kind = Activation::kElu;
    Result<double> alpha = number_or(cfg, cw, "alpha", 1.0);
    if (!alpha.ok()) return alpha.status();
    out.activation.alpha = *alpha;
  } else if (cls == "Softmax") {
    out.kind = LayerKind::kActivation;
    out.activation.kind = Activation::kSoftmax;
    if (Status s = expect_last_axis(cfg, cw, label); !s.ok()) return s;
  } else if (cls == "BatchNormalization") {
    out.kind = LayerKind::kBatchNorm;
    if (Status s = expect_last_axis(cfg, cw, label); !s.ok()) return s;
    Result<double> eps = number_or(cfg, cw, "epsilon", 1e-3);
    if (!eps.ok()) return eps.status();
    if (*eps < 0) return json::invalid(cw / "epsilon", label + ": a negative epsilon");
    out.epsilon = *eps;
    Result<bool> center = bool_or(cfg, cw, "center", true);
    if (!center.ok()) return center.status();
    Result<bool> scale = bool_or(cfg, cw, "scale", true);
    if (!scale.ok()) return scale.status();
    out.center = *center;
    out.scale = *scale;
    // Variants whose inference is not the moving-statistics formula, or that add weights.
    Result<bool> renorm = bool_or(cfg, cw, "renorm", false);
    if (!renorm.ok()) return renorm.status();
    if (*renorm) return json::invalid(cw / "renorm", label + ": renorm is not supported");
    for (const char* key : {"virtual_batch_size", "adjustment"}) {
      const Json* v = json::optional_member(cfg, key);
      if (v != nullptr && !v->is_null()) {
        return json::invalid(cw / key, label + ": " + key + " is not supported");
      }
    }
  } else if (cls == "Concatenate") {
    out.kind = LayerKind::kConcatenate;
    if (Status s = expect_last_axis(cfg, cw, label); !s.ok()) return s;
  } else if (cls == "Add") {
    out.kind = LayerKind::kAdd;
  } else {
    return json::invalid(out.where, label + " is not supported (supported layers: " +
                             std::string(kSupportedLayers) + ")");
  }
  return Status::Ok();
}

Result<LayerSpec> parse_layer(const Json& layer, const Where& where, ModelSpec& spec) {
  if (Status s = json::expect_object(layer, where); !s.ok()) return s;
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
  const Json* name = cfg.is_object() ? json::optional_member(cfg, "name") : nullptr;
  if (name == nullptr) name = json::optional_member(layer, "name");
  if (name != nullptr && name->is_string()) out.name = name->get<std::string>();
  std::string label = "layer '" + out.name + "' (" + out.class_name + ")";

  if (out.class_name == "Sequential" || out.class_name == "Functional" ||
      out.class_name == "Model") {
    return json::invalid(where, label + " is a nested model, which is not supported");
  }
  // Keras 3 records where a class comes from: a custom class is named as such.
  const Json* module = json::optional_member(layer, "module");
  if (module != nullptr && module->is_string() &&
      module->get_ref<const std::string&>().rfind("keras", 0) != 0) {
    label += ", a custom class from module '" + module->get<std::string>() + "',";
  } else if (const Json* reg = json::optional_member(layer, "registered_name");
             reg != nullptr && reg->is_string() && *reg != out.class_name &&
             reg->get_ref<const std::string&>().find('>') != std::string::npos) {
    label += ", the custom class '" + reg->get<std::string>() + "',";
  }
  if (Status s = json::expect_object(cfg, cfg_where); !s.ok()) return s;
  if (Status s = parse_settings(cfg, cfg_where, label, out); !s.ok()) return s;

  // Where each generation declares the input: batch_input_shape (Keras 2, on InputLayer or
  // on the first layer), batch_shape (Keras 3 InputLayer).
  for (const char* key : {"batch_input_shape", "batch_shape"}) {
    if (const Json* shape = json::optional_member(cfg, key); shape != nullptr) {
      if (Status s = declare_input(*shape, cfg_where / key, spec); !s.ok()) return s;
    }
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

// ---------------------------------------------------------------- the graph

// One tensor a layer reads: the layer that made it, which call of that layer (node), and
// which of its outputs.
struct TensorRef {
  std::string layer;
  long node = 0;
  long tensor = 0;
};

bool small_index(const Json& v) {
  std::int64_t i = 0;
  return as_int64(v, i) && i >= 0 && i < (std::int64_t{1} << 31);
}

// The tensors a Keras 3 node reads: {"args": [...], "kwargs": {...}} holding, at any depth
// (Concatenate and Add take a list), {"class_name": "__keras_tensor__", "config":
// {"keras_history": [name, node, tensor]}}.
Status keras3_sources(const Json& v, const Where& where, std::vector<TensorRef>& out, int depth) {
  if (depth > 16) return json::invalid(where, "inbound node nested too deeply");
  if (v.is_object()) {
    const Json* cls = json::optional_member(v, "class_name");
    if (cls != nullptr && cls->is_string() && *cls == "__keras_tensor__") {
      const Json* cfg = json::optional_member(v, "config");
      const Json* h = cfg != nullptr && cfg->is_object()
                          ? json::optional_member(*cfg, "keras_history")
                          : nullptr;
      if (h == nullptr || !h->is_array() || h->size() != 3 || !(*h)[0].is_string() ||
          !small_index((*h)[1]) || !small_index((*h)[2])) {
        return json::invalid(where, "unrecognized keras_history in " + v.dump());
      }
      out.push_back({(*h)[0].get<std::string>(), (*h)[1].get<long>(), (*h)[2].get<long>()});
      return Status::Ok();
    }
    for (const auto& item : v.items()) {
      if (Status s = keras3_sources(item.value(), where, out, depth + 1); !s.ok()) return s;
    }
  } else if (v.is_array()) {
    for (const Json& item : v) {
      if (Status s = keras3_sources(item, where, out, depth + 1); !s.ok()) return s;
    }
  }
  return Status::Ok();
}

// Keras 2 writes a node as [[name, node, tensor, kwargs], ...]; Keras 3 as an object.
Result<std::vector<TensorRef>> node_sources(const Json& node, const Where& where) {
  std::vector<TensorRef> out;
  if (node.is_object()) {
    if (Status s = keras3_sources(node, where, out, 0); !s.ok()) return s;
  } else if (node.is_array()) {
    for (const Json& e : node) {
      if (!e.is_array() || e.size() < 3 || !e[0].is_string() || !small_index(e[1]) ||
          !small_index(e[2])) {
        return json::invalid(where, "unrecognized inbound node entry " + e.dump());
      }
      out.push_back({e[0].get<std::string>(), e[1].get<long>(), e[2].get<long>()});
    }
  } else {
    return json::invalid(where, std::string("unrecognized inbound node, a ") + node.type_name());
  }
  return out;
}

// input_layers / output_layers: [[name, 0, 0], ...] or, for a single tensor, [name, 0, 0].
Result<std::vector<TensorRef>> endpoints(const Json& obj, const Where& where,
                                         std::string_view key) {
  Result<const Json*> v = json::member(obj, where, key);
  if (!v.ok()) return v.status();
  const Json& list = **v;
  if (!list.is_array()) {
    return json::invalid(where / key, std::string("expected an array, got ") + list.type_name());
  }
  auto one = [&](const Json& e) -> Result<TensorRef> {
    if (!e.is_array() || e.size() != 3 || !e[0].is_string() || !small_index(e[1]) ||
        !small_index(e[2])) {
      return json::invalid(where / key, "unrecognized entry " + e.dump());
    }
    return TensorRef{e[0].get<std::string>(), e[1].get<long>(), e[2].get<long>()};
  };
  std::vector<TensorRef> out;
  if (!list.empty() && list[0].is_string()) {
    Result<TensorRef> r = one(list);
    if (!r.ok()) return r.status();
    out.push_back(std::move(*r));
    return out;
  }
  for (const Json& e : list) {
    Result<TensorRef> r = one(e);
    if (!r.ok()) return r.status();
    out.push_back(std::move(*r));
  }
  return out;
}

// Resolves a tensor reference to a layer index. Every supported layer makes one tensor per
// call, and a layer called more than once (a shared layer) is refused before this.
Result<std::size_t> resolve(const TensorRef& ref, const std::map<std::string, std::size_t>& index,
                            const Where& where, const std::string& reader) {
  auto it = index.find(ref.layer);
  if (it == index.end()) {
    return json::invalid(where, reader + " reads layer '" + ref.layer +
                                    "', which is not in the model (a dangling reference)");
  }
  if (ref.node != 0 || ref.tensor != 0) {
    return json::invalid(where, reader + " reads output " + std::to_string(ref.tensor) +
                                    " of call " + std::to_string(ref.node) + " of layer '" +
                                    ref.layer + "', which has one call and one output");
  }
  return it->second;
}

// Kahn's algorithm (linear in layers and edges: a hostile config may hold many layers);
// layers never ready lie on a cycle, or downstream of one, and are named.
Status topological_order(ModelSpec& spec, const Where& where) {
  const std::size_t n = spec.layers.size();
  // Keras writes layers in an evaluation order; that order is kept when it is one, so
  // that descriptions follow the file.
  bool config_order = true;
  for (std::size_t i = 0; i < n && config_order; ++i) {
    for (std::size_t src : spec.layers[i].inputs) config_order = config_order && src < i;
  }
  if (config_order) {
    spec.order.resize(n);
    for (std::size_t i = 0; i < n; ++i) spec.order[i] = i;
    return Status::Ok();
  }
  std::vector<std::size_t> pending(n, 0);
  std::vector<std::vector<std::size_t>> readers(n);
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t src : spec.layers[i].inputs) {
      ++pending[i];
      readers[src].push_back(i);
    }
  }
  spec.order.clear();
  for (std::size_t i = 0; i < n; ++i) {
    if (pending[i] == 0) spec.order.push_back(i);
  }
  for (std::size_t next = 0; next < spec.order.size(); ++next) {
    for (std::size_t r : readers[spec.order[next]]) {
      if (--pending[r] == 0) spec.order.push_back(r);
    }
  }
  if (spec.order.size() == n) return Status::Ok();
  std::string stuck;
  for (std::size_t i = 0; i < n; ++i) {
    if (pending[i] != 0) stuck += (stuck.empty() ? "'" : ", '") + spec.layers[i].name + "'";
  }
  return json::invalid(where / "layers",
                       "the layers form a cycle; no evaluation order exists for " + stuck);
}

Status build_functional(const Json& cfg, const Where& cw, ModelSpec& spec) {
  std::map<std::string, std::size_t> index;
  for (std::size_t i = 0; i < spec.layers.size(); ++i) {
    if (!index.emplace(spec.layers[i].name, i).second) {
      return json::invalid(spec.layers[i].where,
                           "two layers are named '" + spec.layers[i].name + "'");
    }
  }
  const Json& layers = cfg["layers"];
  for (std::size_t i = 0; i < spec.layers.size(); ++i) {
    LayerSpec& l = spec.layers[i];
    const std::string label = "layer '" + l.name + "' (" + l.class_name + ")";
    const Where nw = l.where / "inbound_nodes";
    const Json* nodes = json::optional_member(layers[i], "inbound_nodes");
    if (nodes != nullptr && !nodes->is_array()) {
      return json::invalid(nw, std::string("expected an array, got ") + nodes->type_name());
    }
    const std::size_t calls = nodes == nullptr ? 0 : nodes->size();
    if (l.kind == LayerKind::kInput) {
      if (calls != 0) return json::invalid(nw, label + " is an input but reads other layers");
      continue;
    }
    if (calls == 0) {
      return json::invalid(nw, label + " reads nothing: it is not connected to the model's input");
    }
    if (calls > 1) {
      return json::invalid(nw, label + " is called " + std::to_string(calls) +
                                   " times; shared layers are not supported");
    }
    Result<std::vector<TensorRef>> refs = node_sources((*nodes)[0], nw / "[0]");
    if (!refs.ok()) return refs.status();
    for (const TensorRef& ref : *refs) {
      Result<std::size_t> src = resolve(ref, index, nw, label);
      if (!src.ok()) return src.status();
      l.inputs.push_back(*src);
    }
    const bool merge = l.kind == LayerKind::kConcatenate || l.kind == LayerKind::kAdd;
    if (l.inputs.empty() || (!merge && l.inputs.size() != 1)) {
      return json::invalid(nw, label + " reads " + std::to_string(l.inputs.size()) +
                                   " tensors; it takes " + (merge ? "one or more" : "one"));
    }
  }

  Result<std::vector<TensorRef>> ins = endpoints(cfg, cw, "input_layers");
  if (!ins.ok()) return ins.status();
  if (ins->size() != 1) {
    return json::invalid(cw / "input_layers",
                         "the model has " + std::to_string(ins->size()) +
                             " inputs; one input (the feature matrix) is supported");
  }
  Result<std::size_t> in = resolve(ins->front(), index, cw / "input_layers", "the model");
  if (!in.ok()) return in.status();
  if (spec.layers[*in].kind != LayerKind::kInput) {
    return json::invalid(cw / "input_layers",
                         "the model's input '" + spec.layers[*in].name + "' is not an InputLayer");
  }
  spec.input = *in;
  for (std::size_t i = 0; i < spec.layers.size(); ++i) {
    if (spec.layers[i].kind == LayerKind::kInput && i != spec.input) {
      return json::invalid(spec.layers[i].where,
                           "InputLayer '" + spec.layers[i].name +
                               "' is not the model's input (a dangling input)");
    }
  }
  Result<std::vector<TensorRef>> outs = endpoints(cfg, cw, "output_layers");
  if (!outs.ok()) return outs.status();
  if (outs->empty()) return json::invalid(cw / "output_layers", "the model has no output");
  for (const TensorRef& ref : *outs) {
    Result<std::size_t> o = resolve(ref, index, cw / "output_layers", "the model's output");
    if (!o.ok()) return o.status();
    spec.outputs.push_back(*o);
  }
  return topological_order(spec, cw);
}

// A Sequential model is a chain; it is given an InputLayer at its head when it has none.
Status build_sequential(const Where& cw, ModelSpec& spec) {
  if (spec.layers.empty() || spec.layers.front().kind != LayerKind::kInput) {
    LayerSpec input;
    input.class_name = "InputLayer";
    input.name = "(input)";
    input.kind = LayerKind::kInput;
    input.where = cw;
    spec.layers.insert(spec.layers.begin(), std::move(input));
  }
  for (std::size_t i = 1; i < spec.layers.size(); ++i) {
    if (spec.layers[i].kind == LayerKind::kInput) {
      return json::invalid(spec.layers[i].where, "InputLayer '" + spec.layers[i].name +
                                                     "' inside a Sequential model");
    }
    if (spec.layers[i].kind == LayerKind::kConcatenate || spec.layers[i].kind == LayerKind::kAdd) {
      return json::invalid(spec.layers[i].where,
                           "layer '" + spec.layers[i].name + "' (" + spec.layers[i].class_name +
                               ") merges tensors, which a Sequential model cannot feed");
    }
    spec.layers[i].inputs = {i - 1};
  }
  spec.input = 0;
  spec.outputs = {spec.layers.size() - 1};
  spec.order.resize(spec.layers.size());
  for (std::size_t i = 0; i < spec.order.size(); ++i) spec.order[i] = i;
  return Status::Ok();
}

}  // namespace

std::string describe(const ActivationFn& a) {
  std::string s(activation_name(a.kind));
  std::string params;
  auto add = [&](const char* key, double v) {
    params += (params.empty() ? "" : ", ") + std::string(key) + " " + number_text(v);
  };
  if (a.kind == Activation::kRelu) {
    if (a.negative_slope != 0 && std::isinf(a.max_value) && a.threshold == 0) {
      return "leaky_relu(" + number_text(a.negative_slope) + ")";
    }
    if (!std::isinf(a.max_value)) add("max_value", a.max_value);
    if (a.negative_slope != 0) add("negative_slope", a.negative_slope);
    if (a.threshold != 0) add("threshold", a.threshold);
  } else if (a.kind == Activation::kElu && a.alpha != 1) {
    add("alpha", a.alpha);
  }
  return params.empty() ? s : s + "(" + params + ")";
}

Result<ModelSpec> parse_model_config(const Json& doc, const Where& where) {
  if (Status s = json::expect_object(doc, where); !s.ok()) return s;
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
      if (Status s = json::expect_object(**cfg, cw); !s.ok()) return s;
      Result<const Json*> layers = json::member(**cfg, cw, "layers");
      if (!layers.ok()) return layers.status();
      if (Status s = parse_layer_list(**layers, cw / "layers", spec); !s.ok()) return s;
      if (const Json* shape = json::optional_member(**cfg, "build_input_shape");
          shape != nullptr && !shape->is_null()) {
        if (Status s = declare_input(*shape, cw / "build_input_shape", spec); !s.ok()) return s;
      }
    }
    if (Status s = build_sequential(cw, spec); !s.ok()) return s;
  } else if (spec.class_name == "Functional" || spec.class_name == "Model") {
    spec.class_name = "Functional";
    if (Status s = json::expect_object(**cfg, cw); !s.ok()) return s;
    Result<const Json*> layers = json::member(**cfg, cw, "layers");
    if (!layers.ok()) return layers.status();
    if (Status s = parse_layer_list(**layers, cw / "layers", spec); !s.ok()) return s;
    if (Status s = build_functional(**cfg, cw, spec); !s.ok()) return s;
  } else {
    return json::invalid(where / "class_name", "model class " + spec.class_name +
                                                   " is not supported (Sequential or Functional)");
  }
  return spec;
}

}  // namespace estimator::models::keras
