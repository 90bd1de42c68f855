#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Writes scikit-learn (and XGBoost) regressor pickles and scikit-learn's own predictions
for tests/models/sklearn_regressors_test.cpp, which runs it at test time:

    /usr/bin/python3 tools/gen_sklearn_regressors.py <out_dir>

Needs Debian's python3-sklearn, python3-joblib and python3-numpy (the pyenv python3 has no
numpy); python3-xgboost for the XGBRegressor files (skipped without it).

Every model is fitted here on seeded random data, saved as a joblib file (joblib.dump,
compress=0) and as a plain pickle (pickle.dumps, protocols 2 and 5), and the reference is
the fitted estimator's own predict() on random rows, rows outside the training range, and
(tree models) rows that sit exactly on split thresholds, in float64 and at the float32
values around them. Only the installed versions (scikit-learn 1.2, numpy 1.24) can write
files, so the stored layouts of the other versions are made by hand from the same fitted
estimator and must predict what it predicts:

  numpy2_*    numpy 2's module names: numpy._core.multiarray / numpy._core.numeric instead
              of numpy.core.* (what scikit-learn 1.4+ with numpy 2 writes);
  missing     tree nodes with scikit-learn 1.3+'s dtype, which adds missing_go_to_left
              (uint8, item size 64); 0.24 to 1.2 write the 7-field dtype of 56 bytes,
              which is the installed layout;
  nofeatures  no n_features_in_ attribute, as scikit-learn before 0.24 wrote.

Output: <out_dir>/<name>.pkl and <out_dir>/manifest.json:
  {"generator": {versions}, "models": [{"name", "class", "file", "form", "outputs",
   "rows": [[...]], "expected": [[...]]}], "refused": [{"name", "file", "needle"}]}
"refused" lists classifiers and a custom class with the text their refusal must contain.
"boosters" ([{"name", "file", "rows", "expected"}]) are the early-stopped XGBRegressors'
boosters saved as Booster files (<name>.json, <name>.ubj), with Booster.predict's answer.
Numbers are exact doubles (repr round-trips).
"""
import io
import json
import os
import pickle
import sys

import joblib
import numpy as np
import sklearn
from joblib.numpy_pickle import NumpyPickler
from sklearn.ensemble import (ExtraTreesRegressor, GradientBoostingClassifier,
                              RandomForestClassifier, RandomForestRegressor)
from sklearn.linear_model import (ElasticNet, ElasticNetCV, Lasso, LassoCV,
                                  LogisticRegression, Ridge, RidgeCV)
from sklearn.svm import SVC, LinearSVR
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor, _tree

FEATURES = 5


class CustomRegressor:
    """A class of the user's own: a loader must refuse it by name, never run it."""

    def __init__(self):
        self.coef_ = np.ones(FEATURES)

    def predict(self, x):
        return x @ self.coef_


def data(rng, rows, outputs=1):
    x = rng.uniform(0.0, 1.0, size=(rows, FEATURES))
    x[:, 1] *= 1000.0
    x[:, 2] = np.round(x[:, 2] * 4.0)
    x[:, 3] = rng.normal(0.0, 3.0, size=rows)
    y = 40.0 + 0.08 * x[:, 1] + 30.0 * np.sin(5.0 * x[:, 0]) + 4.0 * x[:, 2] - 2.0 * x[:, 3]
    y = y + rng.normal(0.0, 1.0, size=rows)
    if outputs == 1:
        return x, y
    return x, np.column_stack([y * (k + 1) + 3.0 * k * x[:, 4] for k in range(outputs)])


def query_rows(rng, x, count):
    rows = rng.uniform(x.min(axis=0), x.max(axis=0), size=(count, FEATURES))
    extra = np.array([np.zeros(FEATURES), x.max(axis=0) * 1.5 + 1.0, x.min(axis=0) - 1.0, x[3]])
    return np.vstack([rows, extra])


def threshold_rows(rng, base, trees, count):
    """Rows with one feature on a split threshold, or on a float32 value next to it."""
    splits = []
    for t in trees:
        for node in range(t.node_count):
            if t.children_left[node] != -1:
                splits.append((int(t.feature[node]), float(t.threshold[node])))
    rows = []
    for i in range(count):
        feature, thr = splits[rng.randint(len(splits))]
        v = [thr, float(np.float32(thr)),
             float(np.nextafter(np.float32(thr), np.float32(-np.inf))),
             float(np.nextafter(np.float32(thr), np.float32(np.inf)))][i % 4]
        row = base[rng.randint(len(base))].copy()
        row[feature] = v
        rows.append(row)
    return np.array(rows)


