// SPDX-License-Identifier: Apache-2.0
#include "models/sklearn_model.h"
#include "models/curve_fit.h"
#include "models/shape_text.h"
#include "models/tree_walk.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace estimator::models {

namespace {

using pickle::Array;
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
    {"sklearn.linear_model._coordinate_descent", "Lasso"},
    {"sklearn.linear_model._stochastic_gradient", "SGDRegressor"},
    {"sklearn.ensemble._gb", "GradientBoostingRegressor"},
    {"sklearn.neighbors._regression", "KNeighborsRegressor"},
    {"sklearn.svm._classes", "SVR"},
    {"sklearn.pipeline", "Pipeline"},
    // Parts of GradientBoosting: its init estimator, trees and (inert) loss objects.
    {"sklearn.dummy", "DummyRegressor"},
    {"sklearn.tree._classes", "DecisionTreeRegressor"},
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

// Thrown inside this file only; load_sklearn_pickle turns it into a Status.
struct LoadError {
  std::string message;
};

[[noreturn]] void refuse(std::string message) { throw LoadError{std::move(message)}; }

// ---- reading values -----------------------------------------------------------------

// One estimator's attributes, with messages naming the class and the attribute.
class Attrs {
 public:
  explicit Attrs(const Object& o) : o_(o) {}
  const Object& object() const { return o_; }
  std::string where(std::string_view key) const { return o_.name + "." + std::string(key); }

  const Value* find(std::string_view key) const { return o_.attr(key); }

  const Value& need(std::string_view key) const {
    const Value* v = o_.attr(key);
    if (v == nullptr) {
      refuse(o_.name + " has no attribute '" + std::string(key) + "' (is it fitted?)");
    }
    return *v;
  }

  double number(std::string_view key) const { return number_of(need(key), where(key)); }
  std::int64_t integer(std::string_view key) const { return integer_of(need(key), where(key)); }

  bool flag(std::string_view key, bool fallback) const {
    const Value* v = find(key);
    if (v == nullptr) return fallback;
    const std::optional<bool> b = pickle::as_bool(*v);
    if (!b) refuse(where(key) + " must be a bool, got " + pickle::describe(*v));
    return *b;
  }

  std::string text(std::string_view key) const {
    const std::optional<std::string_view> s = pickle::as_str(need(key));
    if (!s) refuse(where(key) + " must be a str, got " + pickle::describe(need(key)));
    return std::string(*s);
  }

  static double number_of(const Value& v, const std::string& what) {
    std::optional<double> d = pickle::as_number(v);
    if (!d) {  // a one-element array counts as a number (intercept_ of shape (1,))
      if (const Array* a = v.as<Array>(); a != nullptr && a->built && a->count() == 1) {
        Result<std::vector<double>> e = pickle::array_doubles(*a, what);
        if (e.ok()) d = (*e)[0];
      }
    }
    if (!d) refuse(what + " must be a number, got " + pickle::describe(v));
    if (!std::isfinite(*d)) refuse(what + " is not finite");
    return *d;
  }

  static std::int64_t integer_of(const Value& v, const std::string& what) {
    const std::optional<std::int64_t> i = pickle::as_int(v);
    if (!i) refuse(what + " must be an int, got " + pickle::describe(v));
    return *i;
  }

 private:
  const Object& o_;
};

// A numeric array with its shape, values in C order.
struct Tensor {
  std::vector<std::int64_t> shape;
  std::vector<double> values;
  std::int64_t dim(std::size_t i) const { return i < shape.size() ? shape[i] : 1; }
};


const Array& array_of(const Value& v, const std::string& what) {
  const Array* a = v.as<Array>();
  if (a == nullptr || !a->built)
    refuse(what + " must be a numpy array, got " + pickle::describe(v));
  return *a;
}

Tensor tensor(const Value& v, const std::string& what, bool finite = true) {
  const Array& a = array_of(v, what);
  Result<std::vector<double>> values = pickle::array_doubles(a, what);
  if (!values.ok()) refuse(values.status().message());
  if (finite) {
    for (std::size_t i = 0; i < values->size(); ++i) {
      if (!std::isfinite((*values)[i])) refuse(what + "[" + std::to_string(i) + "] is not finite");
    }
  }
  return Tensor{a.shape, std::move(*values)};
}

// A 1-D array of n values (n < 0: any length); (1, n) is accepted as well.
std::vector<double> vector_of(const Value& v, const std::string& what, std::int64_t n) {
  Tensor t = tensor(v, what);
  const bool flat = t.shape.size() == 1 || (t.shape.size() == 2 && t.shape[0] == 1);
  if (!flat || (n >= 0 && static_cast<std::int64_t>(t.values.size()) != n)) {
    refuse(what + " has shape " + shape_text(t.shape) + ", expected (" +
           (n >= 0 ? std::to_string(n) : std::string("n")) + ",)");
  }
  return std::move(t.values);
}

std::vector<std::int64_t> ints_of(const Value& v, const std::string& what) {
  const Array& a = array_of(v, what);
  Result<std::vector<std::int64_t>> values = pickle::array_ints(a, what);
  if (!values.ok()) refuse(values.status().message());
  return std::move(*values);
}

// n_features_in_ when present, checked against what the arrays say.
Eigen::Index feature_count(const Attrs& a, std::int64_t from_arrays) {
  if (const Value* v = a.find("n_features_in_")) {
    const std::int64_t n = Attrs::integer_of(*v, a.where("n_features_in_"));
    if (from_arrays >= 0 && n != from_arrays) {
      refuse(a.where("n_features_in_") + " is " + std::to_string(n) +
             " but the fitted arrays have " + std::to_string(from_arrays) + " features");
    }
    from_arrays = n;
  }
  if (from_arrays <= 0 || from_arrays > (1 << 20)) {
    refuse(a.object().name + " has " + std::to_string(from_arrays) + " input features");
  }
  return static_cast<Eigen::Index>(from_arrays);
}

Eigen::RowVectorXd row_vector(const std::vector<double>& v) {
  Eigen::RowVectorXd r(static_cast<Eigen::Index>(v.size()));
  for (std::size_t i = 0; i < v.size(); ++i) r(static_cast<Eigen::Index>(i)) = v[i];
  return r;
}

// ---- transforms ---------------------------------------------------------------------

// x / scale_ (MaxAbsScaler), or (x - mean_) / scale_ with either step optional
// (StandardScaler): sklearn subtracts then divides, in place, in float64.
class ScaleTransform final : public Transform {
 public:
  ScaleTransform(std::string name, std::optional<Eigen::RowVectorXd> mean,
                 std::optional<Eigen::RowVectorXd> scale, Eigen::Index n)
      : name_(std::move(name)), mean_(std::move(mean)), scale_(std::move(scale)), n_(n) {}

