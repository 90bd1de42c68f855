#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Writes the Keras test fixtures of tests/models/fixtures/keras with h5py and numpy.

No Keras is needed (nor available on Debian): the files reproduce, by hand, the layouts
the Keras generations write, as observed in real files (../shared/model-samples/README.md):

  tfkeras2_activations.h5  tf.keras 2.x: /model_weights/<l>/<l>/kernel:0, vlen strings;
                           one Dense per activation, Dropout, Flatten, Activation layers
  keras22_list_config.h5   standalone Keras 2.2: config is a bare list of layers, no
                           InputLayer, batch_input_shape on the first Dense; fixed-length
                           null- and space-padded names; a Dense without bias; float64
  keras3_legacy.h5         Keras 3 legacy h5: /model_weights/<l>/<model>/<l>/kernel,
                           Dropout weight_names as an empty float64 array
  keras3_names.keras       Keras 3 zip (DEFLATE members): layers named freely in config.json
                           while their variables live at layers/dense, layers/dense_1, ...
  functional_k2.h5         tf.keras 2 Functional chain (inbound_nodes [[[name,0,0,{}]]])
  functional_k3.keras      Keras 3 Functional chain (keras_history tensors)
  tfkeras2_layers.h5       tf.keras 2 Sequential: BatchNormalization, ReLU (max_value,
                           negative_slope, threshold), LeakyReLU (alpha), ELU, Reshape,
                           Flatten, Softmax
  keras3_layers.keras      the same kinds in Keras 3 spellings (negative_slope, BN without
                           center and scale)
  functional_dag_k2.h5     tf.keras 2 Functional DAG: Add, Concatenate, two outputs
  functional_dag_k3.keras  Keras 3 Functional DAG (keras_history; merge layers take a list),
                           two outputs; also as Keras 3 legacy h5 (functional_dag_k3_legacy.h5)
                           and with its layers listed in reverse (functional_dag_k3_reversed)
  neg_*.{h5,keras}         files the loader must refuse (see NEGATIVE below, and
                           negative_graphs: cycles, dangling references and inputs, shared
                           layers, LSTM, Conv1D, custom classes, bad BatchNormalization)

and expected.json: for each positive fixture, input rows and the outputs of the numpy
forward pass of tools/keras_reference.py (which reads the files back through h5py).