# ---- hand-made layouts of other versions


NUMPY2_NAMES = {"numpy.core.multiarray": "numpy._core.multiarray",
                "numpy.core.numeric": "numpy._core.numeric"}


def save_global_numpy2(pickler, parent, obj, name):
    module = getattr(obj, "__module__", None)
    qual = name or getattr(obj, "__qualname__", obj.__name__)
    if module not in NUMPY2_NAMES:
        return parent.save_global(pickler, obj, name)
    if pickler.proto >= 4:
        pickler.save(NUMPY2_NAMES[module])
        pickler.save(qual)
        pickler.write(pickle.STACK_GLOBAL)
    else:
        pickler.write(pickle.GLOBAL + NUMPY2_NAMES[module].encode() + b"\n" +
                      qual.encode() + b"\n")
    pickler.memoize(obj)


class Numpy2Pickler(pickle._Pickler):
    """Plain pickle (the pure-Python pickler), writing numpy 2's module names."""

    def save_global(self, obj, name=None):
        save_global_numpy2(self, pickle._Pickler, obj, name)


class Numpy2JoblibPickler(NumpyPickler):
    """joblib's pickler, writing numpy 2's module names (for its scalars and dtypes)."""

    def save_global(self, obj, name=None):
        save_global_numpy2(self, NumpyPickler, obj, name)


NODE_DTYPE_13 = np.dtype({
    "names": ["left_child", "right_child", "feature", "threshold", "impurity",
              "n_node_samples", "weighted_n_node_samples", "missing_go_to_left"],
    "formats": ["<i8", "<i8", "<i8", "<f8", "<f8", "<i8", "<f8", "u1"],
    "offsets": [0, 8, 16, 24, 32, 40, 48, 56],
    "itemsize": 64})


class MissingFieldPickler(NumpyPickler):
    """Writes every Tree with scikit-learn 1.3+'s node dtype (missing_go_to_left)."""

    def reducer_override(self, obj):
        if isinstance(obj, _tree.Tree):
            cls, args, state = obj.__reduce__()
            old = state["nodes"]
            nodes = np.zeros(old.shape, dtype=NODE_DTYPE_13)
            for f in old.dtype.names:
                nodes[f] = old[f]
            nodes["missing_go_to_left"] = (np.arange(len(old)) % 2).astype(np.uint8)
            state = dict(state, nodes=nodes)
            return cls, args, state
        return NotImplemented


def joblib_bytes(model, pickler=NumpyPickler, protocol=4):
    buf = io.BytesIO()
    pickler(buf, protocol=protocol).dump(model)
    return buf.getvalue()


