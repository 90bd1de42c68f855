#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Reference predictions of a 2022-layout Kepler model folder, by scikit-learn itself.

An implementation independent of models/ for its tests (run it with Debian's
/usr/bin/python3, which has scikit-learn and numpy):

    kepler2022_reference.py FOLDER < rows

FOLDER holds metadata.json (model_class "scikit", model_file, fe_files), scaler.pkl and
the files metadata.json names, as the seed's estimator/model/<name>/ folders do. Rows are
read from standard input, one per line, comma-separated, in metadata.json's feature
order. They are rounded to float32 first: that is how the daemon receives them. Prints
one line per row: the prediction with 17 significant digits, before any clamping.

The pipeline is the 2022 estimator's: scaler.pkl (always, though no field names it),
then each fe_files entry in order, then model_file. Files are plain pickles.

A GradientBoostingRegressor pickled by scikit-learn 1.1 (no `_loss` attribute) cannot be
predicted by Debian's scikit-learn 1.2; its prediction is computed from its parts, as
scikit-learn defines it: init_.constant_ + learning_rate * sum over the trees of
tree_.predict(X as float32).
"""
import json
import os
import pickle
import sys
import warnings

import numpy as np
from sklearn.ensemble import GradientBoostingRegressor


def load(folder, name):
    with open(os.path.join(folder, name), "rb") as f:
        return pickle.load(f)


def predict(folder, x):
    with open(os.path.join(folder, "metadata.json")) as f:
        meta = json.load(f)
    z = load(folder, "scaler.pkl").transform(x)
    for name in meta.get("fe_files", []):
        z = load(folder, name).transform(z)
    model = load(folder, meta["model_file"])
    if isinstance(model, GradientBoostingRegressor) and not hasattr(model, "_loss"):
        z32 = z.astype(np.float32)
        total = np.zeros(z.shape[0])
        for tree in model.estimators_[:, 0]:
            total += tree.tree_.predict(z32).reshape(-1)
        return model.init_.constant_.reshape(-1)[0] + model.learning_rate * total
    return model.predict(z).reshape(-1)


def main(argv):
    if len(argv) != 2:
        sys.stderr.write(__doc__)
        return 2
    rows = [[float(v) for v in line.split(",")] for line in sys.stdin if line.strip()]
    x = np.asarray(rows, dtype=np.float32).astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unpickling 1.0/1.1 estimators in 1.2 warns
        y = predict(argv[1], x)
    for v in y:
        print(f"{v:.17g}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