  Eigen::Index inputs() const override { return n_; }
  Eigen::Index outputs() const override { return n_; }
  void apply(const ConstRowsD& in, RowsD out) const override {
    out = in;
    if (mean_) out.array().rowwise() -= mean_->array();
    if (scale_) out.array().rowwise() /= scale_->array();
  }
  std::string describe() const override { return name_ + "(" + std::to_string(n_) + ")"; }

 private:
  std::string name_;
  std::optional<Eigen::RowVectorXd> mean_;
  std::optional<Eigen::RowVectorXd> scale_;
  Eigen::Index n_;
};

// x * scale_ + min_, then clipped to feature_range when clip (MinMaxScaler).
class MinMaxTransform final : public Transform {
 public:
  MinMaxTransform(Eigen::RowVectorXd scale, Eigen::RowVectorXd min,
                  std::optional<std::pair<double, double>> clip)
      : scale_(std::move(scale)), min_(std::move(min)), clip_(clip) {}

  Eigen::Index inputs() const override { return scale_.size(); }
  Eigen::Index outputs() const override { return scale_.size(); }
  void apply(const ConstRowsD& in, RowsD out) const override {
    out = in;
    out.array().rowwise() *= scale_.array();
    out.array().rowwise() += min_.array();
    if (clip_) out = out.cwiseMax(clip_->first).cwiseMin(clip_->second);
  }
  std::string describe() const override {
    return "MinMaxScaler(" + std::to_string(scale_.size()) + ")";
  }

 private:
  Eigen::RowVectorXd scale_;
  Eigen::RowVectorXd min_;
  std::optional<std::pair<double, double>> clip_;
};

// Output column j = product of the inputs listed in terms_[starts_[j] .. starts_[j+1]).
class PolynomialTransform final : public Transform {
 public:
  PolynomialTransform(Eigen::Index inputs, std::vector<std::uint32_t> terms,
                      std::vector<std::uint32_t> starts, std::string text)
      : inputs_(inputs),
        terms_(std::move(terms)),
        starts_(std::move(starts)),
        text_(std::move(text)) {}

  Eigen::Index inputs() const override { return inputs_; }
  Eigen::Index outputs() const override { return static_cast<Eigen::Index>(starts_.size() - 1); }
  void apply(const ConstRowsD& in, RowsD out) const override {
    const Eigen::Index cols = outputs();
    for (Eigen::Index r = 0; r < in.rows(); ++r) {
      for (Eigen::Index j = 0; j < cols; ++j) {
        const std::uint32_t b = starts_[static_cast<std::size_t>(j)];
        std::uint32_t e = starts_[static_cast<std::size_t>(j) + 1];
        if (b == e) {
          out(r, j) = 1.0;
          continue;
        }
        // sklearn builds a degree-d column as (the degree d-1 column of the later
        // indices) * x[first index]: multiply from the last index back, as it does.
        double p = in(r, terms_[--e]);
        while (e > b) p = p * in(r, terms_[--e]);
        out(r, j) = p;
      }
    }
  }
  std::string describe() const override { return text_; }

 private:
  Eigen::Index inputs_;
  std::vector<std::uint32_t> terms_;
  std::vector<std::uint32_t> starts_;
  std::string text_;
};

std::unique_ptr<Transform> load_scaler(const Attrs& a, bool standard) {
  const std::string cls = a.object().name;
  const bool with_mean = standard && a.flag("with_mean", true);
  const bool with_std = !standard || a.flag("with_std", true);
  std::optional<Eigen::RowVectorXd> mean;
  std::optional<Eigen::RowVectorXd> scale;
  std::int64_t n = -1;
  if (with_std) {
    const Value& sv = a.need("scale_");
    if (sv.kind() != pickle::Kind::kNone) {
      std::vector<double> s = vector_of(sv, a.where("scale_"), -1);
      for (double& x : s) {
        if (x == 0.0) x = 1.0;  // sklearn's _handle_zeros_in_scale
      }
      n = static_cast<std::int64_t>(s.size());
      scale = row_vector(s);
    }
  }
  if (with_mean) {
    std::vector<double> m = vector_of(a.need("mean_"), a.where("mean_"), n);
    n = static_cast<std::int64_t>(m.size());
    mean = row_vector(m);
  }
  if (!standard && !scale) refuse(cls + " has no scale_");
  const Eigen::Index features = feature_count(a, n);
  return std::make_unique<ScaleTransform>(cls, std::move(mean), std::move(scale), features);
}

std::unique_ptr<Transform> load_minmax(const Attrs& a) {
  const std::vector<double> scale = vector_of(a.need("scale_"), a.where("scale_"), -1);
  const auto n = static_cast<std::int64_t>(scale.size());
  const std::vector<double> min = vector_of(a.need("min_"), a.where("min_"), n);
  feature_count(a, n);
  std::optional<std::pair<double, double>> clip;
  if (a.flag("clip", false)) {
    const auto range = pickle::items(a.need("feature_range"));
    if (range.size() != 2) refuse(a.where("feature_range") + " must be a pair");
    clip = std::make_pair(Attrs::number_of(*range[0], a.where("feature_range")),
                          Attrs::number_of(*range[1], a.where("feature_range")));
  }
  return std::make_unique<MinMaxTransform>(row_vector(scale), row_vector(min), clip);
}

std::unique_ptr<Transform> load_polynomial(const Attrs& a) {
  std::int64_t min_degree = 0;
  std::int64_t max_degree = 0;
  if (a.find("_max_degree") != nullptr) {
    min_degree = a.integer("_min_degree");
    max_degree = a.integer("_max_degree");
  } else {
    const Value& d = a.need("degree");
    if (const auto range = pickle::items(d); range.size() == 2) {
      min_degree = Attrs::integer_of(*range[0], a.where("degree"));
      max_degree = Attrs::integer_of(*range[1], a.where("degree"));
    } else {
      max_degree = Attrs::integer_of(d, a.where("degree"));
    }
  }
  const bool interaction_only = a.flag("interaction_only", false);
  const bool include_bias = a.flag("include_bias", true);
  const Value* nv = a.find("n_features_in_");
  if (nv == nullptr) nv = a.find("n_input_features_");  // scikit-learn before 1.0
  if (nv == nullptr) refuse("PolynomialFeatures has no n_features_in_ (is it fitted?)");
  const std::int64_t n = Attrs::integer_of(*nv, a.where("n_features_in_"));
  if (n <= 0 || n > 1024 || min_degree < 0 || max_degree < min_degree || max_degree > 16) {
    refuse("PolynomialFeatures with " + std::to_string(n) + " features and degrees " +
           std::to_string(min_degree) + ".." + std::to_string(max_degree) + " is not supported");
  }

  // sklearn's _combinations: [()] if include_bias, then for d in max(1, min)..max the
  // index tuples of combinations (interaction_only) or combinations_with_replacement.
  std::vector<std::uint32_t> terms;
  std::vector<std::uint32_t> starts{0};
  constexpr std::size_t kMaxOutputs = 100000;
  if (include_bias) starts.push_back(0);
  for (std::int64_t d = std::max<std::int64_t>(1, min_degree); d <= max_degree; ++d) {
    if (interaction_only && d > n) break;
    std::vector<std::uint32_t> c(static_cast<std::size_t>(d));
    for (std::size_t i = 0; i < c.size(); ++i)
      c[i] = interaction_only ? static_cast<std::uint32_t>(i) : 0;
    while (true) {
      terms.insert(terms.end(), c.begin(), c.end());
      starts.push_back(static_cast<std::uint32_t>(terms.size()));
      if (starts.size() > kMaxOutputs) refuse("PolynomialFeatures has more than 100000 outputs");
      // Next tuple in lexicographic order.
      std::size_t i = c.size();
      bool done = true;
      while (i-- > 0) {
        const std::uint32_t limit =
            interaction_only ? static_cast<std::uint32_t>(n - static_cast<std::int64_t>(c.size()) +
                                                          static_cast<std::int64_t>(i))
                             : static_cast<std::uint32_t>(n - 1);
        if (c[i] < limit) {
          ++c[i];
          for (std::size_t k = i + 1; k < c.size(); ++k)
            c[k] = interaction_only ? c[k - 1] + 1 : c[i];
          done = false;
          break;
        }
      }
      if (done) break;
    }
  }
  const auto outputs = static_cast<std::int64_t>(starts.size() - 1);
  if (const Value* nout = a.find("n_output_features_")) {
    const std::int64_t expected = Attrs::integer_of(*nout, a.where("n_output_features_"));
    if (expected != outputs) {
      refuse("PolynomialFeatures says " + std::to_string(expected) +
             " outputs, its parameters give " + std::to_string(outputs));
    }
  }
  if (outputs == 0) refuse("PolynomialFeatures has no output");
  std::string text = "PolynomialFeatures(" + std::to_string(n) + "->" + std::to_string(outputs) +
                     ", degree " + (min_degree > 0 ? std::to_string(min_degree) + ".." : "") +
                     std::to_string(max_degree) + (interaction_only ? ", interaction only" : "") +
                     ")";
  return std::make_unique<PolynomialTransform>(static_cast<Eigen::Index>(n), std::move(terms),
                                               std::move(starts), std::move(text));
}

// ---- linear models ------------------------------------------------------------------

using ColMatrixD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic>;

class LinearRegressor final : public Regressor {
 public:
  LinearRegressor(std::string name, ColMatrixD coef, Eigen::RowVectorXd intercept)
      : name_(std::move(name)), coef_(std::move(coef)), intercept_(std::move(intercept)) {}

