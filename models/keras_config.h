// SPDX-License-Identifier: Apache-2.0
// What a Keras model config says (the model_config attribute of a legacy .h5, config.json
// of a .keras zip), parsed into a graph of layers before any weight is read: each layer's
// class and settings, the layers it reads, the model's input and outputs, and an order
// in which every layer comes after the layers it reads. models/keras_model.h lists the
// accepted layers and models; everything else is refused here, naming the layer.
#pragma once

#include <Eigen/Core>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "models/json_fields.h"

namespace estimator::models::keras {

// Bounds on widths named by the config (features or units): far above any real MLP.
inline constexpr double kMaxWidth = 1 << 20;

enum class Activation : std::uint8_t {
  kLinear,
  kRelu,  // with its parameters: also LeakyReLU and ReLU(max_value, negative_slope, threshold)
  kSigmoid,
  kTanh,
  kSoftmax,
  kSoftplus,
  kSoftsign,
  kElu,  // with its alpha
  kSelu,
  kSwish,
  kExponential,
};
inline constexpr std::uint8_t kLastActivation = static_cast<std::uint8_t>(Activation::kExponential);

// An elementwise (softmax: row-wise) function with its parameters. kRelu computes
//   x > threshold ? min(x, max_value) : negative_slope * (x - threshold)
// which is Keras's relu for threshold >= 0 and max_value >= 0 (the ReLU layer refuses
// anything else); LeakyReLU(a) is negative_slope = a. kElu computes x > 0 ? x : alpha (e^x - 1).
struct ActivationFn {
  Activation kind = Activation::kLinear;
  double negative_slope = 0;
  double max_value = std::numeric_limits<double>::infinity();
  double threshold = 0;
  double alpha = 1;

  bool operator==(const ActivationFn&) const = default;
};

// "relu", "elu(alpha 0.5)", "relu(max_value 6)": for descriptions and messages.
std::string describe(const ActivationFn& a);

enum class LayerKind : std::uint8_t {
  kInput,        // InputLayer: the model's input
  kIdentity,     // Dropout, Flatten, Reshape to the same width, ...: passes its input on
  kDense,        // y = x K (+ b), then the activation
  kActivation,   // Activation, ReLU, LeakyReLU, ELU, Softmax
  kBatchNorm,    // (x - mean) / sqrt(variance + epsilon) * gamma + beta
  kConcatenate,  // along the last axis, in the order of the layer's inputs
  kAdd,
};

struct LayerSpec {
  std::string class_name;
  std::string name;
  LayerKind kind = LayerKind::kIdentity;
  ActivationFn activation;
  bool use_bias = true;                     // Dense
  Eigen::Index units = 0;                   // Dense
  double epsilon = 1e-3;                    // BatchNormalization
  bool center = true, scale = true;         // BatchNormalization: beta, gamma present
  std::vector<std::int64_t> target_shape;   // Reshape, without the batch axis
  std::vector<std::size_t> inputs;          // indices into ModelSpec::layers
  json::Where where;
};

struct ModelSpec {
  std::string class_name;              // Sequential or Functional
  std::vector<LayerSpec> layers;       // in config order (the order weights are paired in)
  std::vector<std::size_t> order;      // a topological order of the layers
  std::size_t input = 0;               // the InputLayer (kind kInput) every path starts at
  std::vector<std::size_t> outputs;    // the model's outputs, in order
  Eigen::Index input_width = -1;       // as declared by the config; -1 when it declares none
};

// The model config document: {"class_name": "Sequential" | "Functional" | "Model",
// "config": ...}. A Sequential model becomes a chain from an InputLayer (one is added when
// the config has none).
Result<ModelSpec> parse_model_config(const json::Json& doc, const json::Where& where);

}  // namespace estimator::models::keras
