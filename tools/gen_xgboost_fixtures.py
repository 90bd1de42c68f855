#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Writes the small XGBoost models tests/models/xgboost_test.cpp reads, with reference
predictions made by the Python booster. Run from the repository root with Debian's
python3-xgboost (the pyenv python3 has no numpy): /usr/bin/python3 tools/gen_xgboost_fixtures.py

Each <name>.json is a model saved by Booster.save_model; <name>.rows.json next to it holds
{"model": "<name>.json", "rows": [[...]], "expected": [...]}: rows of 5 features where
null is a missing value (NaN), and the booster's predictions for them. Rows mix random
values, NaN, and values exactly equal to a split threshold of the model (and the floats
just below and above it), so the strict float32 `x < threshold` and default_left are both
exercised. Everything is seeded: rerunning gives the same files for the same xgboost."""
import json
import os

import numpy as np
import xgboost as xgb

OUT = "tests/models/fixtures/xgboost"
FEATURES = 5


def training_data(rng, rows, nan_fraction):
    # Features of different magnitudes (like per-second counter rates after a scaler, and
    # raw ones), a target mixing them non-linearly; some values missing so that
    # default_left is learnt both ways.
    x = rng.uniform(0.0, 1.0, size=(rows, FEATURES)).astype(np.float32)
    x[:, 3] *= 1000.0
    x[:, 4] = np.round(x[:, 4] * 4.0)  # few distinct values: ties on thresholds
    y = 50.0 + 80.0 * x[:, 1] + 30.0 * np.sin(6.0 * x[:, 0]) + 0.02 * x[:, 3] + 5.0 * x[:, 4]
    y += rng.normal(0.0, 2.0, size=rows)
    mask = rng.uniform(size=x.shape) < nan_fraction
    x[mask] = np.nan
    return x, y


def thresholds_by_feature(model_json):
    by_feature = {f: set() for f in range(FEATURES)}
    trees = model_json["learner"]["gradient_booster"]
    trees = trees["gbtree"]["model"]["trees"] if trees["name"] == "dart" else trees["model"]["trees"]
    for tree in trees:
        for left, feature, cond in zip(tree["left_children"], tree["split_indices"],
                                       tree["split_conditions"]):
            if left != -1:
                by_feature[feature].add(float(np.float32(cond)))
    return {f: sorted(v) for f, v in by_feature.items()}


def probe_rows(rng, model_json, count):
    thresholds = thresholds_by_feature(model_json)
    rows = np.empty((count, FEATURES), dtype=np.float32)
    for r in range(count):
        for f in range(FEATURES):
            kind = rng.integers(0, 6)
            ts = thresholds[f]
            if kind == 0:
                rows[r, f] = np.nan
            elif kind in (1, 2, 3) and ts:
                t = np.float32(ts[rng.integers(0, len(ts))])
                if kind == 2:
                    t = np.nextafter(t, np.float32(-np.inf))
                elif kind == 3:
                    t = np.nextafter(t, np.float32(np.inf))
                rows[r, f] = t
            else:
                rows[r, f] = rng.uniform(0.0, 1.0) * (1000.0 if f == 3 else 1.0)
    return rows


def write(name, booster, rng, probes):
    path = f"{OUT}/{name}.json"
    booster.save_model(path)
    with open(path) as f:
        model_json = json.load(f)
    rows = probe_rows(rng, model_json, probes)
    expected = booster.predict(xgb.DMatrix(rows, missing=np.nan))
    doc = {
        "model": f"{name}.json",
        "generator": f"tools/gen_xgboost_fixtures.py, xgboost {xgb.__version__}",
        "rows": [[None if np.isnan(v) else float(v) for v in row] for row in rows],
        "expected": [float(v) for v in expected],
    }
    with open(f"{OUT}/{name}.rows.json", "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"{path}: {os.path.getsize(path)} bytes, {probes} probe rows")


def train(params, x, y, rounds):
    base = {"tree_method": "exact", "nthread": 1, "seed": 7, "eta": 0.3}
    base.update(params)
    return xgb.train(base, xgb.DMatrix(x, label=y, missing=np.nan), num_boost_round=rounds)


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20251128)

    # Shallow and many trees, an explicit base_score that is not a round float.
    x, y = training_data(rng, 400, 0.15)
    write("squared_d3", train({"objective": "reg:squarederror", "max_depth": 3,
                               "base_score": 97.3}, x, y, 12), rng, 40)

    # Deeper trees, more missing values.
    x, y = training_data(rng, 400, 0.3)
    write("squared_d5", train({"objective": "reg:squarederror", "max_depth": 5}, x, y, 10),
          rng, 40)

    # DART booster: every tree is scaled by its weight_drop at prediction.
    x, y = training_data(rng, 300, 0.15)
    write("dart_d4", train({"objective": "reg:squarederror", "booster": "dart", "max_depth": 4,
                            "rate_drop": 0.3, "skip_drop": 0.0, "base_score": 100.0},
                           x, y, 10), rng, 30)

    # reg:logistic: the margin (logit(base_score) + sum of leaves) goes through a sigmoid.
    x, y = training_data(rng, 300, 0.15)
    y = (y - y.min()) / (y.max() - y.min())
    write("logistic_d3", train({"objective": "reg:logistic", "max_depth": 3,
                                "base_score": 0.4}, x, y, 10), rng, 30)


if __name__ == "__main__":
    main()
