#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Python's xgboost on the request the XGBoost anchor times (docs/benchmarks.md, "XGBoost
evaluation"): what kepler-model-server's estimator spends per request evaluating
XgboostFitTrainer_1, without its JSON decoding and DataFrame work, so a lower bound on it.

Per call: the model's MaxAbsScaler division, one DMatrix, Booster.predict for each of the 4
components, nthread=1. Inputs are the raw float32 matrices `project_predict --write-inputs`
writes (in_1.f32, in_100.f32, in_1000.f32; 5 columns).

    /usr/bin/python3 bench/python_xgboost.py MODEL_DIR INPUT_DIR [--seconds 2]

MODEL_DIR is the unzipped XgboostFitTrainer_1.zip (package.json, core.json, uncore.json,
dram.json). Needs Debian's python3-xgboost and python3-numpy.
"""
import argparse
import time

import numpy as np
import xgboost as xgb

# XgboostFitTrainer_1's scaler.pkl scale_ (the anchor's README passes the same to xgb_predict).
SCALE = np.array([1, 71901.33333333333, 3337.333333333333, 3.3333333333333335, 1])
COMPONENTS = ("package", "core", "uncore", "dram")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("input_dir")
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    boosters = []
    for c in COMPONENTS:
        b = xgb.Booster(params={"nthread": 1})
        b.load_model(f"{args.model_dir}/{c}.json")
        boosters.append(b)
    print("# python xgboost %s, 4 boosters, nthread=1" % xgb.__version__)
    print("# rows   calls   p10_us   p50_us   cpu_us  first outputs")
    for rows in (1, 100, 1000):
        x = np.fromfile(f"{args.input_dir}/in_{rows}.f32", dtype=np.float32).reshape(rows, 5)

        def call():
            d = xgb.DMatrix(x / SCALE, nthread=1)
            return [b.predict(d) for b in boosters]

        for _ in range(20):
            call()
        times = []
        cpu0 = time.process_time()
        end = time.perf_counter() + args.seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            out = call()
            times.append(time.perf_counter() - t0)
        cpu = (time.process_time() - cpu0) / len(times)
        times.sort()
        first = " ".join("%g" % o[0] for o in out)
        print("%6d %7d %8.1f %8.1f %8.1f  %s" % (rows, len(times), times[len(times) // 10] * 1e6,
                                                 times[len(times) // 2] * 1e6, cpu * 1e6, first))


if __name__ == "__main__":
    main()
