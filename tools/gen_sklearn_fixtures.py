#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Writes the small scikit-learn joblib pickles tests/models/sklearn_model_test.cpp reads,
with reference outputs computed by scikit-learn itself. Run from the repository root with
Debian's python3-sklearn / python3-joblib / python3-numpy (the pyenv python3 has no numpy):

    /usr/bin/python3 tools/gen_sklearn_fixtures.py

The same script is the test-time reference for Kepler's published pickles (written by
scikit-learn 1.5 with numpy 2, which Debian's 1.2 cannot load as is):

    /usr/bin/python3 tools/gen_sklearn_fixtures.py --predict <zip> <m1>[,<m2>...] <rows.json>

applies the members in turn (e.g. scaler.pkl,poly_scaler.pkl,package.pkl: transform(),
then predict() for the last) to the rows and prints the result as JSON. With
--predict-batch <requests.json> ([{"zip", "chain", "rows"}, ...]) it answers many such
requests in one run ({"results": [{"classes", "outputs"}, ...]}): importing scikit-learn
takes seconds, the predictions milliseconds. It loads the pickle
with joblib through a compatibility unpickler (numpy._core -> numpy.core, *Distance64 ->
*Distance, the Cython loss objects as inert stubs, tree nodes without the 1.3+ field
missing_go_to_left) and predicts with scikit-learn's own code: transform/predict for
scalers, linear models and SVR; for GradientBoosting, DummyRegressor.predict plus
sklearn.ensemble._gradient_boosting.predict_stages (the Cython loop sklearn uses) on the
pickled trees; for KNeighbors, a KNeighborsRegressor of the same parameters refitted on
the pickled _fit_X/_y (its KD tree is rebuilt identically).

