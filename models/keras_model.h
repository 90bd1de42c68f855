// SPDX-License-Identifier: Apache-2.0
// Keras models: stacks of Dense layers, loaded from the files Keras writes (KEPLER.md
// section 6) and evaluated as a Regressor (models/stages.h).
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
//   assumed.
//   Keras 3 .keras zip: config.json (the model config) and model.weights.h5, where a layer's
//     variables are /layers/<key>/vars/0 (kernel), /vars/1 (bias). The key is not the layer's
//     name: Keras numbers the layers of each class in order, key = snake_case(class name)
//     with "_<n>" from the second one on (dense, dense_1, ...). The vars group's "name"
//     attribute, written by recent versions, must then equal the layer's name.
//
// Layers: Dense (any units, use_bias true or false; activations linear, relu, sigmoid, tanh,
// softmax, softplus, softsign, elu, selu, swish/silu, exponential with Keras's constants),
// Activation (same list); InputLayer, Flatten (inputs are flat rows), Dropout, AlphaDropout,
// GaussianDropout and GaussianNoise (identities at inference). Any other layer is refused
// with its name and class. Models: Sequential, or a Functional model whose layers form a
// single chain (one input, each layer fed by the one before, one output). A file written by
// save_weights() has no architecture and is refused as such.
//
// Checks at load: input width and every layer's width chain (kernel rows = previous
// width), units = kernel columns, bias length, weights float32 or float64 and finite.
// inputs() is the first layer's width, outputs() the last Dense layer's units.
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
