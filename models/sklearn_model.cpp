// SPDX-License-Identifier: Apache-2.0
// The scikit-learn loader's entry points: the names a pickle may hold and the table that
// sends each estimator class to its family's builder (models/sklearn_estimators.h).
#include "models/sklearn_model.h"

#include <algorithm>
#include <iterator>
#include <new>
#include <string>
#include <string_view>
#include <vector>

#include "models/curve_fit.h"
#include "models/sklearn_estimators.h"

namespace estimator::models {

namespace {

using pickle::Object;
using pickle::Value;

constexpr pickle::ClassName kClasses[] = {
    // Estimators and transformers (module paths of scikit-learn 1.x).
    {"sklearn.preprocessing._data", "MaxAbsScaler"},
    {"sklearn.preprocessing._data", "StandardScaler"},
    {"sklearn.preprocessing._data", "MinMaxScaler"},
    {"sklearn.preprocessing._data", "PolynomialFeatures"},  // before 1.0
    {"sklearn.preprocessing._polynomial", "PolynomialFeatures"},
    {"sklearn.linear_model._base", "LinearRegression"},
    {"sklearn.linear_model._ridge", "Ridge"},
    {"sklearn.linear_model._ridge", "RidgeCV"},
    {"sklearn.linear_model._coordinate_descent", "Lasso"},
    {"sklearn.linear_model._coordinate_descent", "LassoCV"},
    {"sklearn.linear_model._coordinate_descent", "ElasticNet"},
    {"sklearn.linear_model._coordinate_descent", "ElasticNetCV"},
    {"sklearn.linear_model._stochastic_gradient", "SGDRegressor"},
    {"sklearn.svm._classes", "LinearSVR"},
    {"sklearn.ensemble._gb", "GradientBoostingRegressor"},
    {"sklearn.ensemble._forest", "RandomForestRegressor"},
    {"sklearn.ensemble._forest", "ExtraTreesRegressor"},
    {"xgboost.sklearn", "XGBRegressor"},
    {"xgboost.core", "Booster"},
    {"sklearn.neighbors._regression", "KNeighborsRegressor"},
    {"sklearn.svm._classes", "SVR"},
    {"sklearn.pipeline", "Pipeline"},
    // Parts of GradientBoosting: its init estimator, trees and (inert) loss objects.
    {"sklearn.dummy", "DummyRegressor"},
    {"sklearn.tree._classes", "DecisionTreeRegressor"},
    {"sklearn.tree._classes", "ExtraTreeRegressor"},
    {"sklearn.tree._tree", "Tree"},
    {"sklearn.ensemble._gb_losses", "LeastSquaresError"},
    {"sklearn.ensemble._gb_losses", "LeastAbsoluteError"},
    {"sklearn.ensemble._gb_losses", "HuberLossFunction"},
    {"sklearn.ensemble._gb_losses", "QuantileLossFunction"},
    {"sklearn._loss.loss", "HalfSquaredError"},
    {"sklearn._loss.loss", "AbsoluteError"},
    {"sklearn._loss.loss", "HuberLoss"},
    {"sklearn._loss.loss", "PinballLoss"},
    {"sklearn._loss.link", "IdentityLink"},
    {"sklearn._loss.link", "Interval"},
    {"_loss", "CyHalfSquaredError"},
    {"_loss", "__pyx_unpickle_CyHalfSquaredError"},
    {"_loss", "CyAbsoluteError"},
    {"_loss", "__pyx_unpickle_CyAbsoluteError"},
    {"_loss", "CyHuberLoss"},
    {"_loss", "__pyx_unpickle_CyHuberLoss"},
    {"_loss", "CyPinballLoss"},
    {"_loss", "__pyx_unpickle_CyPinballLoss"},
    {"sklearn._loss._loss", "CyHalfSquaredError"},
    {"sklearn._loss._loss", "__pyx_unpickle_CyHalfSquaredError"},
    {"sklearn._loss._loss", "CyAbsoluteError"},
    {"sklearn._loss._loss", "__pyx_unpickle_CyAbsoluteError"},
    {"sklearn._loss._loss", "CyHuberLoss"},
    {"sklearn._loss._loss", "__pyx_unpickle_CyHuberLoss"},
    {"sklearn._loss._loss", "CyPinballLoss"},
    {"sklearn._loss._loss", "__pyx_unpickle_CyPinballLoss"},
    // Parts of KNeighbors: the fitted tree and its distance metric (inert).
    {"sklearn.neighbors._kd_tree", "KDTree"},
    {"sklearn.neighbors._kd_tree", "newObj"},
    {"sklearn.neighbors._ball_tree", "BallTree"},
    {"sklearn.neighbors._ball_tree", "newObj"},
    {"sklearn.metrics._dist_metrics", "newObj"},
    {"sklearn.metrics._dist_metrics", "EuclideanDistance"},
    {"sklearn.metrics._dist_metrics", "EuclideanDistance64"},
    {"sklearn.metrics._dist_metrics", "ManhattanDistance"},
    {"sklearn.metrics._dist_metrics", "ManhattanDistance64"},
    {"sklearn.metrics._dist_metrics", "MinkowskiDistance"},
    {"sklearn.metrics._dist_metrics", "MinkowskiDistance64"},
    {"sklearn.metrics._dist_metrics", "ChebyshevDistance"},
    {"sklearn.metrics._dist_metrics", "ChebyshevDistance64"},
    {"sklearn.neighbors._dist_metrics", "newObj"},  // scikit-learn 1.0
    {"sklearn.neighbors._dist_metrics", "EuclideanDistance"},
    {"sklearn.neighbors._dist_metrics", "ManhattanDistance"},
    {"sklearn.neighbors._dist_metrics", "MinkowskiDistance"},
    {"sklearn.neighbors._dist_metrics", "ChebyshevDistance"},
    // numpy random states that trees carry (inert).
    {"numpy.random._pickle", "__randomstate_ctor"},
    {"numpy.random._pickle", "__bit_generator_ctor"},
    {"numpy.random._pickle", "__generator_ctor"},
    {"numpy.random", "__RandomState_ctor"},
    {"numpy.random._mt19937", "MT19937"},
    {"numpy.random.bit_generator", "SeedSequence"},
    {"numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"},
};

struct Entry {
  std::string_view name;
  sklearn::Builder build;
};

// The table: a class name (whatever module defines it) and its builder.
constexpr Entry kBuilders[] = {
    {"MaxAbsScaler", sklearn::build_max_abs_scaler},
    {"StandardScaler", sklearn::build_standard_scaler},
    {"MinMaxScaler", sklearn::build_min_max_scaler},
    {"PolynomialFeatures", sklearn::build_polynomial_features},
    {"LinearRegression", sklearn::build_linear},
    {"Ridge", sklearn::build_linear},
    {"RidgeCV", sklearn::build_linear},
    {"Lasso", sklearn::build_linear},
    {"LassoCV", sklearn::build_linear},
    {"ElasticNet", sklearn::build_linear},
    {"ElasticNetCV", sklearn::build_linear},
    {"SGDRegressor", sklearn::build_linear},
    {"LinearSVR", sklearn::build_linear},
    {"DecisionTreeRegressor", sklearn::build_decision_tree},
    {"RandomForestRegressor", sklearn::build_forest},
    {"ExtraTreesRegressor", sklearn::build_forest},
    {"GradientBoostingRegressor", sklearn::build_gradient_boosting},
    {"XGBRegressor", sklearn::build_xgb_regressor},
    {"KNeighborsRegressor", sklearn::build_k_neighbors},
    {"SVR", sklearn::build_svr},
    {"Pipeline", sklearn::build_pipeline},
};

// Names of classifiers that do not end in "Classifier".
constexpr std::string_view kOtherClassifiers[] = {
    "LogisticRegression", "LogisticRegressionCV", "SVC", "NuSVC", "LinearSVC",
    "Perceptron", "GaussianNB", "MultinomialNB", "BernoulliNB", "ComplementNB",
    "CategoricalNB", "LinearDiscriminantAnalysis", "QuadraticDiscriminantAnalysis",
    "RidgeClassifierCV", "OneVsRestClassifier", "OneVsOneClassifier"};

bool is_classifier(std::string_view name) {
  constexpr std::string_view kSuffix = "Classifier";
  if (name.size() >= kSuffix.size() && name.substr(name.size() - kSuffix.size()) == kSuffix)
    return true;
  return std::find(std::begin(kOtherClassifiers), std::end(kOtherClassifiers), name) !=
         std::end(kOtherClassifiers);
}

// Why a name the pickle reader refused is not supported, for the user who saved it.
std::string refusal_note(std::string_view module, std::string_view name) {
  if (is_classifier(name)) {
    return ": " + std::string(name) +
           " is a classifier; it predicts class labels, and averaging class labels is not a "
           "power (use a regressor)";
  }
  if (module == "__main__" || (module.substr(0, 8) != "sklearn." && module.substr(0, 6) != "numpy." &&
                               module.substr(0, 8) != "xgboost.")) {
    return ": a custom or third-party class; only the scikit-learn and XGBoost regressors "
           "listed in docs/models.md are read, and no class of a pickle is ever run";
  }
  return ": not one of the supported scikit-learn regressors (docs/models.md) or of their "
         "parts";
}

Result<SklearnStage> build_curve_fit(const sklearn::Attrs& a, int) {
  Result<std::unique_ptr<Regressor>> r = load_curve_fit(a.object());
  if (!r.ok()) return r.status();
  return SklearnStage(std::move(r).value());
}

}  // namespace

namespace sklearn {

Result<SklearnStage> convert_estimator(const Value& root, int depth) {
  const Object* o = root.as<Object>();
  if (o == nullptr) {
    return refuse("the pickle holds " + pickle::describe(root) +
                  ", not a scikit-learn estimator");
  }
  const Attrs a(*o);
  if (o->state == nullptr) return refuse(o->qualified() + " has no state");
  if (o->name == "CurveFitModel") return build_curve_fit(a, depth);
  for (const Entry& e : kBuilders) {
    if (e.name == o->name) return e.build(a, depth);
  }
  return refuse("scikit-learn estimator " + o->qualified() + " is not supported");
}

}  // namespace sklearn

std::span<const pickle::ClassName> sklearn_classes() {
  static const std::vector<pickle::ClassName> kAll = [] {
    std::vector<pickle::ClassName> all(std::begin(kClasses), std::end(kClasses));
    const std::span<const pickle::ClassName> curves = curve_fit_classes();
    all.insert(all.end(), curves.begin(), curves.end());
    return all;
  }();
  return kAll;
}

Result<SklearnStage> sklearn_stage(const pickle::Value& root, std::string_view file) {
  Result<SklearnStage> stage = [&]() -> Result<SklearnStage> {
    try {
      return sklearn::convert_estimator(root, 0);
    } catch (const std::bad_alloc&) {
      return Status(Code::kResourceExhausted, "out of memory building the model");
    }
  }();
  if (!stage.ok()) {
    return Status(stage.status().code(),
                  std::string(file) + ": " + stage.status().message());
  }
  return stage;
}

Result<SklearnStage> load_sklearn_pickle(std::string_view bytes, std::string_view file) {
  pickle::Options options;
  options.allowed = sklearn_classes();
  options.refusal_note = refusal_note;
  Result<std::unique_ptr<pickle::Document>> doc = pickle::read_pickle(bytes, file, options);
  if (!doc.ok()) return doc.status();
  return sklearn_stage((*doc)->root(), file);
}

}  // namespace estimator::models
