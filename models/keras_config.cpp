#include "models/keras_config.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

namespace estimator::models::keras {

using json::Json;
using json::Where;

namespace {

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


}  // namespace

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

std::string_view activation_name(Activation a) {
  for (const ActivationName& n : kActivations) {
    if (n.activation == a) return n.name;
  }
  return "?";
}

}  // namespace estimator::models::keras