  Eigen::Index inputs() const override { return coef_.rows(); }
  Eigen::Index outputs() const override { return coef_.cols(); }
  void predict(const ConstRowsD& in, RowsD out, Scratch&) const override {
    for (Eigen::Index r = 0; r < in.rows(); ++r) {
      for (Eigen::Index k = 0; k < coef_.cols(); ++k) {
        out(r, k) = in.row(r).dot(coef_.col(k).transpose()) + intercept_(k);
      }
    }
  }
  std::string describe() const override {
    return name_ + "(" + std::to_string(coef_.rows()) +
           (coef_.cols() > 1 ? " -> " + std::to_string(coef_.cols()) : std::string()) + ")";
  }

 private:
  std::string name_;
  ColMatrixD coef_;  // inputs x outputs
  Eigen::RowVectorXd intercept_;
};

std::unique_ptr<Regressor> load_linear(const Attrs& a) {
  const Tensor coef = tensor(a.need("coef_"), a.where("coef_"));
  std::int64_t outputs = 1;
  std::int64_t n = 0;
  if (coef.shape.size() == 1) {
    n = coef.shape[0];
  } else if (coef.shape.size() == 2) {
    outputs = coef.shape[0];
    n = coef.shape[1];
  } else {
    refuse(a.where("coef_") + " has shape " + shape_text(coef.shape));
  }
  if (outputs < 1) refuse(a.where("coef_") + " has no output");
  const Eigen::Index features = feature_count(a, n);

  Eigen::RowVectorXd intercept = Eigen::RowVectorXd::Zero(static_cast<Eigen::Index>(outputs));
  const Value* iv = a.find("intercept_");
  if (iv != nullptr && iv->kind() != pickle::Kind::kNone) {
    if (const Array* arr = iv->as<Array>(); arr != nullptr && !arr->shape.empty()) {
      const std::vector<double> v = vector_of(*iv, a.where("intercept_"), -1);
      if (static_cast<std::int64_t>(v.size()) != outputs) {
        refuse(a.where("intercept_") + " has " + std::to_string(v.size()) + " values for " +
               std::to_string(outputs) + " outputs");
      }
      intercept = row_vector(v);
    } else {
      intercept.setConstant(Attrs::number_of(*iv, a.where("intercept_")));
    }
  }
  ColMatrixD m(features, static_cast<Eigen::Index>(outputs));
  for (std::int64_t k = 0; k < outputs; ++k) {
    for (std::int64_t j = 0; j < n; ++j) {
      m(static_cast<Eigen::Index>(j), static_cast<Eigen::Index>(k)) =
          coef.values[static_cast<std::size_t>(k * n + j)];
    }
  }
  return std::make_unique<LinearRegressor>(a.object().name, std::move(m), std::move(intercept));
}

// ---- gradient boosting --------------------------------------------------------------

// One node of the flattened trees: internal when left >= 0. Leaves hold
// learning_rate * value, the product sklearn adds (scale * value) for each row.
struct TreeNode {
  std::int32_t feature;
  std::int32_t left;  // absolute index in nodes_, -1 for a leaf
  std::int32_t right;
  double threshold;  // internal: split threshold; leaf: learning_rate * value
};

// The one comparison every tree walk uses: sklearn casts X to float32 for trees, then
// compares the float32 value (promoted) with the float64 threshold, going left on <=.
inline bool goes_left(double x, double threshold) {
  return static_cast<double>(static_cast<float>(x)) <= threshold;
}

class GradientBoostingRegressor final : public Regressor {
 public:
  GradientBoostingRegressor(Eigen::Index inputs, double init, std::vector<TreeNode> nodes,
                            std::vector<std::int32_t> roots)
      : inputs_(inputs), init_(init), nodes_(std::move(nodes)), roots_(std::move(roots)) {}

