// SPDX-License-Identifier: Apache-2.0
// scikit-learn's tree models: DecisionTreeRegressor (its leaf), RandomForestRegressor and
// ExtraTreesRegressor (the mean of their trees' leaves), GradientBoostingRegressor (init +
// learning_rate * the sum of its trees' leaves). Every tree is flattened into one node
// array and walked with the comparison sklearn uses (float32(x) <= threshold in double).
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
#include "models/tree_walk.h"

namespace estimator::models::sklearn {

namespace {

using pickle::Array;
using pickle::Object;
using pickle::Value;

// One node of the flattened trees: internal when left >= 0. A leaf's `right` is the
// offset of its outputs() values in TreeEnsemble::leaf_values_, already multiplied by the
// ensemble's per-tree scale (GradientBoosting's learning_rate), the product sklearn adds.
struct TreeNode {
  std::int32_t feature;
  std::int32_t left;  // absolute index in nodes_, -1 for a leaf
  std::int32_t right;
  bool missing_left;  // where NaN goes: sklearn >= 1.3's missing_go_to_left, else right
  double threshold;
};

// The one comparison every tree walk uses: sklearn casts X to float32 for trees, then
// compares the float32 value (promoted) with the float64 threshold, going left on <=.
// NaN fails the comparison, so it goes right unless the node says otherwise.
inline bool goes_left(const TreeNode& n, double x) {
  if (std::isnan(x)) return n.missing_left;
  return static_cast<double>(static_cast<float>(x)) <= n.threshold;
}

// base + sum over trees of the leaf each row reaches, divided by `divisor` at the end
// (1 for boosting; the tree count for forests, which average as sklearn does: sum the
// trees' predictions in float64, then divide once).
class TreeEnsemble final : public Regressor {
 public:
  TreeEnsemble(std::string name, Eigen::Index inputs, Eigen::RowVectorXd base, double divisor,
               std::vector<TreeNode> nodes, std::vector<double> leaf_values,
               std::vector<std::int32_t> roots)
      : name_(std::move(name)),
        inputs_(inputs),
        base_(std::move(base)),
        divisor_(divisor),
        nodes_(std::move(nodes)),
        leaf_values_(std::move(leaf_values)),
        roots_(std::move(roots)) {}

  Eigen::Index inputs() const override { return inputs_; }
  Eigen::Index outputs() const override { return base_.size(); }
  void predict(const ConstRowsD& in, RowsD out, Scratch&) const override {
    out.rowwise() = base_;
    const TreeNode* const nodes = nodes_.data();
    const double* const values = leaf_values_.data();
    const Eigen::Index k = base_.size();
    const auto child = [nodes](const TreeNode& n, const double* x) {
      return nodes + (goes_left(n, x[n.feature]) ? n.left : n.right);
    };
    // Tree after tree, as sklearn accumulates.
    for (std::int32_t root : roots_) {
      for_each_leaf(nodes + root, in.data(), in.outerStride(), in.rows(), child,
                    [&out, values, k](std::ptrdiff_t r, const TreeNode& leaf) {
                      const double* v = values + leaf.right;
                      for (Eigen::Index j = 0; j < k; ++j) out(r, j) += v[j];
                    });
    }
    if (divisor_ != 1.0) out /= divisor_;
  }
  std::string describe() const override {
    return name_ + "(" + std::to_string(roots_.size()) + " trees, " +
           std::to_string(nodes_.size()) + " nodes" +
           (base_.size() > 1 ? ", " + std::to_string(base_.size()) + " outputs" : "") + ")";
  }

