// SPDX-License-Identifier: Apache-2.0
// Keras models: Sequential stacks and Functional graphs of the layers below, loaded from the
// files Keras writes (KEPLER.md section 6) and evaluated as a Regressor (models/stages.h).
//
// Files, all read from memory:
//   legacy .h5 (model.save("m.h5")), three generations:
//     standalone Keras 2.2   root attribute model_config = {"class_name": "Sequential",
//                            "config": [layers...]} (a bare list, no InputLayer; the first
//                            layer carries batch_input_shape); fixed-length name attributes
//     tf.keras 2.x           config {"layers": [...]}, weights /model_weights/d/d/kernel:0
//     Keras 3 (legacy h5)    weights /model_weights/d/<model name>/d/kernel
//   In every generation /model_weights carries layer_names, and each layer group carries
//   weight_names, the paths of the layer's weights relative to that group (empty, possibly
//   as an empty float64 array, for a layer without weights). As Keras does, the layers of
//   the file that have weights are matched in order to the layers of model_config that have
//   weights, and each layer's weights are read through its weight_names: paths are never
//   assumed. BatchNormalization layers have weights as Dense layers do.
//   Keras 3 .keras zip: config.json (the model config) and model.weights.h5, where a layer's
//     variables are /layers/<key>/vars/0, 1, ... in the layer's weight order (kernel, bias;
//     gamma, beta, moving_mean, moving_variance). The key is not the layer's
//     name: Keras numbers the layers of each class in order, key = snake_case(class name)
//     with "_<n>" from the second one on (dense, dense_1, ...). The vars group's "name"
//     attribute, written by recent versions, must then equal the layer's name.
//
// Layers (models/keras_config.h parses them, models/keras_eval.h evaluates them in float64):
//   Dense (use_bias true or false; activations linear, relu, sigmoid, tanh, softmax,
//   softplus, softsign, elu, selu, swish/silu, exponential with Keras's constants);
//   Activation (same list); ReLU (max_value, negative_slope, threshold; none negative);
//   LeakyReLU (negative_slope, Keras 2's alpha; 0.3 by default); ELU (alpha); Softmax and
//   Concatenate on the last axis; BatchNormalization at inference, last axis, with
//   epsilon, center and scale (weights gamma, beta, moving_mean, moving_variance, the first
//   two only when scale and center); Add; InputLayer; Flatten, Reshape to the same flat
//   width, Dropout, AlphaDropout, GaussianDropout, GaussianNoise (identities at
//   inference). Any other layer (recurrent, convolutional, custom classes, ...) is refused
//   with its name and class.
// Models: Sequential, or Functional with one input whose layers form a DAG (each layer
// called once), evaluated in topological order; several output layers give their columns
// side by side, in output_layers order. Cycles, references to layers not in the model,
// InputLayers other than the model's input, shared layers and nested models are refused
// naming the layer. A file written by save_weights() has no architecture and is refused
// as such; a TensorFlow SavedModel directory is refused by the registry's folder scan.
//
// Checks at load: the width every layer reads and makes (kernel rows = input width,
// units = kernel columns, bias, BatchNormalization vectors = width, Add of equal widths),
// weights float32 or float64 and finite, moving_variance + epsilon > 0. inputs() is the
// input width, outputs() the sum of the output layers' widths.
#pragma once

#include <memory>
#include <string_view>

#include "common/status.h"
#include "models/isolated_call.h"
#include "models/stages.h"

namespace estimator::models {

// A legacy .h5 Keras model held in `bytes`; `file` names it in messages. Refusals are
// kInvalidArgument (kInvalidValue for non-finite weights) with a message naming the file
// and the layer, attribute or HDF5 path at fault.
//
// Both loaders read HDF5 in a child process (models/isolated_call.h), within `limits`: a
// file that crashes or hangs the HDF5 library is refused with a message saying so.
Result<std::unique_ptr<Regressor>> load_keras_h5(std::string_view bytes, std::string_view file,
                                                 const IsolationLimits& limits = {});

// A Keras 3 .keras archive (zip of config.json and model.weights.h5) held in `bytes`.
Result<std::unique_ptr<Regressor>> load_keras_zip(std::string_view bytes, std::string_view file,
                                                  const IsolationLimits& limits = {});

}  // namespace estimator::models