  Eigen::Index inputs() const override { return inputs_; }
  void predict(const ConstRowsD& in, RowsD out, Scratch&) const override {
    out.col(0).setConstant(init_);
    const TreeNode* const nodes = nodes_.data();
    const auto child = [nodes](const TreeNode& n, const double* x) {
      return nodes + (goes_left(x[n.feature], n.threshold) ? n.left : n.right);
    };
    // Tree after tree, as sklearn's predict_stages accumulates: out += lr * leaf.
    for (std::int32_t root : roots_) {
      for_each_leaf(nodes + root, in.data(), in.outerStride(), in.rows(), child,
                    [&out](std::ptrdiff_t r, const TreeNode& leaf) { out(r, 0) += leaf.threshold; });
    }
  }
  std::string describe() const override {
    return "GradientBoostingRegressor(" + std::to_string(roots_.size()) + " trees, " +
           std::to_string(nodes_.size()) + " nodes)";
  }

 private:
  Eigen::Index inputs_;
  double init_;
  std::vector<TreeNode> nodes_;
  std::vector<std::int32_t> roots_;
};

// Appends one sklearn.tree._tree.Tree to `nodes`; returns its root index.
std::int32_t append_tree(const Value& tv, const std::string& what, Eigen::Index features,
                         double scale, std::vector<TreeNode>& nodes) {
  const Object* t = tv.as<Object>();
  if (t == nullptr || t->name != "Tree")
    refuse(what + " must be a sklearn Tree, got " + pickle::describe(tv));
  const Attrs a(*t);
  const auto args = t->args != nullptr ? pickle::items(*t->args) : std::span<Value* const>{};
  if (args.size() >= 3) {
    const std::int64_t nf = Attrs::integer_of(*args[0], what + " n_features");
    const std::int64_t no = Attrs::integer_of(*args[2], what + " n_outputs");
    if (nf != features)
      refuse(what + " has " + std::to_string(nf) + " features, the model " +
             std::to_string(features));
    if (no != 1) refuse(what + " has " + std::to_string(no) + " outputs; only 1 is supported");
  }
  const Array& na = array_of(a.need("nodes"), what + ".nodes");
  const std::int64_t count = na.count();
  if (na.shape.size() != 1 || count < 1 || count > (1 << 24)) {
    refuse(what + ".nodes has shape " + shape_text(na.shape));
  }
  if (const Value* nc = a.find("node_count");
      nc != nullptr && Attrs::integer_of(*nc, what) != count) {
    refuse(what + ".node_count disagrees with its nodes array");
  }
  const auto field_i = [&](std::string_view f) {
    Result<std::vector<std::int64_t>> r = pickle::field_ints(na, f, what + ".nodes");
    if (!r.ok()) refuse(r.status().message());
    return std::move(*r);
  };
  const std::vector<std::int64_t> left = field_i("left_child");
  const std::vector<std::int64_t> right = field_i("right_child");
  const std::vector<std::int64_t> feature = field_i("feature");
  Result<std::vector<double>> threshold = pickle::field_doubles(na, "threshold", what + ".nodes");
  if (!threshold.ok()) refuse(threshold.status().message());

  const Tensor values = tensor(a.need("values"), what + ".values", /*finite=*/false);
  if (values.shape.empty() || values.shape[0] != count ||
      static_cast<std::int64_t>(values.values.size()) != count) {
    refuse(what + ".values has shape " + shape_text(values.shape) + " for " +
           std::to_string(count) + " nodes (one output, one value per node expected)");
  }

  const auto base = static_cast<std::int64_t>(nodes.size());
  if (base + count > std::numeric_limits<std::int32_t>::max()) refuse("too many tree nodes");
  for (std::int64_t i = 0; i < count; ++i) {
    const auto u = static_cast<std::size_t>(i);
    const std::string node = what + " node " + std::to_string(i);
    if (left[u] == -1) {
      if (right[u] != -1) refuse(node + " has one child");
      if (!std::isfinite(values.values[u])) refuse(node + " has a value that is not finite");
      nodes.push_back(TreeNode{0, -1, -1, scale * values.values[u]});
      continue;
    }
    // Children come after their parent (sklearn's builders append them), so every walk
    // ends: no cycles can be expressed.
    if (left[u] <= i || left[u] >= count || right[u] <= i || right[u] >= count) {
      refuse(node + " has children " + std::to_string(left[u]) + ", " + std::to_string(right[u]) +
             " outside " + std::to_string(i + 1) + ".." + std::to_string(count - 1));
    }
    if (feature[u] < 0 || feature[u] >= features)
      refuse(node + " splits on feature " + std::to_string(feature[u]));
    if (std::isnan((*threshold)[u])) refuse(node + " has a NaN threshold");
    nodes.push_back(TreeNode{static_cast<std::int32_t>(feature[u]),
                             static_cast<std::int32_t>(base + left[u]),
                             static_cast<std::int32_t>(base + right[u]), (*threshold)[u]});
  }
  return static_cast<std::int32_t>(base);
}

std::unique_ptr<Regressor> load_gradient_boosting(const Attrs& a) {
  const double lr = a.number("learning_rate");
  double init = 0;
  const Value& iv = a.need("init_");
  if (const std::optional<std::string_view> s = pickle::as_str(iv)) {
    if (*s != "zero") refuse(a.where("init_") + " is '" + std::string(*s) + "'");
  } else {
    const Object* io = iv.as<Object>();
    if (io == nullptr || io->name != "DummyRegressor") {
      refuse(a.where("init_") + " is " + pickle::describe(iv) +
             "; only DummyRegressor or 'zero' is supported");
    }
    const Attrs ia(*io);
    const std::vector<double> c = vector_of(ia.need("constant_"), ia.where("constant_"), -1);
    if (c.size() != 1)
      refuse(ia.where("constant_") + " has " + std::to_string(c.size()) + " values; 1 expected");
    init = c[0];
  }

  const Array& est = array_of(a.need("estimators_"), a.where("estimators_"));
  if (!est.type().is_object() || est.shape.size() != 2 || est.shape[1] != 1 || est.shape[0] < 1) {
    refuse(a.where("estimators_") + " must be an object array of shape (n, 1), got " +
           pickle::describe(a.need("estimators_")));
  }
  // Feature count: n_features_in_, else the first tree's.
  std::int64_t from_tree = -1;
  if (const Object* first = est.objects[0]->as<Object>()) {
    if (const Value* tv = first->attr("tree_")) {
      if (const Object* t = tv->as<Object>();
          t != nullptr && t->args != nullptr && !pickle::items(*t->args).empty()) {
        from_tree = Attrs::integer_of(*pickle::items(*t->args)[0], "Tree n_features");
      }
    }
  }
  const Eigen::Index features = feature_count(a, from_tree);

  std::vector<TreeNode> nodes;
  std::vector<std::int32_t> roots;
  for (std::size_t i = 0; i < est.objects.size(); ++i) {
    const std::string what = a.where("estimators_") + "[" + std::to_string(i) + "]";
    const Object* dt = est.objects[i]->as<Object>();
    if (dt == nullptr || dt->name != "DecisionTreeRegressor") {
      refuse(what + " must be a DecisionTreeRegressor, got " + pickle::describe(*est.objects[i]));
    }
    const Attrs da(*dt);
    roots.push_back(append_tree(da.need("tree_"), what + ".tree_", features, lr, nodes));
  }
  return std::make_unique<GradientBoostingRegressor>(features, init, std::move(nodes),
                                                     std::move(roots));
}

// ---- nearest neighbours -------------------------------------------------------------

// sklearn.utils._heap.heap_push: a max-heap of the k best (smallest) distances with the
// worst at [0]; a candidate not strictly better than the worst is dropped, and the
// sift-down order decides which of two equal distances is evicted later: both matter
// for which equidistant neighbours are kept, so this follows sklearn step by step.
void heap_push(double* dist, double* idx, std::size_t size, double val, double val_idx) {
  if (val >= dist[0]) return;
  std::size_t current = 0;
  while (true) {
    const std::size_t left = 2 * current + 1;
    const std::size_t right = left + 1;
    std::size_t swap;
    if (left >= size) {
      break;
    } else if (right >= size) {
      if (dist[left] > val) {
        swap = left;
      } else {
        break;
      }
    } else if (dist[left] >= dist[right]) {
      if (val < dist[left]) {
        swap = left;
      } else {
        break;
      }
    } else {
      if (val < dist[right]) {
        swap = right;
      } else {
        break;
      }
    }
    dist[current] = dist[swap];
    idx[current] = idx[swap];
    current = swap;
  }
  dist[current] = val;
  idx[current] = val_idx;
}

struct KdTree {
  std::vector<std::int64_t> idx_array;
  std::vector<std::int64_t> start, end;
  std::vector<bool> leaf;
  std::vector<double> lower, upper;  // n_nodes x features each
  std::size_t max_stack = 0;
};

class KNeighborsRegressor final : public Regressor {
 public:
  enum class Metric { kEuclidean, kManhattan };

