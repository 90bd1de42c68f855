#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Writes the scikit-learn and XGBoost pickles of the model conformance suite
(tests/models/conformance_test.cpp) that the older fixtures do not cover: the regressors
of issue 18 (regularised linear models, LinearSVR, a tree, two forests, XGBRegressor).

    /usr/bin/python3 tools/gen_conformance_fixtures.py tests/models/fixtures/sklearn_more

The suite checks properties (batch independence, strides, no allocation, NaN and
infinity, the clamp at 0, concurrency), not values: the values are checked against
scikit-learn's and XGBoost's own predict() by sklearn_regressors_test. Files are joblib
(compress=0), five features f0..f4 drawn from [0, 100], small so that they stay in git.
"""
import os
import sys

import joblib
import numpy as np
from sklearn.ensemble import ExtraTreesRegressor, RandomForestRegressor
from sklearn.linear_model import ElasticNet, ElasticNetCV, LassoCV, RidgeCV
from sklearn.svm import LinearSVR
from sklearn.tree import DecisionTreeRegressor


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(18)
    x = rng.uniform(0, 100, size=(200, 5))
    # Negative weights: predictions below 0 occur inside the input range, so the clamp
    # is exercised.
    y = x @ np.array([2.0, -3.0, 1.0, 0.5, -1.0]) + 10 + rng.normal(0, 1, 200)
    models = {
        "ridgecv": RidgeCV(alphas=(0.1, 1.0, 10.0)),
        "lassocv": LassoCV(cv=3, random_state=0),
        "elasticnet": ElasticNet(alpha=0.5, l1_ratio=0.3),
        "elasticnetcv": ElasticNetCV(cv=3, l1_ratio=(0.2, 0.8), random_state=0),
        "linearsvr": LinearSVR(C=1.0, max_iter=20000, random_state=0),
        "tree": DecisionTreeRegressor(max_depth=5, random_state=0),
        "forest": RandomForestRegressor(n_estimators=4, max_depth=4, random_state=0),
        "extratrees": ExtraTreesRegressor(n_estimators=4, max_depth=4, random_state=0),
    }
    try:
        import xgboost
        models["xgbregressor"] = xgboost.XGBRegressor(n_estimators=5, max_depth=3)
    except ImportError:
        print("no xgboost: xgbregressor.pkl not written", file=sys.stderr)
    for name, model in models.items():
        model.fit(x, y)
        joblib.dump(model, os.path.join(out, name + ".pkl"), compress=0)


if __name__ == "__main__":
    main()