def without_features_in(model):
    """A copy without n_features_in_ anywhere (scikit-learn before 0.24)."""
    import copy
    m = copy.deepcopy(model)
    for est in [m] + list(getattr(m, "estimators_", [])):
        est.__dict__.pop("n_features_in_", None)
    return m


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.RandomState(20261207)
    x, y = data(rng, 300)
    x2, y2 = data(rng, 300, outputs=2)
    models = []
    refused = []
    boosters = []

    def write(name, blob):
        with open(os.path.join(out, name + ".pkl"), "wb") as f:
            f.write(blob)
        return name + ".pkl"

    def add(name, model, rows, variants=()):
        expected = model.predict(rows)
        expected = expected.reshape(len(rows), -1)
        outputs = expected.shape[1]
        forms = [("joblib", joblib_bytes(model)),
                 ("pickle2", pickle.dumps(model, protocol=2)),
                 ("pickle5", pickle.dumps(model, protocol=5))]
        forms += list(variants)
        for form, blob in forms:
            models.append({"name": name + "_" + form, "class": type(model).__name__,
                           "file": write(name + "_" + form, blob), "form": form,
                           "outputs": outputs, "rows": rows.tolist(),
                           "expected": expected.tolist()})

    def common_variants(model):
        return [("numpy2_joblib", joblib_bytes(model, Numpy2JoblibPickler)),
                ("numpy2_pickle2", joblib_bytes(model, Numpy2Pickler, protocol=2)),
                ("numpy2_pickle5", joblib_bytes(model, Numpy2Pickler, protocol=5)),
                ("nofeatures", joblib_bytes(without_features_in(model)))]

    linear = [("ridge", Ridge(alpha=0.5)), ("ridgecv", RidgeCV(alphas=(0.1, 1.0, 10.0))),
              ("lasso", Lasso(alpha=0.05)), ("lassocv", LassoCV(cv=3, random_state=0)),
              ("elasticnet", ElasticNet(alpha=0.05, l1_ratio=0.3)),
              ("elasticnetcv", ElasticNetCV(cv=3, l1_ratio=[0.2, 0.8], random_state=0)),
              ("linearsvr", LinearSVR(C=0.5, max_iter=20000, random_state=0))]
    for name, est in linear:
        est.fit(x, y)
        add(name, est, query_rows(rng, x, 40), common_variants(est))
    ridge2 = Ridge(alpha=0.5).fit(x2, y2)
    add("ridge_2out", ridge2, query_rows(rng, x2, 20))

    trees = [("tree", DecisionTreeRegressor(max_depth=6, random_state=0), x, y),
             ("forest", RandomForestRegressor(n_estimators=12, max_depth=5, random_state=0), x, y),
             ("extratrees", ExtraTreesRegressor(n_estimators=12, max_depth=5, random_state=0), x, y),
             ("tree_2out", DecisionTreeRegressor(max_depth=5, random_state=0), x2, y2),
             ("forest_2out", RandomForestRegressor(n_estimators=6, max_depth=4, random_state=0),
              x2, y2),
             ("extratrees_2out", ExtraTreesRegressor(n_estimators=6, max_depth=4, random_state=0),
              x2, y2)]
    for name, est, tx, ty in trees:
        est.fit(tx, ty)
        inner = [e.tree_ for e in getattr(est, "estimators_", [est])]
        rows = np.vstack([query_rows(rng, tx, 40), threshold_rows(rng, tx, inner, 40)])
        variants = common_variants(est) + [("missing", joblib_bytes(est, MissingFieldPickler))]
        add(name, est, rows, variants)

    try:
        import xgboost
        xgb = xgboost.XGBRegressor(n_estimators=20, max_depth=4, learning_rate=0.3,
                                   random_state=0)
        xgb.fit(x, y)
        rows = query_rows(rng, x, 40)
        add("xgbregressor", xgb, rows)
        # Early stopping: the booster keeps the rounds after its best, and predict() uses
        # only those up to best_iteration (plain boosting, boosted forests, dart).
        for name, kw in [("xgbregressor_early", {}),
                         ("xgbregressor_early_forest",
                          {"num_parallel_tree": 3, "subsample": 0.8, "colsample_bynode": 0.8}),
                         ("xgbregressor_early_dart", {"booster": "dart", "rate_drop": 0.1})]:
            early = xgboost.XGBRegressor(n_estimators=200, max_depth=3, learning_rate=0.5,
                                         early_stopping_rounds=5, random_state=0, **kw)
            early.fit(x[:200], y[:200], eval_set=[(x[200:], y[200:])], verbose=False)
            rows = query_rows(rng, x, 40)
            every_tree = early.get_booster().predict(xgboost.DMatrix(rows))
            if (early.best_iteration + 1 >= early.get_booster().num_boosted_rounds()
                    or np.array_equal(early.predict(rows), every_tree)):
                sys.exit(name + ": early stopping left nothing to cut; the file would "
                         "prove nothing")
            add(name, early, rows)
            # The same booster saved as a Booster file: Booster.predict, whose default is
            # every tree, is its reference.
            for ext in ("json", "ubj"):
                early.get_booster().save_model(os.path.join(out, name + "." + ext))
                boosters.append({"name": name, "file": name + "." + ext, "rows": rows.tolist(),
                                 "expected": every_tree.reshape(-1, 1).astype(float).tolist()})
    except ImportError:
        pass

    cls_y = (y > np.median(y)).astype(int)
    for name, est in [("logistic", LogisticRegression(max_iter=1000)),
                      ("svc", SVC()), ("treeclassifier", DecisionTreeClassifier(max_depth=3)),
                      ("forestclassifier", RandomForestClassifier(n_estimators=3, max_depth=3)),
                      ("gbclassifier", GradientBoostingClassifier(n_estimators=3))]:
        est.fit(x, cls_y)
        refused.append({"name": name, "file": write("refused_" + name, joblib_bytes(est)),
                        "needle": type(est).__name__ + " is a classifier"})
    refused.append({"name": "custom", "file": write("refused_custom",
                                                    joblib_bytes(CustomRegressor())),
                    "needle": "class __main__.CustomRegressor is not allowed"})

    generator = {"sklearn": sklearn.__version__, "numpy": np.__version__,
                 "joblib": joblib.__version__}
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump({"generator": generator, "models": models, "refused": refused,
                   "boosters": boosters}, f)


if __name__ == "__main__":
    main()
