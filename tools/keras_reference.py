#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Reference outputs of a Keras model (Sequential or a Functional DAG), computed with h5py and numpy only (no Keras).

An implementation independent of models/keras_model.cpp, for its tests: it reads the
architecture and the weights of a Keras file and runs the forward pass in float64.

    keras_reference.py MODEL [ROWS]

MODEL is a legacy .h5 (Keras 2.2, tf.keras 2.x, Keras 3) or a Keras 3 .keras zip. ROWS is
"a,b,c;d,e,f" (rows separated by ";"); without it, rows are read from standard input, one
per line, comma- or space-separated. Prints one line per row: the outputs, space-separated,
with 17 significant digits. Exit status 2 with a message on stderr for a model it cannot
evaluate.

Weights are found by layer NAME here (legacy .h5: model_weights/<layer name>, then the
layer's weight_names), where the C++ loader pairs layers in order as Keras does; for .keras
files by Keras's per-class numbering of layers/<class>_<n>/vars.
"""
import io
import json
import sys
import zipfile

import h5py
import numpy as np

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _text(v):
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, np.ndarray) and v.shape == ():
        return _text(v[()])
    return str(v)


def _names(attr):
    arr = np.asarray(attr)
    if arr.dtype.kind not in "SUO":
        return []  # Keras writes an empty float64 array for a layer without weights
    return [_text(x) for x in arr.reshape(-1)]


def activation(name, x):
    if isinstance(name, dict):
        name = name.get("config")
    if name in (None, "linear"):
        return x
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    if name == "tanh":
        return np.tanh(x)
    if name == "softmax":
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    if name == "softplus":
        return np.logaddexp(0.0, x)
    if name == "softsign":
        return x / (1.0 + np.abs(x))
    if name == "elu":
        return np.where(x > 0, x, np.exp(x) - 1.0)
    if name == "selu":
        return SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * (np.exp(x) - 1.0))
    if name in ("swish", "silu"):
        return x / (1.0 + np.exp(-x))
    if name == "exponential":
        return np.exp(x)
    raise ValueError(f"activation {name!r} not implemented in the reference")


def layer_list(config):
    cfg = config["config"]
    if isinstance(cfg, list):
        return cfg
    return cfg["layers"]


def snake(name):
    import re
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def layer_name(layer):
    return layer["config"].get("name") or layer.get("name")


def weights_legacy(f, layer):
    """A layer's weights in a legacy .h5, found by its name and its weight_names."""
    group = f["model_weights"][layer_name(layer)]
    return [np.asarray(group[n], dtype=np.float64) for n in _names(group.attrs["weight_names"])]


def relu_layer(cfg, x):
    # The ReLU layer as Keras documents it: max_value above max_value, x from the threshold
    # up, negative_slope * (x - threshold) below it.
    max_value = cfg.get("max_value")
    slope = cfg.get("negative_slope", 0.0)
    threshold = cfg.get("threshold", 0.0)
    out = np.where(x >= threshold, x, slope * (x - threshold))
    if max_value is not None:
        out = np.where(x >= max_value, max_value, out)
    return out


def batch_norm(cfg, weights, x):
    w = list(weights)
    gamma = w.pop(0) if cfg.get("scale", True) else 1.0
    beta = w.pop(0) if cfg.get("center", True) else 0.0
    mean, var = w
    return (x - mean) / np.sqrt(var + cfg.get("epsilon", 1e-3)) * gamma + beta


def apply_layer(layer, weights, inputs):
    """One layer on its list of input tensors (float64 arrays of rows)."""
    cls = layer["class_name"]
    cfg = layer["config"]
    x = inputs[0]
    if cls == "Dense":
        y = x @ weights[0]
        if cfg.get("use_bias", True):
            y = y + weights[1]
        return activation(cfg.get("activation"), y)
    if cls == "Activation":
        return activation(cfg["activation"], x)
    if cls == "ReLU":
        return relu_layer(cfg, x)
    if cls == "LeakyReLU":
        slope = cfg.get("negative_slope", cfg.get("alpha", 0.3))
        return np.where(x >= 0, x, slope * x)
    if cls == "ELU":
        return np.where(x > 0, x, cfg.get("alpha", 1.0) * (np.exp(x) - 1.0))
    if cls == "Softmax":
        return activation("softmax", x)
    if cls == "BatchNormalization":
        return batch_norm(cfg, weights, x)
    if cls == "Concatenate":
        return np.concatenate(inputs, axis=-1)
    if cls == "Add":
        return sum(inputs[1:], inputs[0])
    if cls == "Reshape":
        return x.reshape((x.shape[0],) + tuple(cfg["target_shape"]))
    if cls == "Flatten":
        return x.reshape((x.shape[0], -1))
    if cls in ("InputLayer", "Dropout", "AlphaDropout", "GaussianDropout", "GaussianNoise"):
        return x
    raise ValueError(f"layer class {cls} not implemented in the reference")


def var_keys(config):
    """The .keras variable group of each layer: layers/<snake(class)>[_n], numbered per
    class in config order (a Sequential model's InputLayer is not among its layers)."""
    keys, counters = {}, {}
    for layer in layer_list(config):
        cls = layer["class_name"]
        if cls == "InputLayer" and config["class_name"] == "Sequential":
            continue
        key = snake(cls)
        if key in counters:
            counters[key] += 1
            key = f"{key}_{counters[key]}"
        else:
            counters[key] = 0
        keys[layer_name(layer)] = key
    return keys


def inbound(layer):
    """Names of the layers a Functional layer reads, in order (Keras 2 or Keras 3 form)."""
    names = []

    def walk(v):
        if isinstance(v, dict):
            if v.get("class_name") == "__keras_tensor__":
                names.append(v["config"]["keras_history"][0])
                return
            for item in v.values():
                walk(item)
        elif isinstance(v, list):
            for item in v:
                walk(item)
    for node in layer.get("inbound_nodes", []):
        if isinstance(node, dict):
            walk(node)
        else:
            names.extend(entry[0] for entry in node)
    return names


def endpoints(value):
    if value and isinstance(value[0], str):
        return [value[0]]
    return [e[0] for e in value]


def forward(config, weights_for, x):
    x = np.asarray(x, dtype=np.float64)
    keys = var_keys(config)
    layers = layer_list(config)

    def weights(layer):
        if layer["class_name"] not in ("Dense", "BatchNormalization"):
            return []
        return weights_for(layer, keys.get(layer_name(layer)))
    if config["class_name"] == "Sequential":
        for layer in layers:
            x = apply_layer(layer, weights(layer), [x])
        return x
    # Functional: each layer evaluated (recursively, memoized) once its inputs are.
    by_name = {layer_name(layer): layer for layer in layers}
    values = {}

    def value(name, depth=0):
        if depth > len(layers):
            raise ValueError("cycle")
        if name not in values:
            layer = by_name[name]
            if layer["class_name"] == "InputLayer":
                values[name] = x
            else:
                ins = [value(n, depth + 1) for n in inbound(layer)]
                values[name] = apply_layer(layer, weights(layer), ins)
        return values[name]
    outs = [value(n) for n in endpoints(config["config"]["output_layers"])]
    return np.concatenate([o.reshape(o.shape[0], -1) for o in outs], axis=1)


def predict(path, rows):
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            config = json.loads(z.read("config.json"))
            h5 = h5py.File(io.BytesIO(z.read("model.weights.h5")), "r")

        def weights_for(layer, key):
            vars_ = h5["layers"][key]["vars"]
            return [np.asarray(vars_[str(i)], dtype=np.float64) for i in range(len(vars_))]
    else:
        h5 = h5py.File(path, "r")
        if "model_config" not in h5.attrs:
            raise ValueError("no model_config (weights-only file)")
        config = json.loads(_text(h5.attrs["model_config"]))

        def weights_for(layer, key):
            return weights_legacy(h5, layer)
    with h5:
        return forward(config, weights_for, rows)


def parse_rows(text, sep_rows):
    rows = []
    for line in text.split(sep_rows):
        line = line.strip()
        if line:
            rows.append([float(v) for v in line.replace(",", " ").split()])
    return rows


def main(argv):
    if len(argv) < 2:
        sys.stderr.write(__doc__)
        return 2
    rows = parse_rows(argv[2], ";") if len(argv) > 2 else parse_rows(sys.stdin.read(), "\n")
    try:
        out = predict(argv[1], rows)
    except (ValueError, KeyError, OSError) as e:
        sys.stderr.write(f"keras_reference: {argv[1]}: {e}\n")
        return 2
    for row in out:
        print(" ".join(f"{v:.17g}" for v in row))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