  KNeighborsRegressor(RowMatrixD data, std::vector<double> y, std::size_t k, bool distance_weights,
                      Metric metric, std::optional<KdTree> tree, std::string method)
      : data_(std::move(data)),
        y_(std::move(y)),
        k_(k),
        distance_weights_(distance_weights),
        metric_(metric),
        p_(metric == Metric::kEuclidean ? 2.0 : 1.0),
        tree_(std::move(tree)),
        method_(std::move(method)) {}

  Eigen::Index inputs() const override { return data_.cols(); }
  void predict(const ConstRowsD& in, RowsD out, Scratch& scratch) const override {
    const std::size_t stack_size = tree_ ? tree_->max_stack : 0;
    RowsD buf =
        scratch.matrix(kRegressorSlots, 1, static_cast<Eigen::Index>(2 * k_ + 2 * stack_size));
    double* dist = buf.data();
    double* idx = dist + k_;
    double* stack = idx + k_;  // pairs (node, lower bound)
    for (Eigen::Index r = 0; r < in.rows(); ++r) {
      std::fill(dist, dist + k_, std::numeric_limits<double>::infinity());
      std::fill(idx, idx + k_, 0.0);
      const double* pt = in.data() + r * in.outerStride();  // rows are contiguous (RowMajor Ref)
      if (tree_) {
        query_tree(pt, dist, idx, stack);
      } else {
        for (Eigen::Index j = 0; j < data_.rows(); ++j) {
          const double d = rdist(pt, j);
          if (d < dist[0]) heap_push(dist, idx, k_, d, static_cast<double>(j));
        }
      }
      sort_pairs(dist, idx);
      out(r, 0) = average(dist, idx);
    }
  }
  std::string describe() const override {
    return "KNeighborsRegressor(k=" + std::to_string(k_) + ", " + std::to_string(data_.rows()) +
           " points, " + (metric_ == Metric::kEuclidean ? "euclidean" : "manhattan") + ", " +
           (distance_weights_ ? "distance" : "uniform") + ", " + method_ + ")";
  }

 private:
  // The reduced distance sklearn compares: squared euclidean, or manhattan.
  double rdist(const double* pt, Eigen::Index j) const {
    double d = 0;
    const double* x = &data_(j, 0);
    if (metric_ == Metric::kEuclidean) {
      for (Eigen::Index c = 0; c < data_.cols(); ++c) {
        const double t = pt[c] - x[c];
        d += t * t;
      }
    } else {
      for (Eigen::Index c = 0; c < data_.cols(); ++c) d += std::fabs(pt[c] - x[c]);
    }
    return d;
  }

  // KDTree min_rdist: distance from pt to node's bounding box, in reduced units.
  double min_rdist(std::size_t node, const double* pt) const {
    const auto nf = static_cast<std::size_t>(data_.cols());
    const double* lo = &tree_->lower[node * nf];
    const double* hi = &tree_->upper[node * nf];
    double rd = 0;
    for (std::size_t j = 0; j < nf; ++j) {
      const double d_lo = lo[j] - pt[j];
      const double d_hi = pt[j] - hi[j];
      const double d = (d_lo + std::fabs(d_lo)) + (d_hi + std::fabs(d_hi));
      rd += std::pow(0.5 * d, p_);
    }
    return rd;
  }

  // sklearn's _query_single_depthfirst with an explicit stack: the nearer child first,
  // a node skipped when its bound exceeds the current k-th distance.
  void query_tree(const double* pt, double* dist, double* idx, double* stack) const {
    const KdTree& t = *tree_;
    std::size_t top = 0;
    stack[0] = 0;
    stack[1] = min_rdist(0, pt);
    top = 1;
    while (top > 0) {
      --top;
      const auto node = static_cast<std::size_t>(stack[2 * top]);
      const double bound = stack[2 * top + 1];
      if (bound > dist[0]) continue;
      if (t.leaf[node]) {
        for (std::int64_t i = t.start[node]; i < t.end[node]; ++i) {
          const std::int64_t j = t.idx_array[static_cast<std::size_t>(i)];
          const double d = rdist(pt, static_cast<Eigen::Index>(j));
          if (d < dist[0]) heap_push(dist, idx, k_, d, static_cast<double>(j));
        }
        continue;
      }
      const std::size_t c1 = 2 * node + 1;
      const std::size_t c2 = c1 + 1;
      const double b1 = min_rdist(c1, pt);
      const double b2 = min_rdist(c2, pt);
      // Pushed in reverse: the child visited first goes on top.
      const bool first_is_c1 = b1 <= b2;
      stack[2 * top] = static_cast<double>(first_is_c1 ? c2 : c1);
      stack[2 * top + 1] = first_is_c1 ? b2 : b1;
      stack[2 * top + 2] = static_cast<double>(first_is_c1 ? c1 : c2);
      stack[2 * top + 3] = first_is_c1 ? b1 : b2;
      top += 2;
    }
  }

