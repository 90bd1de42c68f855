#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Reference predictions of a kepler-model-db zip, independent of models/.

Run with Debian's /usr/bin/python3 (scikit-learn, joblib and numpy):

    kepler_model_db_more_reference.py ZIP < rows

ZIP is one of Kepler's published model zips: metadata.json, the component map
metadata["model_file"] ({"package": {"model_file": ..., "features": [...], "fe_files":
[...]}, ...}) and the files it names. Rows are read from standard input, one per line,
comma-separated, in the component map's feature order (the same for every component), and
rounded to float32 first: that is how the daemon receives them.

Prints one JSON document:
    {"components": {name: [prediction per row, before clamping]}, "weight_json": ...}

model_class "scikit": each component is fe_files' transform() in order, then
model_file's predict(), all by scikit-learn itself (joblib.load).

model_class "curvefit": the component pickles are kepler-model-server's
trainer.curvefit.CurveFitModel. They are never unpickled with the trainer's code: a
restricted unpickler maps CurveFitModel to a plain record and the trainer's functions to
their qualified names, and refuses every other name outside numpy and joblib. The curve is
then evaluated here with numpy, as the trainer defines it (kepler-model-server
train/trainer/<Trainer>/main.py: expo_func, log_func, logi_func) on column feature_index of
the rows after the fe_files (scikit-learn's transform). "weight_json" is the weight-JSON
form of the same model, as CurveFitTrainer.get_weight_dict writes it (the scaler's scale_
per feature, CurveFit_Weights = popt), and "feature_index" gives each component's column;
for scikit zips both are null.
"""
import io
import json
import pickle
import sys
import warnings
import zipfile

import joblib
import numpy as np
from joblib.numpy_pickle import NumpyUnpickler

CURVES = {
    "expo_func": lambda x, a, b, c: a * np.exp(b * x) + c,
    "log_func": lambda x, a, b, c: a * np.log(b * x + 1) + c,
    "logi_func": lambda x, A, x0, k, off: A / (1 + np.exp(-k * (x - x0))) + off,
}


class CurveFitRecord:
    """Stands in for trainer.curvefit.CurveFitModel: keeps the pickled state, nothing else."""

    def __setstate__(self, state):
        self.__dict__.update(state)


class FunctionName(str):
    """A trainer function, kept as its qualified name only."""


class RestrictedUnpickler(NumpyUnpickler):
    def find_class(self, module, name):
        if module.split(".")[0] in ("numpy", "joblib"):
            return super().find_class(module, name)
        if name == "CurveFitModel" and module.endswith("curvefit"):
            return CurveFitRecord
        if module.endswith(".main") and name in (*CURVES, "p0_func"):
            return FunctionName(module + "." + name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed")


def restricted_load(data, name):
    return RestrictedUnpickler(name, io.BytesIO(data)).load()


def sklearn_load(data):
    return joblib.load(io.BytesIO(data))


def transform(x, fe_objects):
    for fe in fe_objects:
        x = fe.transform(x)
    return x


def main(argv):
    if len(argv) != 2:
        sys.stderr.write(__doc__)
        return 2
    with zipfile.ZipFile(argv[1]) as z:
        files = {n: z.read(n) for n in z.namelist()}
    meta = json.loads(files["metadata.json"])
    cmap = json.loads(files[meta["model_file"]])
    rows = [[float(v) for v in line.split(",")] for line in sys.stdin if line.strip()]
    x = np.asarray(rows, dtype=np.float32).astype(np.float64)

    out = {"components": {}, "weight_json": None, "feature_index": None}
    curvefit = meta["model_class"] == "curvefit"
    if curvefit:
        out["weight_json"] = {}
        out["feature_index"] = {}
    features = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unpickling 1.1 estimators in 1.2 warns
        for comp, entry in cmap.items():
            if features is None:
                features = entry["features"]
            assert entry["features"] == features, "components differ in features"
            fe = [sklearn_load(files[f]) for f in entry["fe_files"]]
            z = transform(x, fe)
            data = files[entry["model_file"]]
            if not curvefit:
                out["components"][comp] = sklearn_load(data).predict(z).reshape(-1).tolist()
                continue
            model = restricted_load(data, entry["model_file"])
            function = model.fit_func.rsplit(".", 1)[1]
            popt = [float(p) for p in model.popt]
            column = int(model.feature_index)
            y = CURVES[function](z[:, column], *popt)
            out["components"][comp] = np.asarray(y, dtype=np.float64).tolist()
            out["feature_index"][comp] = column
            scale = fe[0].scale_  # the MaxAbsScaler CurveFitTrainer writes
            out["weight_json"][comp] = {
                "All_Weights": {
                    "Categorical_Variables": {},
                    "Numerical_Variables": {f: {"scale": float(scale[i])} for i, f in enumerate(features)},
                    "CurveFit_Weights": popt,
                }
            }
    json.dump(out, sys.stdout, allow_nan=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
