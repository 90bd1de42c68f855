// SPDX-License-Identifier: Apache-2.0
// scikit-learn's KNeighborsRegressor, replaying its KD-tree search so that ties among
// equidistant neighbours are broken as sklearn breaks them (models/sklearn_model.h).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "models/shape_text.h"
#include "models/sklearn_estimators.h"

namespace estimator::models::sklearn {

namespace {

using pickle::Array;
using pickle::Object;
using pickle::Value;

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
Result<KdTree> load_kd_tree(const Value& tv, const RowMatrixD& fit_x) {
  const Object* o = tv.as<Object>();
  if (o == nullptr)
    return refuse("KNeighborsRegressor._tree must be a KDTree, got " + pickle::describe(tv));
  const auto state = o->state != nullptr ? pickle::items(*o->state) : std::span<Value* const>{};
  if (state.size() < 4) return refuse("KNeighborsRegressor._tree has no KD-tree state");
  const std::string what = "KNeighborsRegressor._tree";
  SKLEARN_TRY(const Tensor data, tensor(*state[0], what + ".data"));
  const auto n = static_cast<std::int64_t>(fit_x.rows());
  const auto nf = static_cast<std::int64_t>(fit_x.cols());
  if (data.shape != std::vector<std::int64_t>{n, nf})
    return refuse(what + ".data has shape " + shape_text(data.shape));
  for (std::size_t i = 0; i < data.values.size(); ++i) {
    if (data.values[i] != fit_x.data()[i]) return refuse(what + ".data differs from _fit_X");
  }
  KdTree t;
  SKLEARN_TRY(t.idx_array, ints_of(*state[1], what + ".idx_array"));
  if (static_cast<std::int64_t>(t.idx_array.size()) != n)
    return refuse(what + ".idx_array has the wrong length");
  std::vector<bool> seen(static_cast<std::size_t>(n), false);
  for (std::int64_t j : t.idx_array) {
    if (j < 0 || j >= n || seen[static_cast<std::size_t>(j)])
      return refuse(what + ".idx_array is not a permutation");
    seen[static_cast<std::size_t>(j)] = true;
  }
  SKLEARN_TRY(const Array* nd, array_of(*state[2], what + ".node_data"));
  const std::int64_t nodes = nd->count();
  if (nd->shape.size() != 1 || nodes < 1 || nodes > 2 * n + 1)
    return refuse(what + ".node_data has shape " + shape_text(nd->shape));
  SKLEARN_TRY(t.start, pickle::field_ints(*nd, "idx_start", what + ".node_data"));
  SKLEARN_TRY(t.end, pickle::field_ints(*nd, "idx_end", what + ".node_data"));
  SKLEARN_TRY(const std::vector<std::int64_t> leaf,
              pickle::field_ints(*nd, "is_leaf", what + ".node_data"));
  SKLEARN_TRY(const Tensor bounds, tensor(*state[3], what + ".node_bounds"));
  if (bounds.shape != std::vector<std::int64_t>{2, nodes, nf})
    return refuse(what + ".node_bounds has shape " + shape_text(bounds.shape));
  const auto half = static_cast<std::size_t>(nodes * nf);
  t.lower.assign(bounds.values.begin(), bounds.values.begin() + static_cast<std::ptrdiff_t>(half));
  t.upper.assign(bounds.values.begin() + static_cast<std::ptrdiff_t>(half), bounds.values.end());
  std::size_t depth = 0;
  for (std::int64_t i = 0; i < nodes; ++i) {
    const auto u = static_cast<std::size_t>(i);
    if (t.start[u] < 0 || t.start[u] > t.end[u] || t.end[u] > n)
      return refuse(what + " node " + std::to_string(i) + " has a bad index range");
    const bool is_leaf = leaf[u] != 0;
    if (!is_leaf && 2 * i + 2 >= nodes)
      return refuse(what + " node " + std::to_string(i) + " has no children");
    t.leaf.push_back(is_leaf);
    std::size_t d = 0;
    for (std::int64_t p = i; p > 0; p = (p - 1) / 2) ++d;
    depth = std::max(depth, d);
  }
  t.max_stack = depth + 2;  // one pending sibling per level, plus the node in hand
  return t;
}

Result<KNeighborsRegressor::Metric> metric_of(const Attrs& a) {
  std::string metric_name;
  if (a.find("effective_metric_") != nullptr) {
    SKLEARN_TRY(metric_name, a.text("effective_metric_"));
  } else {
    SKLEARN_TRY(metric_name, a.text("metric"));
  }
  if (metric_name == "minkowski") {
    double p = 2;
    const Value* params = a.find("effective_metric_params_");
    const Value* pv = params != nullptr && params->as<pickle::Dict>() != nullptr
                          ? params->as<pickle::Dict>()->find("p")
                          : nullptr;
    if (pv == nullptr) pv = a.find("p");
    if (pv != nullptr && pv->kind() != pickle::Kind::kNone) {
      SKLEARN_TRY(p, number_of(*pv, "KNeighborsRegressor p"));
    }
    if (p == 2) metric_name = "euclidean";
    if (p == 1) metric_name = "manhattan";
  }
  if (metric_name == "euclidean" || metric_name == "l2")
    return KNeighborsRegressor::Metric::kEuclidean;
  if (metric_name == "manhattan" || metric_name == "l1" || metric_name == "cityblock")
    return KNeighborsRegressor::Metric::kManhattan;
  return refuse("KNeighborsRegressor metric '" + metric_name +
                "' is not supported (euclidean, manhattan)");
}

}  // namespace

Result<SklearnStage> build_k_neighbors(const Attrs& a, int) {
  SKLEARN_TRY(const std::int64_t k, a.integer("n_neighbors"));
  SKLEARN_TRY(const Value* wv, a.need("weights"));
  std::string weights = "uniform";
  if (wv->kind() != pickle::Kind::kNone) {
    SKLEARN_TRY(weights, a.text("weights"));
  }
  if (weights != "uniform" && weights != "distance")
    return refuse("KNeighborsRegressor weights '" + weights + "' is not supported");
  SKLEARN_TRY(const KNeighborsRegressor::Metric metric, metric_of(a));

  SKLEARN_TRY(const Tensor x, a.tensor("_fit_X"));
  if (x.shape.size() != 2 || x.shape[0] < 1)
    return refuse(a.where("_fit_X") + " has shape " + shape_text(x.shape));
  SKLEARN_TRY(const Eigen::Index features, feature_count(a, x.shape[1]));
  SKLEARN_TRY(const Tensor y, a.tensor("_y"));
  if (!(y.shape.size() == 1 || (y.shape.size() == 2 && y.shape[1] == 1)) ||
      y.shape[0] != x.shape[0]) {
    return refuse(a.where("_y") + " has shape " + shape_text(y.shape) + " for " +
                  std::to_string(x.shape[0]) + " training rows (one output supported)");
  }
  if (k < 1 || k > x.shape[0]) {
    return refuse("KNeighborsRegressor n_neighbors " + std::to_string(k) + " with " +
                  std::to_string(x.shape[0]) + " training rows");
  }
  RowMatrixD data(static_cast<Eigen::Index>(x.shape[0]), features);
  std::copy(x.values.begin(), x.values.end(), data.data());

  std::string method = "brute";
  if (a.find("_fit_method") != nullptr) {
    SKLEARN_TRY(method, a.text("_fit_method"));
  }
  std::optional<KdTree> tree;
  if (method == "kd_tree") {
    SKLEARN_TRY(const Value* tv, a.need("_tree"));
    SKLEARN_TRY(tree, load_kd_tree(*tv, data));
  } else if (method != "brute" && method != "ball_tree") {
    return refuse("KNeighborsRegressor _fit_method '" + method + "' is not supported");
  }
  return as_regressor(std::make_unique<KNeighborsRegressor>(
      std::move(data), y.values, static_cast<std::size_t>(k), weights == "distance", metric,
      std::move(tree), method));
}

}  // namespace estimator::models::sklearn