Run from the repository root:  /usr/bin/python3 tools/gen_keras_fixtures.py
The output is deterministic (fixed seed), so re-running changes nothing unless this file
changes.
"""
import io
import json
import os
import sys
import zipfile

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import keras_reference  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "models",
                   "fixtures", "keras")

VLEN_UTF8 = h5py.string_dtype("utf-8")
VLEN_ASCII = h5py.string_dtype("ascii")


def dense(name, units, activation="linear", use_bias=True, **extra):
    cfg = {"name": name, "trainable": True, "dtype": "float32", "units": units,
           "activation": activation, "use_bias": use_bias}
    cfg.update(extra)
    return {"class_name": "Dense", "config": cfg}


def layer(cls, name, **cfg):
    return {"class_name": cls, "config": dict(name=name, **cfg)}


def init_weights(rng, layers, n_in, dtype=np.float32):
    """Kernel and bias for each Dense of `layers` (a config layer list), in order."""
    weights = {}
    width = n_in
    for spec in layers:
        if spec["class_name"] != "Dense":
            continue
        cfg = spec["config"]
        units = cfg["units"]
        kernel = rng.normal(0.0, 1.2 / np.sqrt(width), (width, units)).astype(dtype)
        w = {"kernel": kernel}
        if cfg.get("use_bias", True):
            w["bias"] = rng.normal(0.0, 0.3, units).astype(dtype)
        weights[cfg["name"]] = w
        width = units
    return weights


def set_string(obj, name, value, kind="vlen-utf8"):
    """A string or list of strings attribute, in one of the encodings Keras files use."""
    if kind == "vlen-utf8":
        dt = VLEN_UTF8
    elif kind == "vlen-ascii":
        dt = VLEN_ASCII
    else:
        dt = None
    if isinstance(value, list):
        if kind in ("fixed", "fixed-space"):
            size = max([len(v) for v in value] + [1])
            arr = np.array([v.encode() for v in value], dtype=f"S{size}")
        else:
            arr = np.array(value, dtype=dt)
    else:
        arr = np.array(value.encode(), dtype=f"S{max(len(value), 1)}") if kind.startswith(
            "fixed") else np.array(value, dtype=dt)
    if kind == "fixed-space":
        tid = h5py.h5t.C_S1.copy()
        tid.set_size(arr.dtype.itemsize)
        tid.set_strpad(h5py.h5t.STR_SPACEPAD)
        space = h5py.h5s.create_simple(arr.shape) if arr.shape else h5py.h5s.create(
            h5py.h5s.SCALAR)
        padded = np.array([v.ljust(arr.dtype.itemsize) for v in arr.reshape(-1)],
                          dtype=arr.dtype).reshape(arr.shape)
        attr = h5py.h5a.create(obj.id, name.encode(), tid, space)
        attr.write(padded, mtype=tid)
        return
    obj.attrs.create(name, arr)


def write_legacy(path, config, weights, *, flavor, model_name="sequential",
                 strings="vlen-utf8", config_strings="vlen-ascii", keras_version="2.7.0",
                 layer_order=None, weight_names_override=None, config_text=None):
    """A legacy model.save() .h5.

    flavor "tf2": <layer>/<layer>/kernel:0; "k3": <layer>/<model_name>/<layer>/kernel.
    weights: {layer name: {"kernel": array, "bias": array}} for layers with weights; every
    other layer of the config gets a group with empty weight_names (a float64 array).
    """
    with h5py.File(path, "w") as f:
        text = config_text if config_text is not None else json.dumps(config)
        set_string(f, "keras_version", keras_version, "vlen-utf8")
        set_string(f, "backend", "tensorflow", "vlen-utf8")
        set_string(f, "model_config", text, config_strings)
        mw = f.create_group("model_weights")
        set_string(mw, "keras_version", keras_version, "vlen-ascii")
        set_string(mw, "backend", "tensorflow", "vlen-ascii")
        layers = keras_reference.layer_list(config) if config is not None else []
        names = layer_order or [
            l["config"].get("name", l.get("name")) for l in layers
            if l["class_name"] != "InputLayer"]
        set_string(mw, "layer_names", names, strings)
        for name in names:
            g = mw.create_group(name)
            w = weights.get(name)
            if not w:
                g.attrs.create("weight_names", np.zeros((0,), dtype=np.float64))
                continue
            wnames = []
            for key, value in w.items():
                if flavor == "tf2":
                    wname = f"{name}/{key}:0"
                else:
                    wname = f"{model_name}/{name}/{key}"
                g.create_dataset(wname, data=value)
                wnames.append(wname)
            if weight_names_override and name in weight_names_override:
                wnames = weight_names_override[name]
            kind = strings
            if strings == "fixed" and name == names[-1]:
                kind = "fixed-space"  # one space-padded attribute, as some writers produce
            set_string(g, "weight_names", wnames, kind)
        if flavor == "k3":
            g = mw.create_group("top_level_model_weights")
            g.attrs.create("weight_names", np.zeros((0,), dtype=np.float64))


def snake(cls):
    return keras_reference.snake(cls)


def write_keras_zip(path, config, weights, *, vars_names=None, compress=True,
                    include_weights=True):
    """A Keras 3 .keras archive. Variables go to layers/<snake(class)>[_n]/vars/<i>."""
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        layers_g = f.create_group("layers")
        counters = {}
        for spec in keras_reference.layer_list(config):
            cls = spec["class_name"]
            if cls == "InputLayer" and config["class_name"] == "Sequential":
                continue  # Sequential.layers leaves the InputLayer out; Functional's has it
            key = snake(cls)
            if key in counters:
                counters[key] += 1
                key = f"{key}_{counters[key]}"
            else:
                counters[key] = 0
            lname = spec["config"]["name"]
            vars_g = layers_g.create_group(key).create_group("vars")
            set_string(vars_g, "name", (vars_names or {}).get(lname, lname), "vlen-utf8")
            # Keras's variable order: kernel, bias; gamma, beta, moving_mean, moving_variance.
            for i, value in enumerate(weights.get(lname, {}).values()):
                vars_g.create_dataset(str(i), data=value)
        opt = f.create_group("optimizer")
        set_string(opt.create_group("vars"), "name", "adam", "vlen-utf8")
        opt["vars"].create_dataset("0", data=np.array(7, dtype=np.int64))
        set_string(f.create_group("vars"), "name", config["config"]["name"], "vlen-utf8")
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED

    def member(name):  # a fixed date, so that re-running the generator changes nothing
        return zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    with zipfile.ZipFile(path, "w", compression=method) as z:
        z.writestr(member("metadata.json"),
                   json.dumps({"keras_version": "3.7.0", "date_saved": "2025-11-28@00:00:00"}),
                   compress_type=method)
        z.writestr(member("config.json"), json.dumps(config), compress_type=method)
        if include_weights:
            z.writestr(member("model.weights.h5"), buf.getvalue(), compress_type=method)


def sequential(name, layers, **extra):
    cfg = {"name": name, "trainable": True, "layers": layers}
    cfg.update(extra)
    return {"class_name": "Sequential", "config": cfg}


# --- layers beyond Dense, and Functional graphs ------------------------------------------

def dense_w(rng, n_in, units, use_bias=True, spread=1.2):
    w = {"kernel": rng.normal(0.0, spread / np.sqrt(n_in), (n_in, units)).astype(np.float32)}
    if use_bias:
        w["bias"] = rng.normal(0.0, 0.3, units).astype(np.float32)
    return w


def bn_w(rng, n, center=True, scale=True):
    """BatchNormalization weights in Keras's order, with moving statistics far from 0 and 1
    so that a formula that ignored them would fail."""
    w = {}
    if scale:
        w["gamma"] = rng.uniform(0.5, 2.0, n).astype(np.float32)
    if center:
        w["beta"] = rng.normal(0.0, 0.5, n).astype(np.float32)
    w["moving_mean"] = rng.normal(0.0, 1.0, n).astype(np.float32)
    w["moving_variance"] = rng.uniform(0.2, 3.0, n).astype(np.float32)
    return w


def k3_layer(cls, name, inbound=None, **cfg):
    """A Keras 3 Functional layer entry; `inbound` is a source name or a list of them
    (a merge layer takes its tensors as one list argument)."""
    entry = {"module": "keras.layers", "class_name": cls,
             "config": dict(name=name, trainable=True, dtype="float32", **cfg),
             "registered_name": None, "name": name, "inbound_nodes": []}
    if inbound is not None:
        def tensor(src):
            return {"class_name": "__keras_tensor__",
                    "config": {"shape": [None, None], "dtype": "float32",
                               "keras_history": [src, 0, 0]}}
        arg = [tensor(s) for s in inbound] if isinstance(inbound, list) else tensor(inbound)
        entry["inbound_nodes"] = [{"args": [arg], "kwargs": {}}]
    return entry


def k2_layer(cls, name, inbound=None, **cfg):
    """A tf.keras 2 Functional layer entry: inbound_nodes [[[name, 0, 0, {}], ...]]."""
    entry = {"class_name": cls, "config": dict(name=name, trainable=True, dtype="float32", **cfg),
             "name": name, "inbound_nodes": []}
    if inbound is not None:
        srcs = inbound if isinstance(inbound, list) else [inbound]
        entry["inbound_nodes"] = [[[s, 0, 0, {}] for s in srcs]]
    return entry


def functional(name, layers, inputs, outputs, keras3):
    if keras3:
        ins = [inputs[0], 0, 0] if len(inputs) == 1 else [[i, 0, 0] for i in inputs]
        outs = [outputs[0], 0, 0] if len(outputs) == 1 else [[o, 0, 0] for o in outputs]
        return {"module": "keras", "class_name": "Functional", "registered_name": "Functional",
                "config": {"name": name, "trainable": True, "layers": layers,
                           "input_layers": ins, "output_layers": outs}}
    return {"class_name": "Functional",
            "config": {"name": name, "layers": layers,
                       "input_layers": [[i, 0, 0] for i in inputs],
                       "output_layers": [[o, 0, 0] for o in outputs]}}


def functional_names(cfg):
    return [l["name"] for l in cfg["config"]["layers"] if l["class_name"] != "InputLayer"]


def layers_fixtures(rng, record):
    # --- tf.keras 2 Sequential with every supported layer kind --------------------------------
    layers = [layer("InputLayer", "input_1", batch_input_shape=[None, 5], dtype="float32",
                    sparse=False, ragged=False),
              dense("d0", 8),
              layer("BatchNormalization", "bn0", axis=[1], momentum=0.99, epsilon=0.001,
                    center=True, scale=True, beta_initializer={"class_name": "Zeros"}),
              layer("ReLU", "relu_capped", max_value=1.5, negative_slope=0.1, threshold=0.2),
              dense("d1", 8),
              layer("LeakyReLU", "leaky", alpha=0.2),
              dense("d2", 6),
              layer("ELU", "elu", alpha=0.7),
              layer("Reshape", "reshape", target_shape=[6]),
              layer("Flatten", "flatten", data_format="channels_last"),
              layer("BatchNormalization", "bn1", axis=-1, momentum=0.9, epsilon=0.01,
                    center=False, scale=True),
              layer("ReLU", "relu_plain", max_value=None, negative_slope=0.0, threshold=0.0),
              dense("d3", 4, use_bias=False),
              layer("Softmax", "softmax", axis=-1)]
    w = {"d0": dense_w(rng, 5, 8, spread=3.0), "bn0": bn_w(rng, 8), "d1": dense_w(rng, 8, 8),
         "d2": dense_w(rng, 8, 6), "bn1": bn_w(rng, 6, center=False),
         "d3": dense_w(rng, 6, 4, use_bias=False)}
    write_legacy(os.path.join(OUT, "tfkeras2_layers.h5"), sequential("sequential", layers), w,
                 flavor="tf2")
    record("tfkeras2_layers.h5", 5, n_rows=8, spread=2.0)

    # --- Keras 3 .keras Sequential with the Keras 3 spellings ---------------------------------
    layers = [k3_layer("InputLayer", "input_layer", batch_shape=[None, 4], sparse=False),
              k3_layer("Dense", "dense", units=6, activation="linear", use_bias=True),
              k3_layer("BatchNormalization", "batch_normalization", axis=-1, momentum=0.99,
                       epsilon=0.001, center=False, scale=False),
              k3_layer("LeakyReLU", "leaky_re_lu", negative_slope=0.05),
              k3_layer("Dense", "dense_1", units=6, activation="linear", use_bias=False),
              k3_layer("ReLU", "re_lu", max_value=None, negative_slope=0.0, threshold=0.5),
              k3_layer("Dropout", "dropout", rate=0.2, seed=None, noise_shape=None),
              k3_layer("ELU", "elu", alpha=1.3),
              k3_layer("Dense", "dense_2", units=3, activation="linear", use_bias=True),
              k3_layer("Softmax", "softmax", axis=-1)]
    for l in layers:
        del l["inbound_nodes"], l["name"]
    cfg = {"module": "keras", "class_name": "Sequential", "registered_name": None,
           "config": {"name": "sequential", "trainable": True, "dtype": "float32",
                      "layers": layers}}
    w = {"dense": dense_w(rng, 4, 6), "batch_normalization": bn_w(rng, 6, False, False),
         "dense_1": dense_w(rng, 6, 6, use_bias=False), "dense_2": dense_w(rng, 6, 3)}
    write_keras_zip(os.path.join(OUT, "keras3_layers.keras"), cfg, w)
    record("keras3_layers.keras", 4, n_rows=8, spread=1.5)

    # --- tf.keras 2 Functional DAG, two outputs ---------------------------------------------
    layers = [k2_layer("InputLayer", "input_1", batch_input_shape=[None, 6], sparse=False,
                       ragged=False),
              k2_layer("Dense", "a", "input_1", units=8, activation="relu", use_bias=True),
              k2_layer("Dense", "b", "input_1", units=8, activation="tanh", use_bias=True),
              k2_layer("Add", "add", ["a", "b"]),
              k2_layer("BatchNormalization", "bn", "add", axis=[1], epsilon=0.001, center=True,
                       scale=True, momentum=0.99),
              k2_layer("Concatenate", "cat", ["bn", "input_1"], axis=-1),
              k2_layer("LeakyReLU", "leaky", "cat", alpha=0.3),
              k2_layer("Dropout", "drop", "leaky", rate=0.5),
              k2_layer("Dense", "power", "drop", units=1, activation="linear", use_bias=True),
              k2_layer("Dense", "logits", "bn", units=3, activation="linear", use_bias=True),
              k2_layer("Softmax", "share", "logits", axis=-1)]
    cfg = functional("model", layers, ["input_1"], ["power", "share"], keras3=False)
    w = {"a": dense_w(rng, 6, 8), "b": dense_w(rng, 6, 8), "bn": bn_w(rng, 8),
         "power": dense_w(rng, 14, 1), "logits": dense_w(rng, 8, 3)}
    write_legacy(os.path.join(OUT, "functional_dag_k2.h5"), cfg, w, flavor="tf2",
                 layer_order=["input_1"] + functional_names(cfg))
    record("functional_dag_k2.h5", 6, n_rows=6)

    # --- Keras 3 Functional DAG (keras_history tensors), two outputs, .keras and legacy h5 ----
    layers = [k3_layer("InputLayer", "input_layer", batch_shape=[None, 5], sparse=False),
              k3_layer("Dense", "d1", "input_layer", units=7, activation="elu", use_bias=True),
              k3_layer("Dense", "d2", "input_layer", units=7, activation="linear",
                       use_bias=False),
              k3_layer("ReLU", "capped", "d2", max_value=6.0, negative_slope=0.0,
                       threshold=0.0),
              k3_layer("Add", "sum", ["d1", "capped"]),
              k3_layer("Concatenate", "joined", ["sum", "input_layer", "d1"], axis=-1),
              k3_layer("BatchNormalization", "norm", "joined", axis=-1, epsilon=0.002,
                       center=True, scale=False, momentum=0.99),
              k3_layer("ELU", "soft_floor", "norm", alpha=0.5),
              k3_layer("Dense", "watts", "soft_floor", units=2, activation="linear",
                       use_bias=True),
              k3_layer("Activation", "gate", "joined", activation="sigmoid"),
              k3_layer("Dense", "idle", "gate", units=1, activation="softplus", use_bias=True)]
    cfg = functional("functional", layers, ["input_layer"], ["watts", "idle"], keras3=True)
    w = {"d1": dense_w(rng, 5, 7), "d2": dense_w(rng, 5, 7, use_bias=False, spread=6.0),
         "norm": bn_w(rng, 19, scale=False), "watts": dense_w(rng, 19, 2),
         "idle": dense_w(rng, 19, 1)}
    write_keras_zip(os.path.join(OUT, "functional_dag_k3.keras"), cfg, w)
    record("functional_dag_k3.keras", 5, n_rows=6, spread=1.5)
    write_legacy(os.path.join(OUT, "functional_dag_k3_legacy.h5"), cfg, w, flavor="k3",
                 model_name="functional", keras_version="3.5.0",
                 layer_order=["input_layer"] + functional_names(cfg))
    record("functional_dag_k3_legacy.h5", 5, n_rows=6, spread=1.5)
    # The same graph with its layers listed in reverse: the loader must find the order.
    cfg["config"]["layers"] = cfg["config"]["layers"][::-1]
    write_keras_zip(os.path.join(OUT, "functional_dag_k3_reversed.keras"), cfg, w)
    record("functional_dag_k3_reversed.keras", 5, n_rows=6, spread=1.5)


def negative_graphs(rng):
    """Functional graphs and layers the loader must refuse, each naming what is at fault."""
    def k3_file(fname, layers, inputs=("input_layer",), outputs=("out",)):
        cfg = functional("functional", layers, list(inputs), list(outputs), keras3=True)
        w = {}
        write_keras_zip(os.path.join(OUT, fname), cfg, w)

    def k2_file(fname, layers, weights, inputs=("input_1",), outputs=("out",)):
        cfg = functional("model", layers, list(inputs), list(outputs), keras3=False)
        write_legacy(os.path.join(OUT, fname), cfg, weights, flavor="tf2",
                     layer_order=[l["name"] for l in layers])

    inp3 = k3_layer("InputLayer", "input_layer", batch_shape=[None, 3], sparse=False)
    inp2 = k2_layer("InputLayer", "input_1", batch_input_shape=[None, 3])

    # a reads b, b reads a.
    k2_file("neg_cycle.h5", [inp2,
                             k2_layer("ReLU", "a", "b"), k2_layer("ELU", "b", "a"),
                             k2_layer("Add", "out", ["input_1", "b"])], {})
    k3_file("neg_cycle.keras", [inp3, k3_layer("ReLU", "a", "c"), k3_layer("ELU", "b", "a"),
                                k3_layer("Softmax", "c", "b"),
                                k3_layer("Add", "out", ["input_layer", "c"])])
    # A layer reading a layer that is not in the model.
    k3_file("neg_dangling_ref.keras", [inp3, k3_layer("ReLU", "out", "ghost")])
    # A second InputLayer feeding the graph.
    k2_file("neg_dangling_input.h5",
            [inp2, k2_layer("InputLayer", "input_2", batch_input_shape=[None, 3]),
             k2_layer("Add", "out", ["input_1", "input_2"])], {})
    # An output that names no layer.
    k3_file("neg_unknown_output.keras", [inp3, k3_layer("ReLU", "relu", "input_layer")],
            outputs=("nowhere",))
    # Two inputs.
    k3_file("neg_two_inputs.keras",
            [inp3, k3_layer("InputLayer", "input_layer_1", batch_shape=[None, 3]),
             k3_layer("Concatenate", "out", ["input_layer", "input_layer_1"], axis=-1)],
            inputs=("input_layer", "input_layer_1"))
    # A layer called twice (a shared layer).
    shared = k2_layer("ReLU", "shared", "input_1")
    shared["inbound_nodes"].append([["input_1", 0, 0, {}]])
    k2_file("neg_shared_layer.h5", [inp2, shared, k2_layer("Add", "out", ["shared", "input_1"])],
            {})
    # Add of widths 4 and 3.
    k2_file("neg_add_widths.h5",
            [inp2, k2_layer("Dense", "d", "input_1", units=4, activation="linear",
                            use_bias=True),
             k2_layer("Add", "out", ["d", "input_1"])], {"d": dense_w(rng, 3, 4)})
    # Reshape out of flat rows.
    k3_file("neg_reshape.keras", [inp3, k3_layer("Reshape", "out", "input_layer",
                                                 target_shape=[3, 1])])
    # moving_variance + epsilon not positive.
    bad_bn = bn_w(rng, 3)
    bad_bn["moving_variance"][1] = -0.5
    k2_file("neg_bn_variance.h5",
            [inp2, k2_layer("BatchNormalization", "out", "input_1", axis=[1], epsilon=0.001,
                            center=True, scale=True)], {"out": bad_bn})
    # BatchNormalization with fewer weights than center and scale imply.
    short_bn = bn_w(rng, 3)
    del short_bn["beta"]
    k2_file("neg_bn_weights.h5",
            [inp2, k2_layer("BatchNormalization", "out", "input_1", axis=[1], epsilon=0.001,
                            center=True, scale=True)], {"out": short_bn})
    # Recurrent, convolutional and custom classes.
    k2_file("neg_lstm.h5", [inp2, k2_layer("LSTM", "out", "input_1", units=4)],
            {"out": {"kernel": np.ones((3, 16), np.float32),
                     "recurrent_kernel": np.ones((4, 16), np.float32),
                     "bias": np.ones(16, np.float32)}})
    k3_file("neg_conv1d.keras", [inp3, k3_layer("Conv1D", "out", "input_layer", filters=2,
                                                kernel_size=[1])])
    custom = k3_layer("Scaler", "out", "input_layer", factor=2.0)
    custom["module"] = "my_project.layers"
    custom["registered_name"] = "MyProject>Scaler"
    k3_file("neg_custom_class.keras", [inp3, custom])


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20251128)
    expected = {}

    def record(fname, n_in, n_rows=5, spread=1.0):
        rows = np.round(rng.normal(0.0, spread, (n_rows, n_in)), 6)
        out = keras_reference.predict(os.path.join(OUT, fname), rows)
        expected[fname] = {"inputs": n_in, "outputs": int(out.shape[1]),
                           "rows": rows.tolist(), "expected": out.tolist()}

    # --- tf.keras 2.x, every activation -------------------------------------------------
    acts = ["relu", "sigmoid", "tanh", "softplus", "elu", "selu", "softsign", "swish",
            "exponential", "linear"]
    layers = [layer("InputLayer", "dense_input", batch_input_shape=[None, 4],
                    dtype="float32", sparse=False, ragged=False)]
    for i, a in enumerate(acts):
        layers.append(dense(f"dense_{i}", 6, a))
        if a == "sigmoid":
            layers.append(layer("Dropout", "dropout", rate=0.3))
    layers += [layer("Activation", "activation", activation="tanh"),  # folded into linear
               layer("Flatten", "flatten", data_format="channels_last"),
               dense("dense_relu_then", 5, "relu"),
               layer("Activation", "activation_1", activation="sigmoid"),  # a step of its own
               dense("logits", 3, "linear", use_bias=False),
               layer("Activation", "softmax_act", activation="softmax")]
    cfg = sequential("sequential", layers)
    w = init_weights(rng, layers, 4)
    write_legacy(os.path.join(OUT, "tfkeras2_activations.h5"), cfg, w, flavor="tf2")
    record("tfkeras2_activations.h5", 4)

    # --- standalone Keras 2.2: list config, fixed-length strings, float64 -------------------
    layers = [dense("dense_1", 4, "relu", batch_input_shape=[None, 3]),
              layer("Dropout", "dropout_1", rate=0.5),
              dense("dense_2", 3, "selu", use_bias=False),
              dense("dense_3", 2, "softmax")]
    cfg = {"class_name": "Sequential", "config": layers}
    w = init_weights(rng, layers, 3, dtype=np.float64)
    write_legacy(os.path.join(OUT, "keras22_list_config.h5"), cfg, w, flavor="tf2",
                 strings="fixed", config_strings="fixed", keras_version="2.2.2")
    record("keras22_list_config.h5", 3)

    # --- Keras 3 legacy h5 ----------------------------------------------------------------
    layers = [layer("InputLayer", "input_layer", batch_shape=[None, 5], dtype="float32",
                    sparse=False),
              layer("Activation", "activation", activation="tanh"),  # before any Dense
              dense("dense", 7, "elu"),
              layer("Dropout", "dropout", rate=0.0),
              dense("dense_1", 2, "sigmoid")]
    cfg = sequential("sequential_7", layers, build_input_shape=[None, 5])
    w = init_weights(rng, layers, 5)
    write_legacy(os.path.join(OUT, "keras3_legacy.h5"), cfg, w, flavor="k3",
                 model_name="sequential_7", keras_version="3.5.0")
    record("keras3_legacy.h5", 5)

    # --- Keras 3 .keras, layer names unrelated to their variable paths --------------------
    layers = [layer("InputLayer", "input_layer", batch_shape=[None, 4], dtype="float32",
                    sparse=False),
              dense("hidden_a", 8, "relu"),
              layer("Dropout", "drop", rate=0.1),
              dense("hidden_b", 8, "tanh"),
              dense("power", 2, "linear")]
    keras3_cfg = sequential("sequential", layers)
    keras3_w = init_weights(rng, layers, 4)
    write_keras_zip(os.path.join(OUT, "keras3_names.keras"), keras3_cfg, keras3_w)
    record("keras3_names.keras", 4)

    # --- Functional chains -----------------------------------------------------------------
    k2_layers = [
        {"class_name": "InputLayer", "name": "input_1",
         "config": {"batch_input_shape": [None, 3], "dtype": "float32", "sparse": False,
                    "ragged": False, "name": "input_1"}, "inbound_nodes": []},
        {"class_name": "Dense", "name": "dense", "config": dense("dense", 4, "relu")["config"],
         "inbound_nodes": [[["input_1", 0, 0, {}]]]},
        {"class_name": "Dense", "name": "dense_1",
         "config": dense("dense_1", 2, "linear")["config"],
         "inbound_nodes": [[["dense", 0, 0, {}]]]},
    ]
    cfg = {"class_name": "Functional",
           "config": {"name": "model", "layers": k2_layers,
                      "input_layers": [["input_1", 0, 0]],
                      "output_layers": [["dense_1", 0, 0]]}}
    w = init_weights(rng, k2_layers, 3)
    write_legacy(os.path.join(OUT, "functional_k2.h5"), cfg, w, flavor="tf2",
                 layer_order=["input_1", "dense", "dense_1"])
    record("functional_k2.h5", 3)

    def k3_node(src):
        return [{"args": [{"class_name": "__keras_tensor__",
                           "config": {"shape": [None, 4], "dtype": "float32",
                                      "keras_history": [src, 0, 0]}}],
                 "kwargs": {}}]
    k3_layers = [
        {"module": "keras.layers", "class_name": "InputLayer", "name": "input_layer",
         "config": {"batch_shape": [None, 4], "dtype": "float32", "sparse": False,
                    "name": "input_layer"}, "inbound_nodes": []},
        {"module": "keras.layers", "class_name": "Dense", "name": "d1",
         "config": dense("d1", 6, "softplus")["config"], "inbound_nodes": k3_node("input_layer")},
        {"module": "keras.layers", "class_name": "Dense", "name": "d2",
         "config": dense("d2", 1, "linear")["config"], "inbound_nodes": k3_node("d1")},
    ]
    cfg = {"module": "keras", "class_name": "Functional",
           "config": {"name": "functional", "trainable": True, "layers": k3_layers,
                      "input_layers": ["input_layer", 0, 0],
                      "output_layers": ["d2", 0, 0]}}
    w = init_weights(rng, k3_layers, 4)
    # Functional.layers includes the InputLayer; it has no variables.
    write_keras_zip(os.path.join(OUT, "functional_k3.keras"), cfg, w)
    record("functional_k3.keras", 4)

    layers_fixtures(rng, record)

    # --- NEGATIVE: files the loader must refuse ---------------------------------------------
    small = [layer("InputLayer", "input_layer", batch_shape=[None, 3]),
             dense("dense", 4, "relu"), dense("dense_1", 2, "linear")]
    small_cfg = sequential("sequential", small)
    small_w = init_weights(rng, small, 3)

    # Kernel of dense_1 with 5 input rows where dense gives 4.
    bad = {k: dict(v) for k, v in small_w.items()}
    bad["dense_1"]["kernel"] = rng.normal(size=(5, 2)).astype(np.float32)
    write_legacy(os.path.join(OUT, "neg_kernel_mismatch.h5"), small_cfg, bad, flavor="tf2")

    # A NaN in a bias.
    bad = {k: dict(v) for k, v in small_w.items()}
    bad["dense"]["bias"] = bad["dense"]["bias"].copy()
    bad["dense"]["bias"][2] = np.nan
    write_legacy(os.path.join(OUT, "neg_nan_weight.h5"), small_cfg, bad, flavor="tf2")

    # Integer weights.
    bad = {k: dict(v) for k, v in small_w.items()}
    bad["dense"]["kernel"] = np.ones((3, 4), dtype=np.int32)
    write_legacy(os.path.join(OUT, "neg_int_weights.h5"), small_cfg, bad, flavor="tf2")

    # A layer class the loader does not evaluate.
    ln = [small[0], dense("dense", 4, "relu"),
          layer("LayerNormalization", "layer_normalization", axis=-1, epsilon=0.001),
          dense("dense_1", 2, "linear")]
    write_legacy(os.path.join(OUT, "neg_unknown_layer.h5"), sequential("sequential", ln),
                 small_w, flavor="tf2")

    # model_config that is not JSON.
    write_legacy(os.path.join(OUT, "neg_config_not_json.h5"), small_cfg, small_w,
                 flavor="tf2", config_text='{"class_name": "Sequential", "config": {"layers": [')

    # A weights-only file: save_weights() writes layer_names at the root, no model_config.
    with h5py.File(os.path.join(OUT, "neg_weights_only.h5"), "w") as f:
        set_string(f, "layer_names", ["lstm", "dense"], "vlen-ascii")
        set_string(f, "keras_version", "2.2.4-tf", "vlen-ascii")
        for name, shape in (("lstm", (3, 8)), ("dense", (2, 1))):
            g = f.create_group(name)
            g.create_dataset(f"{name}/kernel:0", data=np.ones(shape, dtype=np.float32))
            set_string(g, "weight_names", [f"{name}/kernel:0"], "vlen-ascii")

    # A Functional model that is not a chain: dense_1 reads the input, not dense.
    branch = json.loads(json.dumps(k2_layers))
    branch[2]["inbound_nodes"] = [[["input_1", 0, 0, {}]]]
    cfg = {"class_name": "Functional",
           "config": {"name": "model", "layers": branch,
                      "input_layers": [["input_1", 0, 0]],
                      "output_layers": [["dense_1", 0, 0]]}}
    write_legacy(os.path.join(OUT, "neg_functional_branch.h5"), cfg,
                 init_weights(np.random.default_rng(1), k2_layers, 3), flavor="tf2",
                 layer_order=["input_1", "dense", "dense_1"])

    # .keras whose variables at layers/dense_1 say they belong to another layer.
    write_keras_zip(os.path.join(OUT, "neg_vars_name_mismatch.keras"), keras3_cfg, keras3_w,
                    vars_names={"hidden_b": "something_else"})

    # .keras without model.weights.h5.
    write_keras_zip(os.path.join(OUT, "neg_no_weights.keras"), keras3_cfg, keras3_w,
                    include_weights=False)

    negative_graphs(rng)

    with open(os.path.join(OUT, "expected.json"), "w") as f:
        # One line per row; repr() of a float64 reads back to the same double.
        f.write("{\n")
        for i, (name, e) in enumerate(expected.items()):
            f.write(f' "{name}": {{"inputs": {e["inputs"]}, "outputs": {e["outputs"]},\n')
            for key in ("rows", "expected"):
                lines = ",\n".join("   [" + ", ".join(repr(v) for v in row) + "]"
                                   for row in e[key])
                f.write(f'  "{key}": [\n{lines}\n  ]' + (",\n" if key == "rows" else ""))
            f.write("}" + ("," if i + 1 < len(expected) else "") + "\n")
        f.write("}\n")
    for name in sorted(os.listdir(OUT)):
        print(f"{os.path.getsize(os.path.join(OUT, name)):8d}  {name}")


if __name__ == "__main__":
    main()