  // Ascending distance (the order sklearn returns; it only changes summation order).
  void sort_pairs(double* dist, double* idx) const {
    for (std::size_t i = 1; i < k_; ++i) {
      const double d = dist[i];
      const double x = idx[i];
      std::size_t j = i;
      while (j > 0 && dist[j - 1] > d) {
        dist[j] = dist[j - 1];
        idx[j] = idx[j - 1];
        --j;
      }
      dist[j] = d;
      idx[j] = x;
    }
  }

  double average(const double* dist, const double* idx) const {
    const auto y = [&](std::size_t i) { return y_[static_cast<std::size_t>(idx[i])]; };
    if (!distance_weights_) {
      double sum = 0;
      for (std::size_t i = 0; i < k_; ++i) sum += y(i);
      return sum / static_cast<double>(k_);
    }
    // weights = 1 / distance; a row with a zero distance weighs its exact matches only.
    bool exact = false;
    for (std::size_t i = 0; i < k_; ++i) exact = exact || std::isinf(1.0 / distance(dist[i]));
    double num = 0;
    double den = 0;
    for (std::size_t i = 0; i < k_; ++i) {
      const double w = 1.0 / distance(dist[i]);
      const double weight = exact ? (std::isinf(w) ? 1.0 : 0.0) : w;
      num += y(i) * weight;
      den += weight;
    }
    return num / den;
  }

  double distance(double reduced) const {
    return metric_ == Metric::kEuclidean ? std::sqrt(reduced) : reduced;
  }

  RowMatrixD data_;
  std::vector<double> y_;
  std::size_t k_;
  bool distance_weights_;
  Metric metric_;
  double p_;
  std::optional<KdTree> tree_;
  std::string method_;
};

// The pickled KDTree state: (data, idx_array, node_data, node_bounds, ...).
KdTree load_kd_tree(const Value& tv, const RowMatrixD& fit_x) {
  const Object* o = tv.as<Object>();
  if (o == nullptr)
    refuse("KNeighborsRegressor._tree must be a KDTree, got " + pickle::describe(tv));
  const auto state = o->state != nullptr ? pickle::items(*o->state) : std::span<Value* const>{};
  if (state.size() < 4) refuse("KNeighborsRegressor._tree has no KD-tree state");
  const std::string what = "KNeighborsRegressor._tree";
  const Tensor data = tensor(*state[0], what + ".data");
  const auto n = static_cast<std::int64_t>(fit_x.rows());
  const auto nf = static_cast<std::int64_t>(fit_x.cols());
  if (data.shape != std::vector<std::int64_t>{n, nf})
    refuse(what + ".data has shape " + shape_text(data.shape));
  for (std::size_t i = 0; i < data.values.size(); ++i) {
    if (data.values[i] != fit_x.data()[i]) refuse(what + ".data differs from _fit_X");
  }
  KdTree t;
  t.idx_array = ints_of(*state[1], what + ".idx_array");
  if (static_cast<std::int64_t>(t.idx_array.size()) != n)
    refuse(what + ".idx_array has the wrong length");
  std::vector<bool> seen(static_cast<std::size_t>(n), false);
  for (std::int64_t j : t.idx_array) {
    if (j < 0 || j >= n || seen[static_cast<std::size_t>(j)])
      refuse(what + ".idx_array is not a permutation");
    seen[static_cast<std::size_t>(j)] = true;
  }
  const Array& nd = array_of(*state[2], what + ".node_data");
  const std::int64_t nodes = nd.count();
  if (nd.shape.size() != 1 || nodes < 1 || nodes > 2 * n + 1)
    refuse(what + ".node_data has shape " + shape_text(nd.shape));
  const auto field = [&](std::string_view f) {
    Result<std::vector<std::int64_t>> r = pickle::field_ints(nd, f, what + ".node_data");
    if (!r.ok()) refuse(r.status().message());
    return std::move(*r);
  };
  t.start = field("idx_start");
  t.end = field("idx_end");
  const std::vector<std::int64_t> leaf = field("is_leaf");
  const Tensor bounds = tensor(*state[3], what + ".node_bounds");
  if (bounds.shape != std::vector<std::int64_t>{2, nodes, nf})
    refuse(what + ".node_bounds has shape " + shape_text(bounds.shape));
  const auto half = static_cast<std::size_t>(nodes * nf);
  t.lower.assign(bounds.values.begin(), bounds.values.begin() + static_cast<std::ptrdiff_t>(half));
  t.upper.assign(bounds.values.begin() + static_cast<std::ptrdiff_t>(half), bounds.values.end());
  std::size_t depth = 0;
  for (std::int64_t i = 0; i < nodes; ++i) {
    const auto u = static_cast<std::size_t>(i);
    if (t.start[u] < 0 || t.start[u] > t.end[u] || t.end[u] > n)
      refuse(what + " node " + std::to_string(i) + " has a bad index range");
    const bool is_leaf = leaf[u] != 0;
    if (!is_leaf && 2 * i + 2 >= nodes)
      refuse(what + " node " + std::to_string(i) + " has no children");
    t.leaf.push_back(is_leaf);
    std::size_t d = 0;
    for (std::int64_t p = i; p > 0; p = (p - 1) / 2) ++d;
    depth = std::max(depth, d);
  }
  t.max_stack = depth + 2;  // one pending sibling per level, plus the node in hand
  return t;
}

std::unique_ptr<Regressor> load_knn(const Attrs& a) {
  const std::int64_t k = a.integer("n_neighbors");
  const std::string weights = [&] {
    const Value& w = a.need("weights");
    if (w.kind() == pickle::Kind::kNone) return std::string("uniform");
    return a.text("weights");
  }();
  if (weights != "uniform" && weights != "distance")
    refuse("KNeighborsRegressor weights '" + weights + "' is not supported");
  std::string metric_name =
      a.find("effective_metric_") != nullptr ? a.text("effective_metric_") : a.text("metric");
  if (metric_name == "minkowski") {
    double p = 2;
    const Value* params = a.find("effective_metric_params_");
    const Value* pv = params != nullptr && params->as<pickle::Dict>() != nullptr
                          ? params->as<pickle::Dict>()->find("p")
                          : nullptr;
    if (pv == nullptr) pv = a.find("p");
    if (pv != nullptr && pv->kind() != pickle::Kind::kNone)
      p = Attrs::number_of(*pv, "KNeighborsRegressor p");
    if (p == 2) metric_name = "euclidean";
    if (p == 1) metric_name = "manhattan";
  }
  KNeighborsRegressor::Metric metric;
  if (metric_name == "euclidean" || metric_name == "l2") {
    metric = KNeighborsRegressor::Metric::kEuclidean;
  } else if (metric_name == "manhattan" || metric_name == "l1" || metric_name == "cityblock") {
    metric = KNeighborsRegressor::Metric::kManhattan;
  } else {
    refuse("KNeighborsRegressor metric '" + metric_name +
           "' is not supported (euclidean, manhattan)");
  }

  const Tensor x = tensor(a.need("_fit_X"), a.where("_fit_X"));
  if (x.shape.size() != 2 || x.shape[0] < 1)
    refuse(a.where("_fit_X") + " has shape " + shape_text(x.shape));
  const Eigen::Index features = feature_count(a, x.shape[1]);
  const Tensor y = tensor(a.need("_y"), a.where("_y"));
  if (!(y.shape.size() == 1 || (y.shape.size() == 2 && y.shape[1] == 1)) ||
      y.shape[0] != x.shape[0]) {
    refuse(a.where("_y") + " has shape " + shape_text(y.shape) + " for " +
           std::to_string(x.shape[0]) + " training rows (one output supported)");
  }
  if (k < 1 || k > x.shape[0]) {
    refuse("KNeighborsRegressor n_neighbors " + std::to_string(k) + " with " +
           std::to_string(x.shape[0]) + " training rows");
  }
  RowMatrixD data(static_cast<Eigen::Index>(x.shape[0]), features);
  std::copy(x.values.begin(), x.values.end(), data.data());

  const std::string method = a.find("_fit_method") != nullptr ? a.text("_fit_method") : "brute";
  std::optional<KdTree> tree;
  if (method == "kd_tree") {
    tree = load_kd_tree(a.need("_tree"), data);
  } else if (method != "brute" && method != "ball_tree") {
    refuse("KNeighborsRegressor _fit_method '" + method + "' is not supported");
  }
  return std::make_unique<KNeighborsRegressor>(std::move(data), y.values,
                                               static_cast<std::size_t>(k), weights == "distance",
                                               metric, std::move(tree), method);
}

// ---- support vector regression ------------------------------------------------------

class SvrRegressor final : public Regressor {
 public:
  enum class Kernel { kLinear, kRbf, kPoly, kSigmoid };

