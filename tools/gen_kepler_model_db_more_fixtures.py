#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Writes the small pickles tests/models/kepler_model_db_more_test.cpp reads: variants of
the three kinds of Kepler zips issue 18 item 1 adds (object-array targets, Pipelines,
curve-fit models), accepted ones with reference outputs and refused ones. Run from the
repository root with Debian's /usr/bin/python3 (scikit-learn, joblib, numpy):

    /usr/bin/python3 tools/gen_kepler_model_db_more_fixtures.py

Output, in tests/models/fixtures/kepler_model_db_more/: <name>.pkl (joblib.dump,
compress=0, protocol 4) and manifest.json {"generator": {versions}, "rows": [[...]],
"accepted": [{"file", "expected": [...]}], "refused": [{"file", "message"}]}, where
"message" is a part the refusal must contain. Expected values come from scikit-learn's
predict(), or, for the curve fits, from the trainer's formula evaluated with numpy here.

The curve-fit pickles name kepler-model-server's classes and functions without importing
them: stand-ins are registered under those module names (sys.modules) for pickle to find,
and joblib writes their names only.
"""
import json
import os
import sys
import types
import warnings

import joblib
import numpy as np
import sklearn
from sklearn.decomposition import PCA
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MaxAbsScaler, PolynomialFeatures, StandardScaler
from sklearn.svm import SVR

OUT = os.path.join("tests", "models", "fixtures", "kepler_model_db_more")

rng = np.random.default_rng(18)
X = rng.uniform(0, 100, size=(60, 3))
Y = 20 + X @ np.array([0.5, 1.5, -0.2]) + 0.01 * X[:, 0] * X[:, 1]
ROWS = np.vstack([X[:4], [[0, 0, 0], [100, 100, 100], [150, -20, 300], [37.5, 62.25, 12.125]]])


def dump(name, obj):
    joblib.dump(obj, os.path.join(OUT, name + ".pkl"), compress=0, protocol=4)
    return name + ".pkl"


def module(name):
    """A stand-in module registered under `name` (and its parents, which pickle imports
    first), so that pickle can name its members."""
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    return sys.modules[name]


def stand_in_function(module_name, name):
    def f(*args):
        raise RuntimeError("a stand-in: never called")

    f.__module__ = module_name
    f.__name__ = f.__qualname__ = name
    setattr(sys.modules.get(module_name) or module(module_name), name, f)
    return f


def curve_fit_model(prefix, fit_func, popt, feature_index, p0_func=None):
    cls_module = prefix + "curvefit"
    m = sys.modules.get(cls_module) or module(cls_module)
    if not hasattr(m, "CurveFitModel"):
        cls = type("CurveFitModel", (), {"__module__": cls_module})
        m.CurveFitModel = cls
    o = m.CurveFitModel()
    o.fit_func = fit_func
    o.popt = np.asarray(popt, dtype=np.float64)
    o.pcov = np.full((len(popt), len(popt)), np.inf)
    o.feature_index = feature_index
    o.p0_func = p0_func
    return o


def main():
    os.makedirs(OUT, exist_ok=True)
    accepted, refused = [], []

    # KNeighborsRegressor with _y an object array (scikit-learn 1.1 fitted on a list).
    knn = KNeighborsRegressor(n_neighbors=3).fit(X, Y)
    mixed = knn._y.astype(object)
    mixed[::2] = [int(round(v)) for v in mixed[::2]]  # Python ints and floats
    knn._y = mixed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = np.asarray(knn.predict(ROWS), dtype=np.float64)
    accepted.append({"file": dump("knn_object_y", knn), "expected": expected.tolist()})
    bad = knn._y.copy()
    bad[5] = "93.9"
    knn._y = bad
    refused.append({"file": dump("knn_object_y_str", knn), "message": "element 5 is str '93.9'"})

    # Pipelines: skipped steps, several transforms, and refusals.
    pipe = Pipeline([("scale", StandardScaler()), ("skip", "passthrough"),
                     ("poly", PolynomialFeatures(2)), ("none", None), ("ridge", Ridge(alpha=0.5))])
    pipe.fit(X, Y)
    accepted.append({"file": dump("pipeline_chain", pipe), "expected": pipe.predict(ROWS).tolist()})
    svr = Pipeline([("nonetype", None), ("svr", SVR(epsilon=0.2))]).fit(X, Y)
    accepted.append({"file": dump("pipeline_none_svr", svr), "expected": svr.predict(ROWS).tolist()})
    pca = Pipeline([("scale", MaxAbsScaler()), ("pca", PCA(n_components=2)), ("lr", LinearRegression())]).fit(X, Y)
    refused.append({"file": dump("pipeline_pca", pca), "message": "sklearn.decomposition._pca.PCA"})
    wrong = Pipeline([("lr", LinearRegression().fit(X, Y)), ("scale", MaxAbsScaler().fit(X))])
    refused.append({"file": dump("pipeline_regressor_first", wrong),
                    "message": "Pipeline step 'scale' follows the regressor of step 'lr'"})

    # Curve fits (the trainers' formulas, kepler-model-server train/trainer/*/main.py).
    curves = {
        "expo_func": lambda x, a, b, c: a * np.exp(b * x) + c,
        "log_func": lambda x, a, b, c: a * np.log(b * x + 1) + c,
        "logi_func": lambda x, A, x0, k, off: A / (1 + np.exp(-k * (x - x0))) + off,
    }
    cases = [
        ("kepler_model.train.trainer.", "ExponentialRegressionTrainer", "expo_func", [3.5, 0.02, 10.0], 1),
        ("train.trainer.", "LogarithmicRegressionTrainer", "log_func", [40.0, 0.3, -5.0], 0),
        ("kepler_model.train.trainer.", "LogisticRegressionTrainer", "logi_func", [80.0, 50.0, 0.08, 12.0], 2),
    ]
    for prefix, trainer, function, popt, column in cases:
        mod = prefix + trainer + ".main"
        f = stand_in_function(mod, function)
        p0 = stand_in_function(mod, "p0_func")
        model = curve_fit_model(prefix, f, popt, column, p0)
        y = curves[function](ROWS[:, column], *popt)
        accepted.append({"file": dump("curvefit_" + function, model), "expected": y.tolist()})
    unknown = stand_in_function("train.trainer.PowerRegressionTrainer.main", "pow_func")
    refused.append({"file": dump("curvefit_unknown_function", curve_fit_model("train.trainer.", unknown, [1.0, 2.0, 3.0], 0)),
                    "message": "train.trainer.PowerRegressionTrainer.main.pow_func"})
    p0 = sys.modules["train.trainer.LogarithmicRegressionTrainer.main"].p0_func
    refused.append({"file": dump("curvefit_p0_as_curve", curve_fit_model("train.trainer.", p0, [1.0, 2.0, 3.0], 0)),
                    "message": "train.trainer.LogarithmicRegressionTrainer.main.p0_func is not a curve"})
    log = sys.modules["train.trainer.LogarithmicRegressionTrainer.main"].log_func
    refused.append({"file": dump("curvefit_four_parameters", curve_fit_model("train.trainer.", log, [1.0, 2.0, 3.0, 4.0], 0)),
                    "message": "needs 3 parameters"})

    manifest = {
        "generator": {"python": sys.version.split()[0], "numpy": np.__version__,
                      "sklearn": sklearn.__version__, "joblib": joblib.__version__},
        "rows": ROWS.tolist(),
        "accepted": accepted,
        "refused": refused,
    }
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
