// SPDX-License-Identifier: Apache-2.0
// scikit-learn estimators read from joblib files or plain pickles (KEPLER.md section 6), as
// the stages of models/stages.h. One file per estimator family (models/sklearn_linear.cpp,
// _trees, _neighbors, _svm, _preprocessing, _pipeline, _xgboost) behind the table of
// sklearn_model.cpp; no exception leaves this header's functions. The file is parsed by
// the restricted reader of models/pickle.h (it runs nothing and resolves only the classes
// listed by sklearn_classes()); the families turn the resulting values into plain C++
// evaluators that reproduce scikit-learn's predict / transform in double precision.
//
// Transforms (fe_files):
//   MaxAbsScaler        x / scale_                    (a zero scale counts as 1, as sklearn)
//   StandardScaler      (x - mean_) / scale_          (each step only if with_mean/with_std)
//   MinMaxScaler        x * scale_ + min_             (then clipped to feature_range if clip)
//   PolynomialFeatures  sklearn's column order: [1,] then for each degree d, the index
//                       combinations (with replacement unless interaction_only) in
//                       lexicographic order, e.g. 1, x0, x1, x0^2, x0 x1, x1^2.
// Regressors (model files):
//   LinearRegression, Ridge, RidgeCV, Lasso, LassoCV, ElasticNet, ElasticNetCV,
//       SGDRegressor, LinearSVR: x . coef_ + intercept_ (coef_ of shape (n,) or (k, n):
//       k outputs).
//   DecisionTreeRegressor: the value of the leaf a row reaches (n_outputs_ values). A node
//       sends a row left when double(float(x[feature])) <= threshold: sklearn casts X to
//       float32 and compares it with the float64 threshold (so a value equal to a
//       threshold in double can go right once rounded to float32). NaN goes right, or
//       where the node's missing_go_to_left says (the node dtype of scikit-learn >= 1.3).
//   RandomForestRegressor, ExtraTreesRegressor: the trees' leaves summed in order, then
//       divided by the tree count, as sklearn averages.
//   GradientBoostingRegressor: init (DummyRegressor constant_, or 0 for init='zero') plus,
//       tree after tree, learning_rate * leaf value, with the same comparison.
//   KNeighborsRegressor: mean (weights='uniform') or 1/distance-weighted mean
//       (weights='distance'; rows at distance 0 take all the weight) of the k nearest
//       training targets, euclidean or manhattan metric. Which of several equidistant
//       neighbours count follows sklearn exactly for models fitted with a KD tree (every
//       Kepler model: algorithm 'auto' picks kd_tree below 16 features): the query replays
//       sklearn's depth-first KD-tree search over the pickled tree (node order, pruning
//       and its bounded max-heap, which rejects a candidate equal to the current k-th
//       distance). For 'brute' and 'ball_tree' models the training rows are scanned in
//       index order through the same heap; sklearn's brute path computes euclidean
//       distances with a different formula, so a tie decided by the last bit may differ.
//   SVR: sum_i _dual_coef_[i] K(sv_i, x) + _intercept_, kernels linear, rbf, poly and
//       sigmoid with the fitted _gamma, coef0 and degree.
//   xgboost.sklearn.XGBRegressor: its _Booster's state keeps the model as XGBoost's own
//       serialisation (a bytearray "handle" of UBJSON), read by models/xgboost_ubjson.h.
// Composites:
//   Pipeline: the steps in order, None and "passthrough" steps skipped; each step a
//       supported transform, the last one may be a regressor (then the whole is a regressor;
//       a single remaining step is that step). Kepler v0.6's SVRRegressorTrainer zips hold
//       Pipeline([("nonetype", None), ("svr", SVR)]).
//   Kepler's trainer.curvefit.CurveFitModel (model_class "curvefit"): models/curve_fit.h.
// Anything else is refused by name: a classifier (any *Classifier, LogisticRegression, SVC,
// ...) with a message saying it is one (averaging class labels is not a power), a custom
// class naming its module and name. numpy 1 and numpy 2 module names (numpy.core.*,
// numpy._core.*) and the layouts of scikit-learn 0.24 to 1.7 are read. Every array is checked for shape and finiteness; an
// object array (sklearn 1.1 kept KNeighborsRegressor._y as one) is read when every element
// is a float or an int.
#pragma once

#include <memory>
#include <span>
#include <string_view>
#include <variant>

#include "common/status.h"
#include "models/pickle.h"
#include "models/stages.h"

namespace estimator::models {

using SklearnStage = std::variant<std::unique_ptr<Transform>, std::unique_ptr<Regressor>>;

// The classes a scikit-learn joblib file may name: the supported estimators and the inert
// objects they carry (losses, trees, distance metrics, numpy random states, ...), and the
// names of Kepler's curve-fit pickles (curve_fit_classes()).
std::span<const pickle::ClassName> sklearn_classes();

// Reads one joblib pickle (`file` names it in messages) into a stage.
Result<SklearnStage> load_sklearn_pickle(std::string_view bytes, std::string_view file);

// The same from an already parsed pickle.
Result<SklearnStage> sklearn_stage(const pickle::Value& root, std::string_view file);

}  // namespace estimator::models