  SvrRegressor(Kernel kernel, std::string kernel_name, RowMatrixD sv, std::vector<double> coef,
               double intercept, double gamma, double coef0, int degree, Eigen::Index features)
      : kernel_(kernel),
        kernel_name_(std::move(kernel_name)),
        sv_(std::move(sv)),
        coef_(std::move(coef)),
        intercept_(intercept),
        gamma_(gamma),
        coef0_(coef0),
        degree_(degree),
        features_(features) {}

  Eigen::Index inputs() const override { return features_; }
  void predict(const ConstRowsD& in, RowsD out, Scratch&) const override {
    for (Eigen::Index r = 0; r < in.rows(); ++r) {
      double sum = 0;
      for (Eigen::Index i = 0; i < sv_.rows(); ++i)
        sum += coef_[static_cast<std::size_t>(i)] * kernel(in, r, i);
      out(r, 0) = sum + intercept_;  // libsvm: sum - rho, with rho = -intercept_
    }
  }
  std::string describe() const override {
    return "SVR(" + kernel_name_ + ", " + std::to_string(sv_.rows()) + " support vectors)";
  }

 private:
  // libsvm's powi: exponentiation by squaring.
  static double powi(double base, int times) {
    double tmp = base;
    double ret = 1.0;
    for (int t = times; t > 0; t /= 2) {
      if (t % 2 == 1) ret *= tmp;
      tmp = tmp * tmp;
    }
    return ret;
  }

  double kernel(const ConstRowsD& in, Eigen::Index r, Eigen::Index i) const {
    double acc = 0;
    if (kernel_ == Kernel::kRbf) {
      for (Eigen::Index c = 0; c < features_; ++c) {
        const double d = in(r, c) - sv_(i, c);
        acc += d * d;
      }
      return std::exp(-gamma_ * acc);
    }
    for (Eigen::Index c = 0; c < features_; ++c) acc += in(r, c) * sv_(i, c);
    switch (kernel_) {
      case Kernel::kLinear:
        return acc;
      case Kernel::kPoly:
        return powi(gamma_ * acc + coef0_, degree_);
      case Kernel::kSigmoid:
        return std::tanh(gamma_ * acc + coef0_);
      case Kernel::kRbf:
        break;
    }
    return 0;
  }

  Kernel kernel_;
  std::string kernel_name_;
  RowMatrixD sv_;
  std::vector<double> coef_;
  double intercept_;
  double gamma_;
  double coef0_;
  int degree_;
  Eigen::Index features_;
};

std::unique_ptr<Regressor> load_svr(const Attrs& a) {
  if (a.flag("_sparse", false)) refuse("SVR fitted on sparse data is not supported");
  const std::string kernel_name = a.text("kernel");
  SvrRegressor::Kernel kernel;
  if (kernel_name == "rbf") {
    kernel = SvrRegressor::Kernel::kRbf;
  } else if (kernel_name == "linear") {
    kernel = SvrRegressor::Kernel::kLinear;
  } else if (kernel_name == "poly") {
    kernel = SvrRegressor::Kernel::kPoly;
  } else if (kernel_name == "sigmoid") {
    kernel = SvrRegressor::Kernel::kSigmoid;
  } else {
    refuse("SVR kernel '" + kernel_name + "' is not supported (linear, rbf, poly, sigmoid)");
  }
  const double gamma = a.number("_gamma");
  const double coef0 = a.find("coef0") != nullptr ? a.number("coef0") : 0.0;
  const std::int64_t degree = a.find("degree") != nullptr ? a.integer("degree") : 3;
  if (degree < 0 || degree > 64)
    refuse("SVR degree " + std::to_string(degree) + " is not supported");

  const Tensor sv = tensor(a.need("support_vectors_"), a.where("support_vectors_"));
  if (sv.shape.size() != 2)
    refuse(a.where("support_vectors_") + " has shape " + shape_text(sv.shape));
  const std::int64_t n_sv = sv.shape[0];
  const Eigen::Index features = feature_count(a, sv.shape[1]);
  const Tensor dual = tensor(a.need("_dual_coef_"), a.where("_dual_coef_"));
  if (dual.shape.size() != 2 || dual.shape[0] != 1 || dual.shape[1] != n_sv) {
    refuse(a.where("_dual_coef_") + " has shape " + shape_text(dual.shape) + " for " +
           std::to_string(n_sv) + " support vectors");
  }
  const std::vector<double> intercept = vector_of(a.need("_intercept_"), a.where("_intercept_"), 1);
  RowMatrixD m(static_cast<Eigen::Index>(n_sv), features);
  std::copy(sv.values.begin(), sv.values.end(), m.data());
  return std::make_unique<SvrRegressor>(kernel, kernel_name, std::move(m), dual.values,
                                        intercept[0], gamma, coef0, static_cast<int>(degree),
                                        features);
}

// ---- pipelines ----------------------------------------------------------------------

// A Pipeline's transforms in order, then its last step's regressor. The transforms
// alternate between two of the regressor's scratch slots; the last step gets a nested
// Scratch, so that its own slots never meet them.
class StepsRegressor final : public Regressor {
 public:
  StepsRegressor(std::vector<std::unique_ptr<Transform>> transforms,
                 std::unique_ptr<Regressor> last)
      : transforms_(std::move(transforms)), last_(std::move(last)) {}