Output, in tests/models/fixtures/sklearn/:
  <name>.pkl      joblib.dump(estimator, compress=0, protocol=P), P = 4 (what Kepler's
                  model server writes, and Python 3.8+'s default: the script checks that
                  joblib's default gives the same bytes) and, for a few models, 2 and 5.
  manifest.json   {"generator": {versions}, "row_sets": {"<set>": [[...]]},
                  "models": [{"name", "file", "class", "kind" (transform|regressor),
                  "protocol", "inputs", "outputs", "facts" {...},
                  "rows": "<set>" or [[...]], "expected": [[...]]}]}
                  (one row per line). The protocol 2 and 5 copies of a model say
                  "variant_of": <name> instead of repeating rows and expected.
                  Numbers are exact doubles (shortest round-trip form, <= 17 digits).

Models are fitted on seeded random data of 5 features. Rows mix random values, zeros,
values outside the training range and, for the tree models, values exactly equal to a
split threshold (in float64) and the float32 values around it, so that sklearn's
float32(x) <= threshold comparison is pinned. The KNN models are fitted on a small
integer grid with duplicated rows and queried on grid points, so that many neighbours are
equidistant and the tie order matters. The GradientBoosting models keep the numpy
RandomState every tree carries in one small model (gb_small) and drop it in the others
(tree.random_state = None after fitting: it plays no part in prediction and is 5 KB a tree).
Sizes are kept small (about 90 KB in all): few trees, few rows.
"""
import io
import json
import os
import sys

import joblib
import numpy as np
import sklearn
from sklearn.dummy import DummyRegressor  # noqa: F401 (documents what GB's init_ is)
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.linear_model import Lasso, LinearRegression, Ridge, SGDRegressor
from sklearn.neighbors import KNeighborsRegressor
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, PolynomialFeatures, StandardScaler
from sklearn.svm import SVR

OUT = "tests/models/fixtures/sklearn"
FEATURES = 5


def training_data(rng, rows):
    x = rng.uniform(0.0, 1.0, size=(rows, FEATURES))
    x[:, 1] *= 1000.0  # counter rates of different magnitudes
    x[:, 2] = np.round(x[:, 2] * 4.0)  # few distinct values: ties on thresholds
    x[:, 3] = rng.normal(0.0, 3.0, size=rows)
    y = 40.0 + 0.08 * x[:, 1] + 30.0 * np.sin(5.0 * x[:, 0]) + 4.0 * x[:, 2] - 2.0 * x[:, 3]
    y += rng.normal(0.0, 1.0, size=rows)
    return x, y


def query_rows(rng, x, count):
    rows = [list(r) for r in rng.uniform(x.min(axis=0), x.max(axis=0), size=(count, FEATURES))]
    rows.append([0.0] * FEATURES)
    rows.append(list(x.max(axis=0) * 1.5 + 1.0))  # outside the training range
    rows.append(list(x.min(axis=0) - 1.0))
    rows.append(list(x[3]))  # a training row
    return rows


def threshold_rows(rng, base, estimators, count):
    """Rows where one feature equals a split threshold (float64) or a float32 next to it,
    plus, for thresholds that are not float32 values, the float64 value next to the
    threshold that float32 rounding carries across it (so float32 and float64
    comparisons disagree on it)."""
    splits = []
    for tree in estimators:
        t = tree.tree_
        for node in range(t.node_count):
            if t.children_left[node] != -1:
                splits.append((int(t.feature[node]), float(t.threshold[node])))
    values = []
    for i in range(count):
        feature, thr = splits[rng.randint(len(splits))]
        kind = i % 4
        if kind == 0:
            v = thr
        elif kind == 1:
            v = float(np.float32(thr))  # the float32 nearest: may round up past thr
        elif kind == 2:
            v = float(np.nextafter(np.float32(thr), np.float32(-np.inf)))
        else:
            v = float(np.nextafter(np.float32(thr), np.float32(np.inf)))
        values.append((feature, v))
    crossing = []
    for feature, thr in splits:
        if float(np.float32(thr)) > thr:
            crossing.append((feature, thr))  # <= in float64, > once rounded to float32
        elif float(np.float32(thr)) < thr:
            crossing.append((feature, float(np.nextafter(thr, np.inf))))  # the reverse
    values += crossing[:8]
    rows = []
    for feature, v in values:
        row = list(base[rng.randint(len(base))])
        row[feature] = v
        rows.append(row)
    return rows


def knn_data(rng, rows):
    x = rng.randint(0, 3, size=(rows, FEATURES)).astype(np.float64)
    x[rows // 2:] = x[: rows - rows // 2]  # every row twice
    y = rng.uniform(10.0, 100.0, size=rows)
    return x, y


def knn_rows(rng, count):
    grid = rng.randint(0, 3, size=(count, FEATURES)).astype(np.float64)
    half = rng.randint(0, 5, size=(count // 2, FEATURES)).astype(np.float64) / 2.0
    return [list(r) for r in np.vstack([grid, half])]


def dumps(model, protocol):
    buf = io.BytesIO()
    joblib.dump(model, buf, compress=0, protocol=protocol)
    return buf.getvalue()


def g17(v):
    v = float(v)
    if not np.isfinite(v):
        raise ValueError("non-finite reference value")
    return float("%.17g" % v)


def row_text(row):
    return "[" + ", ".join(repr(g17(v)) for v in row) + "]"


def rows_text(rows, indent):
    pad = " " * indent
    return "[\n" + ",\n".join(pad + row_text(r) for r in rows) + "]"


def write_manifest(path, generator, row_sets, entries):
    """JSON with one row per line (json.dump with indent puts every number on a line)."""
    out = ['{"generator": %s,' % json.dumps(generator), ' "row_sets": {']
    out.append(",\n".join('  "%s": %s' % (k, rows_text(v, 3)) for k, v in row_sets.items()))
    out.append(' },')
    out.append(' "models": [')
    models = []
    for e in entries:
        head = {k: v for k, v in e.items() if k not in ("rows", "expected")}
        text = "  " + json.dumps(head)[:-1]
        if "variant_of" in e:
            models.append(text + "}")
            continue
        rows = e["rows"]
        text += ',\n   "rows": ' + (json.dumps(rows) if isinstance(rows, str) else rows_text(rows, 4))
        text += ',\n   "expected": ' + rows_text(e["expected"], 4) + "}"
        models.append(text)
    out.append(",\n".join(models))
    out.append(" ]}")
    with open(path, "w") as fh:
        fh.write("\n".join(out) + "\n")
    json.load(open(path))  # it parses


class _Inert:
    """Stands for a class the local scikit-learn lacks; it only keeps its state."""

    def __init__(self, *args, **kwargs):
        self._args = args

    def __setstate__(self, state):
        self._state = state


def _inert(*args):
    return _Inert(*args)


def _compat_class(module, name):
    """(module, name) as the local numpy/scikit-learn spell it, or None for a stub."""
    if module.startswith("numpy._core"):
        module = "numpy.core" + module[len("numpy._core"):]
    if module in ("_loss", "sklearn._loss._loss", "sklearn._loss.loss", "sklearn._loss.link"):
        return None  # GradientBoosting's loss objects: not needed to predict
    if module in ("sklearn.neighbors._kd_tree", "sklearn.neighbors._ball_tree",
                  "sklearn.metrics._dist_metrics"):
        return None  # KNeighbors' tree: rebuilt by refitting
    if module.startswith("numpy.random"):
        return None  # the random state trees carry: not needed to predict
    return module, name


def _drop_missing_field(state):
    nodes = state.get("nodes") if isinstance(state, dict) else None
    if nodes is not None and "missing_go_to_left" in (nodes.dtype.names or ()):
        from numpy.lib import recfunctions
        names = [n for n in nodes.dtype.names if n != "missing_go_to_left"]
        state = dict(state)
        state["nodes"] = recfunctions.repack_fields(nodes[names])
    return state


def _compat_unpickler(base):
    import pickle

    class Compat(base):
        dispatch = base.dispatch.copy()

        def find_class(self, module, name):
            mapped = _compat_class(module, name)
            if mapped is None:
                return _inert if name.startswith("__pyx_unpickle") or name == "newObj" else _Inert
            return super().find_class(*mapped)

        def load_build(self):
            if type(self.stack[-2]).__name__ == "Tree":
                self.stack[-1] = _drop_missing_field(self.stack[-1])
            base.load_build(self)

        dispatch[pickle.BUILD[0]] = load_build

    return Compat


def load_compat(data):
    """joblib.load of bytes written by a newer scikit-learn / numpy (see the docstring)."""
    import pickle
    from joblib import numpy_pickle

    nested = _compat_unpickler(pickle._Unpickler)
    top = _compat_unpickler(numpy_pickle.NumpyUnpickler)
    saved = numpy_pickle.pickle.load
    numpy_pickle.pickle.load = lambda fh: nested(fh).load()  # object arrays' nested pickles
    try:
        return top("<memory>", io.BytesIO(data)).load()
    finally:
        numpy_pickle.pickle.load = saved


def reference_outputs(model, x):
    name = type(model).__name__
    if hasattr(model, "transform"):
        return model.transform(x)
    if name == "GradientBoostingRegressor":
        from sklearn.ensemble._gradient_boosting import predict_stages
        init = model.init_
        raw = np.zeros((x.shape[0], 1)) if isinstance(init, str) else \
            init.predict(x).reshape(-1, 1).astype(np.float64)
        predict_stages(model.estimators_, x.astype(np.float32), model.learning_rate, raw)
        return raw
    if name == "KNeighborsRegressor":
        params = {k: getattr(model, k) for k in ("n_neighbors", "weights", "leaf_size", "p", "metric")}
        refit = KNeighborsRegressor(algorithm=model._fit_method, **params)
        return refit.fit(model._fit_X, model._y).predict(x)
    return model.predict(x)


def predict_chain(zip_path, members, rows):
    import zipfile
    out = np.array(rows, dtype=np.float64)
    classes = []
    with zipfile.ZipFile(zip_path) as z:
        for member in members.split(","):
            model = load_compat(z.read(member))
            classes.append(type(model).__name__)
            out = np.asarray(reference_outputs(model, out), dtype=np.float64)
            if out.ndim == 1:
                out = out.reshape(-1, 1)
    return {"classes": classes, "outputs": [[repr(float(v)) for v in r] for r in out]}


def predict_main(zip_path, members, rows_path):
    import warnings
    warnings.simplefilter("ignore")
    print(json.dumps(predict_chain(zip_path, members, json.load(open(rows_path)))))


def predict_batch_main(requests_path):
    import warnings
    warnings.simplefilter("ignore")
    results = [predict_chain(r["zip"], r["chain"], r["rows"]) for r in json.load(open(requests_path))]
    print(json.dumps({"results": results}))


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        if f.endswith(".pkl") or f == "manifest.json":
            os.remove(os.path.join(OUT, f))

    rng = np.random.RandomState(20251128)
    x, y = training_data(rng, 60)
    scaler = MaxAbsScaler().fit(x)
    xs = scaler.transform(x)
    kx, ky = knn_data(rng, 16)
    row_sets = {"base": query_rows(rng, x, 6)}
    row_sets["scaled"] = [list(r) for r in scaler.transform(np.array(row_sets["base"]))]
    row_sets["grid"] = knn_rows(rng, 12)
    entries = []

    def add(name, model, kind, facts=None, rows="base", protocols=(4,)):
        r = np.array(row_sets[rows] if isinstance(rows, str) else rows, dtype=np.float64)
        out = model.transform(r) if kind == "transform" else model.predict(r)
        out = np.asarray(out, dtype=np.float64)
        if out.ndim == 1:
            out = out.reshape(-1, 1)
        default = dumps(model, None)
        for protocol in protocols:
            data = dumps(model, protocol)
            if protocol == 4:
                assert data == default, "joblib's default protocol is no longer 4"
            suffix = "" if protocol == 4 else "_p%d" % protocol
            file = "%s%s.pkl" % (name, suffix)
            with open(os.path.join(OUT, file), "wb") as fh:
                fh.write(data)
            entry = {
                "name": name + suffix, "file": file, "class": type(model).__name__,
                "kind": kind, "protocol": protocol, "inputs": int(r.shape[1]),
                "outputs": int(out.shape[1]), "facts": facts or {},
            }
            if protocol == 4:
                entry["rows"] = rows if isinstance(rows, str) else [list(v) for v in r]
                entry["expected"] = [list(v) for v in out]
            else:
                entry["variant_of"] = name
            entries.append(entry)

    # Transforms.
    xz = x.copy()
    xz[:, 4] = 0.0  # an all-zero column: scale_ 0 -> 1
    add("maxabs", MaxAbsScaler().fit(xz), "transform", protocols=(4, 2, 5))
    xc = x.copy()
    xc[:, 2] = 7.0  # a constant column: scale_ 1
    add("standard", StandardScaler().fit(xc), "transform")
    add("standard_nomean", StandardScaler(with_mean=False).fit(x), "transform")
    add("standard_nostd", StandardScaler(with_std=False).fit(x), "transform")
    add("minmax", MinMaxScaler(feature_range=(-1.0, 2.0)).fit(x), "transform")
    add("minmax_clip", MinMaxScaler(clip=True).fit(x), "transform")
    add("poly2", PolynomialFeatures(2).fit(x), "transform", {"outputs": 21})
    add("poly3_interaction", PolynomialFeatures(3, interaction_only=True, include_bias=False).fit(x),
        "transform", rows=row_sets["base"][:4])
    add("poly_2_3", PolynomialFeatures((2, 3)).fit(x), "transform", rows=row_sets["base"][:3])

    # Linear regressors.
    lin = LinearRegression().fit(x, y)
    add("linear", lin, "regressor", {"coef": list(map(g17, lin.coef_)), "intercept": g17(lin.intercept_)},
        protocols=(4, 2, 5))
    y2 = np.column_stack([y, 3.0 * y - x[:, 0]])
    add("linear_2out", LinearRegression().fit(x, y2), "regressor")
    add("linear_nointercept", LinearRegression(fit_intercept=False).fit(x, y), "regressor")
    add("ridge", Ridge(alpha=0.5).fit(x, y), "regressor")
    add("lasso", Lasso(alpha=0.1, max_iter=10000).fit(x, y), "regressor")
    add("sgd", SGDRegressor(random_state=0, max_iter=2000, tol=1e-6).fit(xs, y), "regressor",
        rows="scaled")

    # Gradient boosting.
    def gb(name, strip_random_state=True, probes=8, **kw):
        model = GradientBoostingRegressor(random_state=0, **kw).fit(x, y)
        if strip_random_state:
            for tree in model.estimators_.ravel():
                tree.random_state = None
        probe = threshold_rows(np.random.RandomState(7), row_sets["base"], model.estimators_.ravel(), probes)
        init = model.init_
        facts = {
            "trees": int(model.estimators_.shape[0]),
            "nodes": [int(t.tree_.node_count) for t in model.estimators_.ravel()],
            "learning_rate": g17(model.learning_rate),
            "init": 0.0 if init == "zero" else g17(init.constant_.ravel()[0]),
        }
        add(name, model, "regressor", facts, rows=row_sets["base"] + probe)

    gb("gb_small", strip_random_state=False, n_estimators=1, max_depth=1)
    gb("gb", n_estimators=4, max_depth=3, learning_rate=0.2, probes=12)
    gb("gb_zero_huber", n_estimators=3, max_depth=1, init="zero", loss="huber")

    # Nearest neighbours on a grid with duplicated rows: many equal distances. A small
    # leaf_size gives a KD tree of several levels, so the traversal order matters too.
    for name, kw in [("knn", {}), ("knn_distance", {"weights": "distance"}),
                     ("knn_manhattan", {"p": 1}), ("knn_brute", {"algorithm": "brute"})]:
        params = {"n_neighbors": 6, "leaf_size": 2}
        params.update(kw)
        model = KNeighborsRegressor(**params).fit(kx, ky)
        add(name, model, "regressor", {"k": 6, "fit_method": model._fit_method}, rows="grid")

    # Support vector regression.
    for name, kw in [("svr_rbf", {}), ("svr_linear", {"kernel": "linear"}),
                     ("svr_poly", {"kernel": "poly", "degree": 3, "coef0": 1.0}),
                     ("svr_sigmoid", {"kernel": "sigmoid", "gamma": 0.1})]:
        model = SVR(C=50.0, epsilon=0.5, **kw).fit(xs[:20], y[:20])
        add(name, model, "regressor", {"support_vectors": int(model.support_vectors_.shape[0])},
            rows="scaled")

    generator = {"python": sys.version.split()[0], "sklearn": sklearn.__version__,
                 "numpy": np.__version__, "joblib": joblib.__version__}
    write_manifest(os.path.join(OUT, "manifest.json"), generator, row_sets, entries)
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print("wrote %d models, %d bytes in %s" % (len(entries), total, OUT))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--predict":
        predict_main(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) == 3 and sys.argv[1] == "--predict-batch":
        predict_batch_main(sys.argv[2])
    else:
        main()
