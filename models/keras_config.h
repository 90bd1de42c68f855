// What a Keras model config says (the model_config attribute of a legacy .h5, config.json
// of a .keras zip), parsed into a description of the layers, before any weight is read.
// KEPLER.md section 6 and models/keras_model.h describe the files and the accepted layers.
#pragma once

#include <Eigen/Core>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "models/json_fields.h"

namespace estimator::models::keras {

// Bounds on widths named by the config (features or units): far above any real MLP.
inline constexpr double kMaxWidth = 1 << 20;

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

std::string_view activation_name(Activation a);

enum class LayerKind { kIdentity, kDense, kActivation };

struct LayerSpec {
  std::string class_name;
  std::string name;
  LayerKind kind = LayerKind::kIdentity;
  Activation activation = Activation::kLinear;
  bool use_bias = true;
  Eigen::Index units = 0;
  json::Where where;
};

struct ModelSpec {
  std::string class_name;         // Sequential or Functional
  std::vector<LayerSpec> layers;  // in evaluation order
  Eigen::Index input_width = -1;  // as declared by the config; -1 when it declares none
};

// The model config document: {"class_name": "Sequential" | "Functional" | "Model", "config": ...}.
Result<ModelSpec> parse_model_config(const json::Json& doc, const json::Where& where);

}  // namespace estimator::models::keras