  Eigen::Index inputs() const override { return transforms_.front()->inputs(); }
  Eigen::Index outputs() const override { return last_->outputs(); }
  void predict(const ConstRowsD& in, RowsD out, Scratch& scratch) const override {
    const Eigen::Index rows = in.rows();
    std::size_t current = kRegressorSlots;
    transforms_.front()->apply(in, scratch.matrix(current, rows, transforms_.front()->outputs()));
    for (std::size_t i = 1; i < transforms_.size(); ++i) {
      const std::size_t next = current == kRegressorSlots ? kRegressorSlots + 1 : kRegressorSlots;
      transforms_[i]->apply(scratch.matrix(current, rows, transforms_[i - 1]->outputs()),
                            scratch.matrix(next, rows, transforms_[i]->outputs()));
      current = next;
    }
    last_->predict(scratch.matrix(current, rows, transforms_.back()->outputs()), out,
                   scratch.nested());
  }
  std::string describe() const override {
    std::string s = "Pipeline(";
    for (const auto& t : transforms_) s += t->describe() + " -> ";
    return s + last_->describe() + ")";
  }

 private:
  std::vector<std::unique_ptr<Transform>> transforms_;
  std::unique_ptr<Regressor> last_;
};

constexpr int kMaxPipelineDepth = 8;

SklearnStage convert(const Value& root, int depth);

// sklearn.pipeline.Pipeline: steps [(name, estimator), ...] evaluated in order; None and
// "passthrough" steps are skipped; every other step is a supported transform, the last
// may be a regressor.
SklearnStage load_pipeline(const Attrs& a, int depth) {
  if (depth >= kMaxPipelineDepth)
    refuse("Pipelines nested more than " + std::to_string(kMaxPipelineDepth) + " deep");
  const Value& steps = a.need("steps");
  if (steps.kind() != pickle::Kind::kList && steps.kind() != pickle::Kind::kTuple)
    refuse("Pipeline.steps must be a list, got " + pickle::describe(steps));
  std::vector<std::unique_ptr<Transform>> transforms;
  std::unique_ptr<Regressor> last;
  std::string last_name;
  for (const Value* step : pickle::items(steps)) {
    const std::span<Value* const> pair = pickle::items(*step);
    const std::optional<std::string_view> name =
        pair.size() == 2 ? pickle::as_str(*pair[0]) : std::nullopt;
    if (!name) {
      refuse("Pipeline.steps must hold (name, estimator) pairs, got " + pickle::describe(*step));
    }
    const Value& estimator = *pair[1];
    const std::string where = "Pipeline step '" + std::string(*name) + "'";
    if (estimator.kind() == pickle::Kind::kNone || pickle::as_str(estimator) == "passthrough")
      continue;
    if (last) {
      refuse(where + " follows the regressor of step '" + last_name +
             "': only the last step may be a regressor");
    }
    if (estimator.as<Object>() == nullptr)
      refuse(where + " is " + pickle::describe(estimator) + ", not an estimator");
    SklearnStage stage;
    try {
      stage = convert(estimator, depth + 1);
    } catch (const LoadError& e) {
      refuse(where + ": " + e.message);
    }
    if (auto* t = std::get_if<std::unique_ptr<Transform>>(&stage)) {
      transforms.push_back(std::move(*t));
    } else {
      last = std::move(std::get<std::unique_ptr<Regressor>>(stage));
      last_name = *name;
    }
  }
  if (!last) {
    if (transforms.size() == 1) return std::move(transforms.front());
    refuse(transforms.empty() ? std::string("Pipeline has no step to evaluate")
                              : "a Pipeline of transforms only is not supported (list them as "
                                "fe_files instead)");
  }
  if (transforms.empty()) return last;
  for (std::size_t i = 0; i < transforms.size(); ++i) {
    const bool last_transform = i + 1 == transforms.size();
    const Eigen::Index width = transforms[i]->outputs();
    const bool fits = last_transform ? takes_width(*last, width)
                                     : transforms[i + 1]->inputs() == width;
    if (!fits) {
      refuse("Pipeline: " + transforms[i]->describe() + " gives " + std::to_string(width) +
             " columns but " +
             (last_transform ? last->describe() : transforms[i + 1]->describe()) + " takes " +
             std::to_string(last_transform ? last->inputs() : transforms[i + 1]->inputs()));
    }
  }
  return std::make_unique<StepsRegressor>(std::move(transforms), std::move(last));
}

// ---- dispatch -----------------------------------------------------------------------

SklearnStage convert(const Value& root, int depth) {
  const Object* o = root.as<Object>();
  if (o == nullptr)
    refuse("the pickle holds " + pickle::describe(root) + ", not a scikit-learn estimator");
  const Attrs a(*o);
  if (o->state == nullptr) refuse(o->qualified() + " has no state");
  const std::string& n = o->name;
  if (n == "MaxAbsScaler") return load_scaler(a, /*standard=*/false);
  if (n == "StandardScaler") return load_scaler(a, /*standard=*/true);
  if (n == "MinMaxScaler") return load_minmax(a);
  if (n == "PolynomialFeatures") return load_polynomial(a);
  if (n == "LinearRegression" || n == "Ridge" || n == "Lasso" || n == "SGDRegressor")
    return load_linear(a);
  if (n == "GradientBoostingRegressor") return load_gradient_boosting(a);
  if (n == "KNeighborsRegressor") return load_knn(a);
  if (n == "SVR") return load_svr(a);
  if (n == "Pipeline") return load_pipeline(a, depth);
  if (n == "CurveFitModel") {
    Result<std::unique_ptr<Regressor>> r = load_curve_fit(*o);
    if (!r.ok()) refuse(r.status().message());
    return std::move(r).value();
  }
  refuse("scikit-learn estimator " + o->qualified() + " is not supported");
}

}  // namespace

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
  try {
    return convert(root, 0);
  } catch (const LoadError& e) {
    return Status(Code::kInvalidArgument, std::string(file) + ": " + e.message);
  } catch (const std::bad_alloc&) {
    return Status(Code::kResourceExhausted,
                  std::string(file) + ": out of memory building the model");
  }
}

Result<SklearnStage> load_sklearn_pickle(std::string_view bytes, std::string_view file) {
  pickle::Options options;
  options.allowed = sklearn_classes();
  Result<std::unique_ptr<pickle::Document>> doc = pickle::read_pickle(bytes, file, options);
  if (!doc.ok()) return doc.status();
  return sklearn_stage((*doc)->root(), file);
}

}  // namespace estimator::models
