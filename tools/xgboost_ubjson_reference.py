#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Writes XGBoost models in the three forms xgboost 1.7 produces and the project reads, with
the library's predictions, for tests/models/xgboost_ubjson_test.cpp (run at test time with
Debian's python3-xgboost: /usr/bin/python3 tools/xgboost_ubjson_reference.py OUT_DIR).

For each case <name> (a small XGBRegressor, trained on seeded data with missing values):
  <name>.ubj      Booster.save_model("<name>.ubj"): UBJSON, typed arrays
  <name>.json     Booster.save_model("<name>.json"): the same model as JSON text
  <name>.handle   the bytes a pickle of the regressor holds
                  (XGBRegressor.__getstate__()["_Booster"].__getstate__()["handle"]):
                  the serialised booster {"Config": ..., "Model": ...} in UBJSON
  <name>.rows.json {"rows": [[...]], "expected": [...]}: rows (null = NaN, a missing value)
                  and Booster.predict's outputs for them.
Prints the case names, one a line."""
import json
import os
import sys

import numpy as np
import xgboost as xgb

FEATURES = 4


def data(rng, rows):
    x = rng.uniform(0.0, 1.0, size=(rows, FEATURES)).astype(np.float32)
    x[:, 2] *= 1000.0
    y = 60.0 + 70.0 * x[:, 0] + 25.0 * np.sin(5.0 * x[:, 1]) + 0.03 * x[:, 2] + 4.0 * x[:, 3]
    y += rng.normal(0.0, 1.5, size=rows)
    x[rng.uniform(size=x.shape) < 0.1] = np.nan
    return x, y


CASES = {
    # Few trees: Booster.predict sums in float32, so a long sum would differ from ours
    # (double) by more than the 1e-6 the test asks.
    "squared_d4": dict(n_estimators=12, max_depth=4, objective="reg:squarederror"),
    "logistic_d3": dict(n_estimators=8, max_depth=3, objective="reg:logistic"),
    "dart_d3": dict(n_estimators=8, max_depth=3, booster="dart", rate_drop=0.2,
                    objective="reg:squarederror"),
}


def main(out):
    os.makedirs(out, exist_ok=True)
    for i, (name, params) in enumerate(CASES.items()):
        rng = np.random.default_rng(1000 + i)
        x, y = data(rng, 400)
        if params["objective"] == "reg:logistic":
            y = (y - y.min()) / (y.max() - y.min())
        reg = xgb.XGBRegressor(random_state=7, n_jobs=1, **params).fit(x, y)
        booster = reg.get_booster()
        booster.save_model(os.path.join(out, name + ".ubj"))
        booster.save_model(os.path.join(out, name + ".json"))
        handle = reg.__getstate__()["_Booster"].__getstate__()["handle"]
        with open(os.path.join(out, name + ".handle"), "wb") as f:
            f.write(bytes(handle))
        rows, _ = data(np.random.default_rng(2000 + i), 200)
        rows[:3] = np.nan  # all missing: every default direction
        expected = booster.predict(xgb.DMatrix(rows, missing=np.nan))
        with open(os.path.join(out, name + ".rows.json"), "w") as f:
            json.dump({"rows": [[None if np.isnan(v) else float(v) for v in r] for r in rows],
                       "expected": [float(v) for v in expected]}, f)
        print(name)


if __name__ == "__main__":
    main(sys.argv[1])
