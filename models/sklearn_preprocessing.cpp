// SPDX-License-Identifier: Apache-2.0
// scikit-learn's preprocessing transforms: MaxAbsScaler, StandardScaler, MinMaxScaler and
// PolynomialFeatures (formulas in models/sklearn_model.h).
#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "models/sklearn_estimators.h"

namespace estimator::models::sklearn {

namespace {

using pickle::Value;

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

// MaxAbsScaler (standard = false) and StandardScaler.
Result<SklearnStage> load_scaler(const Attrs& a, bool standard) {
  const std::string& cls = a.cls();
  bool with_mean = false;
  bool with_std = true;
  if (standard) {
    SKLEARN_TRY(with_mean, a.flag("with_mean", true));
    SKLEARN_TRY(with_std, a.flag("with_std", true));
  }
  std::optional<Eigen::RowVectorXd> mean;
  std::optional<Eigen::RowVectorXd> scale;
  std::int64_t n = -1;
  if (with_std) {
    SKLEARN_TRY(const Value* sv, a.need("scale_"));
    if (sv->kind() != pickle::Kind::kNone) {
      SKLEARN_TRY(std::vector<double> s, vector_of(*sv, a.where("scale_"), -1));
      for (double& x : s) {
        if (x == 0.0) x = 1.0;  // sklearn's _handle_zeros_in_scale
      }
      n = static_cast<std::int64_t>(s.size());
      scale = row_vector(s);
    }
  }
  if (with_mean) {
    SKLEARN_TRY(const Value* mv, a.need("mean_"));
    SKLEARN_TRY(const std::vector<double> m, vector_of(*mv, a.where("mean_"), n));
    n = static_cast<std::int64_t>(m.size());
    mean = row_vector(m);
  }
  if (!standard && !scale) return refuse(cls + " has no scale_");
  SKLEARN_TRY(const Eigen::Index features, feature_count(a, n));
  return as_transform(
      std::make_unique<ScaleTransform>(cls, std::move(mean), std::move(scale), features));
}

// sklearn's _combinations: [()] if include_bias, then for d in max(1, min)..max the index
// tuples of combinations (interaction_only) or combinations_with_replacement, in
// lexicographic order; `starts` delimits each output's tuple in `terms`.
Status polynomial_terms(std::int64_t n, std::int64_t min_degree, std::int64_t max_degree,
                        bool interaction_only, bool include_bias,
                        std::vector<std::uint32_t>& terms, std::vector<std::uint32_t>& starts) {
  constexpr std::size_t kMaxOutputs = 100000;
  starts.assign(1, 0);
  if (include_bias) starts.push_back(0);
  for (std::int64_t d = std::max<std::int64_t>(1, min_degree); d <= max_degree; ++d) {
    if (interaction_only && d > n) break;
    std::vector<std::uint32_t> c(static_cast<std::size_t>(d));
    for (std::size_t i = 0; i < c.size(); ++i)
      c[i] = interaction_only ? static_cast<std::uint32_t>(i) : 0;
    while (true) {
      terms.insert(terms.end(), c.begin(), c.end());
      starts.push_back(static_cast<std::uint32_t>(terms.size()));
      if (starts.size() > kMaxOutputs)
        return refuse("PolynomialFeatures has more than 100000 outputs");
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
  return Status::Ok();
}

}  // namespace

Result<SklearnStage> build_max_abs_scaler(const Attrs& a, int) {
  return load_scaler(a, /*standard=*/false);
}

Result<SklearnStage> build_standard_scaler(const Attrs& a, int) {
  return load_scaler(a, /*standard=*/true);
}

Result<SklearnStage> build_min_max_scaler(const Attrs& a, int) {
  SKLEARN_TRY(const Value* sv, a.need("scale_"));
  SKLEARN_TRY(const std::vector<double> scale, vector_of(*sv, a.where("scale_"), -1));
  const auto n = static_cast<std::int64_t>(scale.size());
  SKLEARN_TRY(const Value* mv, a.need("min_"));
  SKLEARN_TRY(const std::vector<double> min, vector_of(*mv, a.where("min_"), n));
  SKLEARN_CHECK(feature_count(a, n).status());
  std::optional<std::pair<double, double>> clip;
  SKLEARN_TRY(const bool clipped, a.flag("clip", false));
  if (clipped) {
    SKLEARN_TRY(const Value* rv, a.need("feature_range"));
    const auto range = pickle::items(*rv);
    if (range.size() != 2) return refuse(a.where("feature_range") + " must be a pair");
    SKLEARN_TRY(const double lo, number_of(*range[0], a.where("feature_range")));
    SKLEARN_TRY(const double hi, number_of(*range[1], a.where("feature_range")));
    clip = std::make_pair(lo, hi);
  }
  return as_transform(
      std::make_unique<MinMaxTransform>(row_vector(scale), row_vector(min), clip));
}

Result<SklearnStage> build_polynomial_features(const Attrs& a, int) {
  std::int64_t min_degree = 0;
  std::int64_t max_degree = 0;
  if (a.find("_max_degree") != nullptr) {
    SKLEARN_TRY(min_degree, a.integer("_min_degree"));
    SKLEARN_TRY(max_degree, a.integer("_max_degree"));
  } else {
    SKLEARN_TRY(const Value* d, a.need("degree"));
    if (const auto range = pickle::items(*d); range.size() == 2) {
      SKLEARN_TRY(min_degree, integer_of(*range[0], a.where("degree")));
      SKLEARN_TRY(max_degree, integer_of(*range[1], a.where("degree")));
    } else {
      SKLEARN_TRY(max_degree, integer_of(*d, a.where("degree")));
    }
  }
  SKLEARN_TRY(const bool interaction_only, a.flag("interaction_only", false));
  SKLEARN_TRY(const bool include_bias, a.flag("include_bias", true));
  const Value* nv = a.find("n_features_in_");
  if (nv == nullptr) nv = a.find("n_input_features_");  // scikit-learn before 1.0
  if (nv == nullptr) return refuse("PolynomialFeatures has no n_features_in_ (is it fitted?)");
  SKLEARN_TRY(const std::int64_t n, integer_of(*nv, a.where("n_features_in_")));
  if (n <= 0 || n > 1024 || min_degree < 0 || max_degree < min_degree || max_degree > 16) {
    return refuse("PolynomialFeatures with " + std::to_string(n) + " features and degrees " +
                  std::to_string(min_degree) + ".." + std::to_string(max_degree) +
                  " is not supported");
  }
  std::vector<std::uint32_t> terms;
  std::vector<std::uint32_t> starts;
  SKLEARN_CHECK(
      polynomial_terms(n, min_degree, max_degree, interaction_only, include_bias, terms, starts));
  const auto outputs = static_cast<std::int64_t>(starts.size() - 1);
  if (const Value* nout = a.find("n_output_features_")) {
    SKLEARN_TRY(const std::int64_t expected, integer_of(*nout, a.where("n_output_features_")));
    if (expected != outputs) {
      return refuse("PolynomialFeatures says " + std::to_string(expected) +
                    " outputs, its parameters give " + std::to_string(outputs));
    }
  }
  if (outputs == 0) return refuse("PolynomialFeatures has no output");
  std::string text = "PolynomialFeatures(" + std::to_string(n) + "->" + std::to_string(outputs) +
                     ", degree " + (min_degree > 0 ? std::to_string(min_degree) + ".." : "") +
                     std::to_string(max_degree) + (interaction_only ? ", interaction only" : "") +
                     ")";
  return as_transform(std::make_unique<PolynomialTransform>(
      static_cast<Eigen::Index>(n), std::move(terms), std::move(starts), std::move(text)));
}

}  // namespace estimator::models::sklearn