 private:
  std::string name_;
  Eigen::Index inputs_;
  Eigen::RowVectorXd base_;
  double divisor_;
  std::vector<TreeNode> nodes_;
  std::vector<double> leaf_values_;
  std::vector<std::int32_t> roots_;
};

// The trees of one ensemble, flattened.
struct Forest {
  std::vector<TreeNode> nodes;
  std::vector<double> leaf_values;
  std::vector<std::int32_t> roots;
};

// n_features of a fitted tree estimator's Tree (its first constructor argument), or -1.
std::int64_t tree_features(const Value& estimator) {
  const Object* e = estimator.as<Object>();
  const Value* tv = e != nullptr ? e->attr("tree_") : nullptr;
  const Object* t = tv != nullptr ? tv->as<Object>() : nullptr;
  if (t == nullptr || t->args == nullptr || pickle::items(*t->args).empty()) return -1;
  return pickle::as_int(*pickle::items(*t->args)[0]).value_or(-1);
}

// Appends one sklearn.tree._tree.Tree of `outputs` outputs to `forest`, its leaf values
// multiplied by `scale`.
Status append_tree(const Value& tv, const std::string& what, Eigen::Index features,
                   std::int64_t outputs, double scale, Forest& forest) {
  const Object* t = tv.as<Object>();
  if (t == nullptr || t->name != "Tree")
    return refuse(what + " must be a sklearn Tree, got " + pickle::describe(tv));
  const Attrs a(*t);
  const auto args = t->args != nullptr ? pickle::items(*t->args) : std::span<Value* const>{};
  if (args.size() >= 3) {
    SKLEARN_TRY(const std::int64_t nf, integer_of(*args[0], what + " n_features"));
    SKLEARN_TRY(const std::int64_t no, integer_of(*args[2], what + " n_outputs"));
    if (nf != features)
      return refuse(what + " has " + std::to_string(nf) + " features, the model " +
                    std::to_string(features));
    if (no != outputs)
      return refuse(what + " has " + std::to_string(no) + " outputs, the model " +
                    std::to_string(outputs));
  }
  SKLEARN_TRY(const Value* nv, a.need("nodes"));
  SKLEARN_TRY(const Array* na, array_of(*nv, what + ".nodes"));
  const std::int64_t count = na->count();
  if (na->shape.size() != 1 || count < 1 || count > (1 << 24))
    return refuse(what + ".nodes has shape " + shape_text(na->shape));
  if (const Value* nc = a.find("node_count")) {
    SKLEARN_TRY(const std::int64_t declared, integer_of(*nc, what + ".node_count"));
    if (declared != count) return refuse(what + ".node_count disagrees with its nodes array");
  }
  const std::string nodes_what = what + ".nodes";
  SKLEARN_TRY(const std::vector<std::int64_t> left,
              pickle::field_ints(*na, "left_child", nodes_what));
  SKLEARN_TRY(const std::vector<std::int64_t> right,
              pickle::field_ints(*na, "right_child", nodes_what));
  SKLEARN_TRY(const std::vector<std::int64_t> feature,
              pickle::field_ints(*na, "feature", nodes_what));
  SKLEARN_TRY(const std::vector<double> threshold,
              pickle::field_doubles(*na, "threshold", nodes_what));
  // scikit-learn 1.3 added missing_go_to_left; older trees send NaN right.
  std::vector<std::int64_t> missing_left(static_cast<std::size_t>(count), 0);
  if (na->type().field("missing_go_to_left") != nullptr) {
    SKLEARN_TRY(missing_left, pickle::field_ints(*na, "missing_go_to_left", nodes_what));
  }

  SKLEARN_TRY(const Tensor values, a.tensor("values", /*finite=*/false));
  // (node_count, n_outputs, 1): a regression tree has one "class" per output.
  const bool shaped = values.shape.size() == 3 && values.shape[0] == count &&
                      values.shape[1] == outputs && values.shape[2] == 1;
  if (!shaped) {
    return refuse(what + ".values has shape " + shape_text(values.shape) + " for " +
                  std::to_string(count) + " nodes and " + std::to_string(outputs) +
                  " outputs (expected (" + std::to_string(count) + ", " +
                  std::to_string(outputs) + ", 1))");
  }

  const auto base = static_cast<std::int64_t>(forest.nodes.size());
  if (base + count > std::numeric_limits<std::int32_t>::max() ||
      static_cast<std::int64_t>(forest.leaf_values.size()) + count * outputs >
          std::numeric_limits<std::int32_t>::max()) {
    return refuse(what + ": too many tree nodes in the model");
  }
  for (std::int64_t i = 0; i < count; ++i) {
    const auto u = static_cast<std::size_t>(i);
    const std::string node = what + " node " + std::to_string(i);
    if (left[u] == -1) {
      if (right[u] != -1) return refuse(node + " has one child");
      const auto offset = static_cast<std::int32_t>(forest.leaf_values.size());
      for (std::int64_t k = 0; k < outputs; ++k) {
        const double v = values.values[static_cast<std::size_t>(i * outputs + k)];
        if (!std::isfinite(v)) return refuse(node + " has a value that is not finite");
        forest.leaf_values.push_back(scale * v);
      }
      forest.nodes.push_back(TreeNode{0, -1, offset, false, 0.0});
      continue;
    }
    // Children come after their parent (sklearn's builders append them), so every walk
    // ends: no cycles can be expressed.
    if (left[u] <= i || left[u] >= count || right[u] <= i || right[u] >= count) {
      return refuse(node + " has children " + std::to_string(left[u]) + ", " +
                    std::to_string(right[u]) + " outside " + std::to_string(i + 1) + ".." +
                    std::to_string(count - 1));
    }
    if (feature[u] < 0 || feature[u] >= features)
      return refuse(node + " splits on feature " + std::to_string(feature[u]));
    if (std::isnan(threshold[u])) return refuse(node + " has a NaN threshold");
    forest.nodes.push_back(TreeNode{static_cast<std::int32_t>(feature[u]),
                                    static_cast<std::int32_t>(base + left[u]),
                                    static_cast<std::int32_t>(base + right[u]),
                                    missing_left[u] != 0, threshold[u]});
  }
  forest.roots.push_back(static_cast<std::int32_t>(base));
  return Status::Ok();
}

// A fitted DecisionTreeRegressor (or ExtraTreeRegressor) inside an ensemble: its tree_.
Status append_estimator(const Value& ev, const std::string& what, Eigen::Index features,
                        std::int64_t outputs, double scale, Forest& forest) {
  const Object* e = ev.as<Object>();
  if (e == nullptr || (e->name != "DecisionTreeRegressor" && e->name != "ExtraTreeRegressor")) {
    return refuse(what + " must be a DecisionTreeRegressor, got " + pickle::describe(ev));
  }
  const Attrs ea(*e);
  SKLEARN_TRY(const Value* tv, ea.need("tree_"));
  return append_tree(*tv, what + ".tree_", features, outputs, scale, forest);
}

// n_outputs_ of a tree or forest: 1..1024.
Result<std::int64_t> output_count(const Attrs& a) {
  std::int64_t outputs = 1;
  if (a.find("n_outputs_") != nullptr) {
    SKLEARN_TRY(outputs, a.integer("n_outputs_"));
  }
  if (outputs < 1 || outputs > 1024)
    return refuse(a.where("n_outputs_") + " is " + std::to_string(outputs));
  return outputs;
}

}  // namespace

Result<SklearnStage> build_decision_tree(const Attrs& a, int) {
  SKLEARN_TRY(const std::int64_t outputs, output_count(a));
  SKLEARN_TRY(const Value* tv, a.need("tree_"));
  std::int64_t from_tree = -1;
  if (const Object* t = tv->as<Object>(); t != nullptr && t->args != nullptr &&
                                          !pickle::items(*t->args).empty()) {
    from_tree = pickle::as_int(*pickle::items(*t->args)[0]).value_or(-1);
  }
  SKLEARN_TRY(const Eigen::Index features, feature_count(a, from_tree));
  Forest forest;
  SKLEARN_CHECK(append_tree(*tv, a.where("tree_"), features, outputs, 1.0, forest));
  return as_regressor(std::make_unique<TreeEnsemble>(
      a.cls(), features, Eigen::RowVectorXd::Zero(static_cast<Eigen::Index>(outputs)), 1.0,
      std::move(forest.nodes), std::move(forest.leaf_values), std::move(forest.roots)));
}

Result<SklearnStage> build_forest(const Attrs& a, int) {
  SKLEARN_TRY(const std::int64_t outputs, output_count(a));
  SKLEARN_TRY(const Value* ev, a.need("estimators_"));
  const std::span<Value* const> trees = pickle::items(*ev);
  if (trees.empty()) {
    return refuse(a.where("estimators_") + " must be a non-empty list of trees, got " +
                  pickle::describe(*ev));
  }
  SKLEARN_TRY(const Eigen::Index features, feature_count(a, tree_features(*trees[0])));
  Forest forest;
  for (std::size_t i = 0; i < trees.size(); ++i) {
    const std::string what = a.where("estimators_") + "[" + std::to_string(i) + "]";
    SKLEARN_CHECK(append_estimator(*trees[i], what, features, outputs, 1.0, forest));
  }
  return as_regressor(std::make_unique<TreeEnsemble>(
      a.cls(), features, Eigen::RowVectorXd::Zero(static_cast<Eigen::Index>(outputs)),
      static_cast<double>(trees.size()), std::move(forest.nodes), std::move(forest.leaf_values),
      std::move(forest.roots)));
}

Result<SklearnStage> build_gradient_boosting(const Attrs& a, int) {
  SKLEARN_TRY(const double lr, a.number("learning_rate"));
  double init = 0;
  SKLEARN_TRY(const Value* iv, a.need("init_"));
  if (const std::optional<std::string_view> s = pickle::as_str(*iv)) {
    if (*s != "zero") return refuse(a.where("init_") + " is '" + std::string(*s) + "'");
  } else {
    const Object* io = iv->as<Object>();
    if (io == nullptr || io->name != "DummyRegressor") {
      return refuse(a.where("init_") + " is " + pickle::describe(*iv) +
                    "; only DummyRegressor or 'zero' is supported");
    }
    const Attrs ia(*io);
    SKLEARN_TRY(const std::vector<double> c, ia.vector("constant_", -1));
    if (c.size() != 1) {
      return refuse(ia.where("constant_") + " has " + std::to_string(c.size()) +
                    " values; 1 expected");
    }
    init = c[0];
  }

  SKLEARN_TRY(const Value* ev, a.need("estimators_"));
  SKLEARN_TRY(const Array* est, array_of(*ev, a.where("estimators_")));
  if (!est->type().is_object() || est->shape.size() != 2 || est->shape[1] != 1 ||
      est->shape[0] < 1) {
    return refuse(a.where("estimators_") + " must be an object array of shape (n, 1), got " +
                  pickle::describe(*ev));
  }
  SKLEARN_TRY(const Eigen::Index features, feature_count(a, tree_features(*est->objects[0])));
  Forest forest;
  for (std::size_t i = 0; i < est->objects.size(); ++i) {
    const std::string what = a.where("estimators_") + "[" + std::to_string(i) + "]";
    SKLEARN_CHECK(append_estimator(*est->objects[i], what, features, 1, lr, forest));
  }
  return as_regressor(std::make_unique<TreeEnsemble>(
      a.cls(), features, Eigen::RowVectorXd::Constant(1, init), 1.0, std::move(forest.nodes),
      std::move(forest.leaf_values), std::move(forest.roots)));
}

}  // namespace estimator::models::sklearn
