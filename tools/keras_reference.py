#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Reference outputs of a Keras MLP, computed with h5py and numpy only (no Keras).

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


def dense_weights_legacy(f, layer):
    name = layer["config"].get("name") or layer.get("name")
    group = f["model_weights"][name]
    wn = _names(group.attrs["weight_names"])
    kernel = np.asarray(group[wn[0]], dtype=np.float64)
    bias = np.asarray(group[wn[1]], dtype=np.float64) if len(wn) > 1 else None
    return kernel, bias


def forward(config, weights_for, x):
    x = np.asarray(x, dtype=np.float64)
    counters = {}
    for layer in layer_list(config):
        cls = layer["class_name"]
        key = snake(cls)
        if key in counters:
            counters[key] += 1
            key = f"{key}_{counters[key]}"
        else:
            counters[key] = 0
        cfg = layer["config"]
        if cls == "Dense":
            kernel, bias = weights_for(layer, key)
            x = x @ kernel
            if bias is not None:
                x = x + bias
            x = activation(cfg.get("activation"), x)
        elif cls == "Activation":
            x = activation(cfg["activation"], x)
        elif cls in ("InputLayer", "Dropout", "Flatten", "AlphaDropout", "GaussianDropout",
                     "GaussianNoise"):
            pass
        else:
            raise ValueError(f"layer class {cls} not implemented in the reference")
    return x


def predict(path, rows):
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            config = json.loads(z.read("config.json"))
            h5 = h5py.File(io.BytesIO(z.read("model.weights.h5")), "r")

        def weights_for(layer, key):
            vars_ = h5["layers"][key]["vars"]
            kernel = np.asarray(vars_["0"], dtype=np.float64)
            bias = np.asarray(vars_["1"], dtype=np.float64) if "1" in vars_ else None
            return kernel, bias
    else:
        h5 = h5py.File(path, "r")
        if "model_config" not in h5.attrs:
            raise ValueError("no model_config (weights-only file)")
        config = json.loads(_text(h5.attrs["model_config"]))

        def weights_for(layer, key):
            return dense_weights_legacy(h5, layer)
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
