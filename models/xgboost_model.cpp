// SPDX-License-Identifier: Apache-2.0
#include "models/xgboost_model.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <new>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "models/tree_walk.h"

namespace estimator::models {

namespace {

using json::Json;
using json::Where;

// Bounds on what a file may ask for: far above any published model (Kepler's have 100
// trees of at most 127 nodes), low enough that a hostile file cannot make the loader
// allocate without bound or overflow the 32-bit node indices.
constexpr std::size_t kMaxTrees = std::size_t{1} << 20;
constexpr std::size_t kMaxNodes = std::size_t{1} << 26;  // over all trees
constexpr std::int64_t kMaxFeatures = std::int64_t{1} << 20;

// One node of the flattened forest, four to a cache line. Trees are laid out breadth
// first at load, so the two children of a node are adjacent and one index finds both.
struct Node {
  float value;                 // split threshold, or the leaf value for a leaf
  std::uint32_t feature;       // split feature (< num_feature); 0 for a leaf
  std::int32_t left;           // index in the forest of the left child; right is left + 1;
                               // -1 for a leaf
  std::uint32_t default_left;  // 1 when a missing value goes left
};
static_assert(sizeof(Node) == 16, "a node is 16 bytes");

// Requests carry doubles; XGBoost compares float32 (numpy's astype(np.float32) before
// the DMatrix). Magnitudes beyond float's range become +-infinity rather than relying on
// an out-of-range conversion; both compare the same against any finite threshold.
inline float feature_value(double x) {
  constexpr double kMax = std::numeric_limits<float>::max();
  if (x > kMax) return std::numeric_limits<float>::infinity();
  if (x < -kMax) return -std::numeric_limits<float>::infinity();
  return static_cast<float>(x);  // NaN stays NaN: a missing value
}

// XGBoost's split rule, the only place it is written: strictly less goes left, a missing
// value follows default_left. Returns the child to visit.
inline std::int32_t next_node(const Node& n, float x) {
  const bool go_left = std::isnan(x) ? n.default_left != 0 : x < n.value;
  return go_left ? n.left : n.left + 1;
}

enum class Link : std::uint8_t { kIdentity, kSigmoid };

// ---- the complete-tree form (models/xgboost_forest.h) ----------------------------------
//
// Kepler's models are 100 trees of depth <= 6 over 5 features, evaluated for up to
// thousands of rows per request. Walking them node by node costs a data-dependent branch
// per level that the CPU mispredicts about half the time. Instead each tree is padded at
// load to the complete tree of its depth (a leaf above the bottom becomes pass-through
// nodes whose two subtrees end in copies of it), so every row takes exactly `depth` steps
// with no branch, and the leaf is found by position; the steps vectorise over rows.
//
// Missing values: a row block is copied once, feature-major, into two columns per
// feature, one with NaN as -infinity and one with NaN as +infinity; a node reads the first
// when its default is left, the second otherwise. Thresholds are finite (checked at load),
// so -infinity always goes left and +infinity right, and for every other value both
// columns hold float(x) and `x < threshold` is XGBoost's float32 comparison exactly.

using xgboost::DenseForest;
using xgboost::DenseTree;
using xgboost::kBlockRows;
using xgboost::kMaxDenseDepth;

// Columns of the block copy: at most this many distinct split features (x2 for the two
// NaN columns), so that a block stays in L2 (256 x 2 x 128 x 4 bytes = 256 KiB at most;
// Kepler's 5 features take 5 KiB).
constexpr std::size_t kMaxDenseFeatures = 256;

// A SIMD evaluator follows one tree's levels for a handful of row registers, so with few
// rows it waits on each gather's latency, tree after tree: below this many rows in a block
// the scalar evaluator (same bits) is faster. Measured on Sapphire Rapids (docs/benchmarks.md
// "XGBoost evaluation"). An evaluator forced at load (tests) takes every block.
constexpr Eigen::Index kMinVectorRows = 16;

std::uint32_t tree_depth(const std::vector<Node>& nodes, std::int32_t root, std::uint32_t limit) {
  // Breadth first, stopping as soon as the depth passes `limit`.
  std::vector<std::int32_t> level{root}, next;
  std::uint32_t depth = 0;
  for (;;) {
    next.clear();
    for (const std::int32_t i : level) {
      const Node& n = nodes[static_cast<std::size_t>(i)];
      if (n.left >= 0) {
        next.push_back(n.left);
        next.push_back(n.left + 1);
      }
    }
    if (next.empty()) return depth;
    if (++depth > limit) return depth;
    level.swap(next);
  }
}

void fill_dense(const std::vector<Node>& nodes, std::int32_t src, std::uint32_t pos,
                std::uint32_t level, std::uint32_t depth, double weight,
                const std::vector<std::uint32_t>& column_of_feature, float* out_thresholds,
                std::int32_t* out_columns, double* out_leaves) {
  const Node& n = nodes[static_cast<std::size_t>(src)];
  if (level == depth) {
    out_leaves[pos - ((1U << depth) - 1)] = weight * static_cast<double>(n.value);
    return;
  }
  std::int32_t left = src;  // a leaf above the bottom: both ways lead to it
  if (n.left >= 0) {
    const std::uint32_t column =
        2 * column_of_feature[n.feature] + (n.default_left != 0 ? 0 : 1);
    out_thresholds[pos] = n.value;
    out_columns[pos] = static_cast<std::int32_t>(column * kBlockRows);
    left = n.left;
  }
  const std::int32_t right = n.left >= 0 ? n.left + 1 : src;
  fill_dense(nodes, left, 2 * pos + 1, level + 1, depth, weight, column_of_feature,
             out_thresholds, out_columns, out_leaves);
  fill_dense(nodes, right, 2 * pos + 2, level + 1, depth, weight, column_of_feature,
             out_thresholds, out_columns, out_leaves);
}

// The complete-tree form of a checked forest, or an empty one when a tree is deeper than
// kMaxDenseDepth or more than kMaxDenseFeatures features are split on (then predict walks
// the nodes).
DenseForest make_dense(const std::vector<Node>& nodes, const std::vector<std::int32_t>& roots,
                       const std::vector<double>& tree_weights) {
  DenseForest f;
  std::vector<std::uint32_t> depths;
  depths.reserve(roots.size());
  std::size_t total_nodes = 0;
  for (const std::int32_t root : roots) {
    const std::uint32_t d = tree_depth(nodes, root, kMaxDenseDepth);
    if (d > kMaxDenseDepth) return {};
    depths.push_back(d);
    total_nodes += (std::size_t{1} << d) - 1;
  }
  // Padding a sparse tree (a chain) multiplies its nodes; past this the node walk is the
  // better use of memory. Kepler's near-complete trees stay well under it.
  if (total_nodes > 4 * nodes.size() + (std::size_t{1} << 16)) return {};
  // Compact column numbers for the features splits use.
  std::vector<std::uint32_t> column_of_feature;
  for (const Node& n : nodes) {
    if (n.left < 0) continue;
    if (column_of_feature.size() <= n.feature) column_of_feature.resize(n.feature + 1, UINT32_MAX);
    if (column_of_feature[n.feature] == UINT32_MAX) {
      if (f.features.size() == kMaxDenseFeatures) return {};
      column_of_feature[n.feature] = static_cast<std::uint32_t>(f.features.size());
      f.features.push_back(n.feature);
    }
  }
  // Pass-through nodes keep threshold 0 and column 0: both ways lead to the same leaf.
  f.thresholds.assign(total_nodes + xgboost::kDensePadding, 0.0F);
  f.columns.assign(total_nodes + xgboost::kDensePadding, 0);
  f.leaves.resize(total_nodes + roots.size());
  f.trees.reserve(roots.size());
  std::uint32_t next_node = 0;
  std::uint32_t next_leaf = 0;
  for (std::size_t t = 0; t < roots.size(); ++t) {
    const std::uint32_t d = depths[t];
    f.trees.push_back(DenseTree{next_node, next_leaf, d});
    fill_dense(nodes, roots[t], 0, 0, d, tree_weights[t], column_of_feature,
               f.thresholds.data() + next_node, f.columns.data() + next_node,
               f.leaves.data() + next_leaf);
    next_node += (1U << d) - 1;
    next_leaf += 1U << d;
  }
  // What every evaluator relies on instead of checking per row (xgboost_forest.h): each
  // column offset plus a row stays inside the block. fill_dense cannot break it; a change
  // that did would send the forest to the node walk rather than read outside the block.
  const auto block_size = static_cast<std::int64_t>(2 * f.features.size()) * kBlockRows;
  for (const std::int32_t c : f.columns) {
    if (c < 0 || c + kBlockRows > std::max<std::int64_t>(block_size, kBlockRows)) return {};
  }
  return f;
}

class XGBoostRegressor final : public Regressor {
 public:
  XGBoostRegressor(std::vector<Node> nodes, std::vector<std::int32_t> roots,
                   std::vector<double> tree_weights, double base_margin, Link link,
                   Eigen::Index features, std::string description, xgboost::Isa isa,
                   bool forced)
      : nodes_(std::move(nodes)),
        roots_(std::move(roots)),
        tree_weights_(std::move(tree_weights)),
        dense_(make_dense(nodes_, roots_, tree_weights_)),
        add_forest_(xgboost::evaluator(isa)),
        min_vector_rows_(forced || isa == xgboost::Isa::kScalar ? 0 : kMinVectorRows),
        base_margin_(base_margin),
        link_(link),
        features_(features),
        description_(std::move(description)) {
    // The evaluator in use, for the load log and messages that name the model.
    const bool dense = !dense_.trees.empty() || roots_.empty();
    description_.insert(description_.size() - 1,
                        dense ? ", " + std::string(xgboost::isa_name(isa)) : ", node walk");
  }

  Eigen::Index inputs() const override { return features_; }

  void predict(const ConstRowsD& in, RowsD out, Scratch& scratch) const override {
    if (!dense_.trees.empty() || roots_.empty()) {
      predict_dense(in, out, scratch);
    } else {
      predict_nodes(in, out);
    }
  }

  std::string describe() const override { return description_; }

 private:
  // Blocks of rows x all trees: a block's margins and its column copy stay in L1 while
  // each tree's nodes serve the whole block. Each row still adds the trees in order: the
  // same sums as one row at a time.
  void predict_dense(const ConstRowsD& in, RowsD out, Scratch& scratch) const {
    const auto pairs = static_cast<Eigen::Index>(dense_.features.size());
    // The block is floats (2 x pairs columns of kBlockRows) in the storage of a scratch
    // matrix of doubles, half as many. Placement new[] into it has no array overhead
    // (C++20, CWG 2382) and leaves it uninitialized: each block writes the rows the
    // evaluators read, n rounded up to kVectorRows (xgboost_forest.h), those past n as 0.
    // (Zeroing the whole block instead cost a 1-row request of XgboostFitTrainer_1 about
    // 2.5 %: 3.61 against 3.52 us p10, three alternating runs of project_predict.)
    static_assert(kBlockRows % xgboost::kVectorRows == 0, "a block holds whole vectors");
    RowsD storage = scratch.matrix(kRegressorSlots, std::max<Eigen::Index>(pairs, 1), kBlockRows);
    float* const block = ::new (static_cast<void*>(storage.data()))
        float[static_cast<std::size_t>(2 * storage.size())];
    std::array<double, kBlockRows> margin{};
    constexpr float kInf = std::numeric_limits<float>::infinity();
    for (Eigen::Index r0 = 0; r0 < in.rows(); r0 += kBlockRows) {
      const Eigen::Index n = std::min<Eigen::Index>(kBlockRows, in.rows() - r0);
      const Eigen::Index vectors =
          (n + xgboost::kVectorRows - 1) / xgboost::kVectorRows * xgboost::kVectorRows;
      for (Eigen::Index j = 0; j < pairs; ++j) {
        float* const nan_left = block + 2 * j * kBlockRows;
        float* const nan_right = nan_left + kBlockRows;
        const Eigen::Index col = dense_.features[static_cast<std::size_t>(j)];
        for (Eigen::Index i = 0; i < n; ++i) {
          const float x = feature_value(in(r0 + i, col));
          const bool missing = std::isnan(x);
          nan_left[i] = missing ? -kInf : x;
          nan_right[i] = missing ? kInf : x;
        }
        std::fill(nan_left + n, nan_left + vectors, 0.0F);
        std::fill(nan_right + n, nan_right + vectors, 0.0F);
      }
      std::fill(margin.begin(), margin.begin() + vectors, base_margin_);
      (n >= min_vector_rows_ ? add_forest_ : xgboost::add_forest_scalar)(dense_, block,
                                                                        margin.data(), n);
      finish(margin.data(), r0, n, out);
    }
  }

  // The general walk, for forests make_dense declined (deep trees, many features).
  void predict_nodes(const ConstRowsD& in, RowsD out) const {
    std::array<double, kBlockRows> margin{};
    const Node* const nodes = nodes_.data();
    const auto child = [nodes](const Node& node, const double* x) {
      return nodes + next_node(node, feature_value(x[node.feature]));
    };
    for (Eigen::Index r0 = 0; r0 < in.rows(); r0 += kBlockRows) {
      const Eigen::Index n = std::min<Eigen::Index>(kBlockRows, in.rows() - r0);
      std::fill(margin.begin(), margin.end(), base_margin_);
      for (std::size_t t = 0; t < roots_.size(); ++t) {
        const double weight = tree_weights_[t];
        const Node* const root = nodes + roots_[t];
        for_each_leaf(root, in.data() + r0 * in.outerStride(), in.outerStride(), n, child,
                      [&margin, weight](std::ptrdiff_t i, const Node& leaf) {
                        margin[static_cast<std::size_t>(i)] +=
                            weight * static_cast<double>(leaf.value);
                      });
      }
      finish(margin.data(), r0, n, out);
    }
  }

  void finish(const double* margin, Eigen::Index r0, Eigen::Index n, RowsD& out) const {
    for (Eigen::Index i = 0; i < n; ++i) {
      const double m = margin[i];
      out(r0 + i, 0) = link_ == Link::kSigmoid ? 1.0 / (1.0 + std::exp(-m)) : m;
    }
  }

  std::vector<Node> nodes_;
  std::vector<std::int32_t> roots_;   // index of each tree's root in nodes_
  std::vector<double> tree_weights_;  // 1 for gbtree; weight_drop for dart
  DenseForest dense_;                 // empty when the forest is walked node by node
  xgboost::AddForest add_forest_;     // dense_'s evaluator, for the ISA chosen at load
  Eigen::Index min_vector_rows_;      // smaller blocks go to the scalar evaluator
  double base_margin_;
  Link link_;
  Eigen::Index features_;
  std::string description_;
};

std::string index_key(std::size_t i) { return "[" + std::to_string(i) + "]"; }

// learner_model_param values are strings ("5", "1.33632E2"); XGBoost 3 writes base_score
// as a one-element list "[1.33632E2]". A plain JSON number is accepted too.
Result<std::string> param_text(const Json& v, const Where& w) {
  if (v.is_number()) return v.dump();
  Result<std::string> s = json::string_value(v, w);
  if (!s.ok()) return s.status();
  const std::string& t = s.value();
  if (t.size() >= 2 && t.front() == '[' && t.back() == ']') return t.substr(1, t.size() - 2);
  return t;
}

Result<std::int64_t> int_param(const Json& v, const Where& w) {
  if (v.is_number_integer()) return v.get<std::int64_t>();
  Result<std::string> t = param_text(v, w);
  if (!t.ok()) return t.status();
  std::int64_t out = 0;
  const char* end = t->data() + t->size();
  const auto [ptr, ec] = std::from_chars(t->data(), end, out);
  if (ec != std::errc() || ptr != end) {
    return json::invalid(w, "expected an integer, got \"" + *t + "\"");
  }
  return out;
}

// XGBoost reads base_score as a float32; so do we, so that the margin starts where its own
// starts.
Result<float> float_param(const Json& v, const Where& w) {
  Result<std::string> t = param_text(v, w);
  if (!t.ok()) return t.status();
  float out = 0;
  const char* end = t->data() + t->size();
  const auto [ptr, ec] = std::from_chars(t->data(), end, out);
  if (ec != std::errc() || ptr != end) {
    return json::invalid(w, "expected a number, got \"" + *t + "\"");
  }
  if (!std::isfinite(out)) {
    return Status(Code::kInvalidValue, w.describe() + ": not a finite number");
  }
  return out;
}

Result<const Json*> array_member(const Json& obj, const Where& w, std::string_view key) {
  Result<const Json*> m = json::member(obj, w, key);
  if (!m.ok()) return m.status();
  if (!(*m)->is_array()) {
    return json::invalid(w / key, std::string("expected an array, got ") + (*m)->type_name());
  }
  return m;
}

struct RawTree {
  std::vector<std::int64_t> left;
  std::vector<std::int64_t> right;
  std::vector<std::int64_t> feature;
  std::vector<float> condition;
  std::vector<std::uint8_t> default_left;
};

Status int_array(const Json& tree, const Where& w, std::string_view key,
                 std::vector<std::int64_t>& out) {
  Result<const Json*> a = array_member(tree, w, key);
  if (!a.ok()) return a.status();
  out.reserve((*a)->size());
  for (std::size_t i = 0; i < (*a)->size(); ++i) {
    const Json& e = (**a)[i];
    if (!e.is_number_integer()) {
      return json::invalid(w / key / index_key(i),
                           std::string("expected an integer, got ") + e.type_name());
    }
    // An unsigned value too large for int64 is out of range for any use; keep it so.
    out.push_back(e.is_number_unsigned() && e.get<std::uint64_t>() > kMaxNodes
                      ? std::numeric_limits<std::int64_t>::max()
                      : e.get<std::int64_t>());
  }
  return Status::Ok();
}

Status parse_arrays(const Json& tree, const Where& w, RawTree& raw) {
  if (Status s = json::expect_object(tree, w); !s.ok()) return s;
  if (Status s = int_array(tree, w, "left_children", raw.left); !s.ok()) return s;
  if (Status s = int_array(tree, w, "right_children", raw.right); !s.ok()) return s;
  if (Status s = int_array(tree, w, "split_indices", raw.feature); !s.ok()) return s;

  Result<const Json*> conds = array_member(tree, w, "split_conditions");
  if (!conds.ok()) return conds.status();
  raw.condition.reserve((*conds)->size());
  for (std::size_t i = 0; i < (*conds)->size(); ++i) {
    const Where cw = w / "split_conditions" / index_key(i);
    Result<double> d = json::finite_number((**conds)[i], cw);
    if (!d.ok()) return d.status();
    const float f = static_cast<float>(std::clamp(*d, -1e300, 1e300));
    if (!std::isfinite(f)) {
      return Status(Code::kInvalidValue, cw.describe() + ": " + std::to_string(*d) +
                                             " does not fit a float32");
    }
    raw.condition.push_back(f);
  }

  Result<const Json*> dl = array_member(tree, w, "default_left");
  if (!dl.ok()) return dl.status();
  raw.default_left.reserve((*dl)->size());
  for (std::size_t i = 0; i < (*dl)->size(); ++i) {
    const Json& e = (**dl)[i];
    // XGBoost writes 0/1; true/false are accepted for other writers.
    if (e.is_boolean()) {
      raw.default_left.push_back(e.get<bool>() ? 1 : 0);
    } else if (e.is_number_integer() && (e.get<std::int64_t>() == 0 || e.get<std::int64_t>() == 1)) {
      raw.default_left.push_back(static_cast<std::uint8_t>(e.get<std::int64_t>()));
    } else {
      return json::invalid(w / "default_left" / index_key(i),
                           "expected 0, 1, true or false, got " + e.dump());
    }
  }

  const std::size_t n = raw.left.size();
  if (n == 0) return json::invalid(w / "left_children", "a tree needs at least one node");
  const std::pair<std::string_view, std::size_t> lengths[] = {
      {"right_children", raw.right.size()},
      {"split_indices", raw.feature.size()},
      {"split_conditions", raw.condition.size()},
      {"default_left", raw.default_left.size()}};
  for (const auto& [key, size] : lengths) {
    if (size != n) {
      return json::invalid(w / key, "has " + std::to_string(size) +
                                        " entries but left_children has " + std::to_string(n));
    }
  }
  if (const Json* tp = json::optional_member(tree, "tree_param")) {
    if (const Json* nn = json::optional_member(*tp, "num_nodes")) {
      Result<std::int64_t> count = int_param(*nn, w / "tree_param" / "num_nodes");
      if (!count.ok()) return count.status();
      if (*count != static_cast<std::int64_t>(n)) {
        return json::invalid(w / "tree_param" / "num_nodes",
                             "says " + std::to_string(*count) + " but the arrays have " +
                                 std::to_string(n) + " nodes");
      }
    }
    if (const Json* slv = json::optional_member(*tp, "size_leaf_vector")) {
      Result<std::int64_t> size = int_param(*slv, w / "tree_param" / "size_leaf_vector");
      if (!size.ok()) return size.status();
      if (*size > 1) {
        return json::invalid(w / "tree_param" / "size_leaf_vector",
                             "multi-target trees (vector leaves) are not supported");
      }
    }
  }
  if (const Json* st = json::optional_member(tree, "split_type")) {
    if (st->is_array()) {
      for (std::size_t i = 0; i < st->size(); ++i) {
        if ((*st)[i] != 0) {
          return json::invalid(w / "split_type" / index_key(i),
                               "categorical splits are not supported");
        }
      }
    }
  }
  return Status::Ok();
}

// Checks that `raw` is a binary tree rooted at node 0 (children in range, every node
// reached at most once, so no cycle and no shared subtree; unreachable nodes, such as
// pruned ones, are dropped) and appends it to `forest` breadth first, children adjacent.
Status flatten(const RawTree& raw, const Where& w, std::int64_t num_feature,
               std::vector<Node>& forest) {
  const auto n = static_cast<std::int64_t>(raw.left.size());
  if (forest.size() + raw.left.size() > kMaxNodes) {
    return json::invalid(w, "the model has more than " + std::to_string(kMaxNodes) +
                                " nodes in all");
  }
  std::vector<std::uint8_t> seen(raw.left.size(), 0);
  // queue[k] = the source node placed at forest position base + k.
  std::vector<std::int64_t> queue;
  queue.reserve(raw.left.size());
  queue.push_back(0);
  seen[0] = 1;
  const std::size_t base = forest.size();
  for (std::size_t k = 0; k < queue.size(); ++k) {
    const auto src = static_cast<std::size_t>(queue[k]);
    const std::int64_t l = raw.left[src];
    const std::int64_t r = raw.right[src];
    Node node{raw.condition[src], 0, -1, 0};
    if (l == -1) {
      if (r != -1) {
        return json::invalid(w / "right_children" / index_key(src),
                             "node " + std::to_string(src) +
                                 " is a leaf (left child -1) but has right child " +
                                 std::to_string(r));
      }
      forest.push_back(node);
      continue;
    }
    for (const auto& [key, child] : {std::pair{"left_children", l}, std::pair{"right_children", r}}) {
      if (child < 0 || child >= n) {
        return json::invalid(w / key / index_key(src),
                             "child " + std::to_string(child) + " of node " +
                                 std::to_string(src) + " is out of range (tree has " +
                                 std::to_string(n) + " nodes)");
      }
      if (seen[static_cast<std::size_t>(child)] != 0) {
        return json::invalid(w / key / index_key(src),
                             "node " + std::to_string(child) + " is reached twice (child of node " +
                                 std::to_string(src) +
                                 "): the nodes do not form a tree (cycle or shared child)");
      }
      seen[static_cast<std::size_t>(child)] = 1;
    }
    const std::int64_t f = raw.feature[src];
    if (f < 0 || f >= num_feature) {
      return json::invalid(w / "split_indices" / index_key(src),
                           "feature " + std::to_string(f) + " of node " + std::to_string(src) +
                               " is not below num_feature " + std::to_string(num_feature));
    }
    node.feature = static_cast<std::uint32_t>(f);
    node.default_left = raw.default_left[src];
    // Children are queued in pairs, so they land at adjacent positions.
    node.left = static_cast<std::int32_t>(base + queue.size());
    queue.push_back(l);
    queue.push_back(r);
    forest.push_back(node);
  }
  return Status::Ok();
}

struct Objective {
  Link link;
};

Result<Objective> objective_of(const std::string& name, const Where& w) {
  static constexpr std::array<std::string_view, 5> kIdentity = {
      "reg:squarederror", "reg:linear", "reg:squaredlogerror", "reg:pseudohubererror",
      "reg:absoluteerror"};
  static constexpr std::array<std::string_view, 2> kSigmoid = {"reg:logistic",
                                                                "binary:logistic"};
  if (std::find(kIdentity.begin(), kIdentity.end(), name) != kIdentity.end()) {
    return Objective{Link::kIdentity};
  }
  if (std::find(kSigmoid.begin(), kSigmoid.end(), name) != kSigmoid.end()) {
    return Objective{Link::kSigmoid};
  }
  std::string why = "objective \"" + name + "\" is not supported";
  if (name.starts_with("multi:")) {
    why += " (multi-class models are not supported)";
  } else {
    why += " (supported: reg:squarederror, reg:linear, reg:squaredlogerror, "
           "reg:pseudohubererror, reg:absoluteerror, reg:logistic, binary:logistic)";
  }
  return json::invalid(w, why);
}

}  // namespace

bool is_xgboost_document(const Json& doc) {
  const Json* learner = json::optional_member(doc, "learner");
  return learner != nullptr && json::optional_member(*learner, "gradient_booster") != nullptr;
}

xgboost::Isa default_xgboost_isa() {
  static const xgboost::Isa chosen = [] {
    const xgboost::Isa best = xgboost::best_isa();
    const char* const asked = std::getenv("ESTIMATOR_XGBOOST_ISA");
    if (asked == nullptr || *asked == '\0') return best;
    for (const xgboost::Isa isa :
         {xgboost::Isa::kScalar, xgboost::Isa::kAvx2, xgboost::Isa::kAvx512}) {
      if (xgboost::isa_name(isa) != asked) continue;
      if (xgboost::isa_supported(isa)) return isa;
      spdlog::warn("ESTIMATOR_XGBOOST_ISA={}: this CPU does not run it; using {}", asked,
                   xgboost::isa_name(best));
      return best;
    }
    spdlog::warn("ESTIMATOR_XGBOOST_ISA={}: not one of scalar, avx2, avx512; using {}", asked,
                 xgboost::isa_name(best));
    return best;
  }();
  return chosen;
}

Result<std::unique_ptr<Regressor>> load_xgboost_json(std::string_view text,
                                                     std::string_view file,
                                                     std::optional<xgboost::Isa> isa) {
  Result<Json> doc = json::parse(text, file);
  if (!doc.ok()) return doc.status();
  return load_xgboost_document(*doc, file, isa);
}

Result<std::unique_ptr<Regressor>> load_xgboost_document(const Json& doc,
                                                         std::string_view file,
                                                         std::optional<xgboost::Isa> isa) {
  if (isa && !xgboost::isa_supported(*isa)) {
    return Status(Code::kInvalidArgument,
                  std::string(file) + ": the " + std::string(xgboost::isa_name(*isa)) +
                      " evaluator was asked for but this CPU does not run it");
  }
  const Where root{std::string(file), ""};
  Result<const Json*> learner_j = json::member(doc, root, "learner");
  if (!learner_j.ok()) return learner_j.status();
  const Json& learner = **learner_j;
  const Where lw = root / "learner";

  // learner_model_param: what the model predicts and from how many features.
  Result<const Json*> mp_j = json::member(learner, lw, "learner_model_param");
  if (!mp_j.ok()) return mp_j.status();
  const Json& mp = **mp_j;
  const Where mpw = lw / "learner_model_param";
  if (Status s = json::expect_object(mp, mpw); !s.ok()) return s;

  Result<const Json*> nf_j = json::member(mp, mpw, "num_feature");
  if (!nf_j.ok()) return nf_j.status();
  Result<std::int64_t> num_feature = int_param(**nf_j, mpw / "num_feature");
  if (!num_feature.ok()) return num_feature.status();
  if (*num_feature < 1 || *num_feature > kMaxFeatures) {
    return json::invalid(mpw / "num_feature", "must be between 1 and " +
                                                  std::to_string(kMaxFeatures) + ", got " +
                                                  std::to_string(*num_feature));
  }
  if (const Json* nc = json::optional_member(mp, "num_class")) {
    Result<std::int64_t> classes = int_param(*nc, mpw / "num_class");
    if (!classes.ok()) return classes.status();
    if (*classes > 1) {
      return json::invalid(mpw / "num_class", "multi-class models (" + std::to_string(*classes) +
                                                  " classes) are not supported");
    }
  }
  if (const Json* nt = json::optional_member(mp, "num_target")) {
    Result<std::int64_t> targets = int_param(*nt, mpw / "num_target");
    if (!targets.ok()) return targets.status();
    if (*targets > 1) {
      return json::invalid(mpw / "num_target", "multi-output models (" +
                                                   std::to_string(*targets) +
                                                   " targets) are not supported");
    }
  }
  Result<const Json*> bs_j = json::member(mp, mpw, "base_score");
  if (!bs_j.ok()) return bs_j.status();
  Result<float> base_score = float_param(**bs_j, mpw / "base_score");
  if (!base_score.ok()) return base_score.status();

  if (const Json* types = json::optional_member(learner, "feature_types")) {
    if (types->is_array()) {
      for (std::size_t i = 0; i < types->size(); ++i) {
        if ((*types)[i] == "c") {
          return json::invalid(lw / "feature_types" / index_key(i),
                               "categorical features are not supported");
        }
      }
    }
  }

  // objective: decides the link.
  Result<const Json*> obj_j = json::member(learner, lw, "objective");
  if (!obj_j.ok()) return obj_j.status();
  Result<const Json*> on_j = json::member(**obj_j, lw / "objective", "name");
  if (!on_j.ok()) return on_j.status();
  Result<std::string> obj_name = json::string_value(**on_j, lw / "objective" / "name");
  if (!obj_name.ok()) return obj_name.status();
  Result<Objective> objective = objective_of(*obj_name, lw / "objective" / "name");
  if (!objective.ok()) return objective.status();

  double base_margin = *base_score;
  if (objective->link == Link::kSigmoid) {
    if (!(*base_score > 0.0F && *base_score < 1.0F)) {
      return json::invalid(mpw / "base_score",
                           "must be a probability strictly between 0 and 1 for " + *obj_name +
                               ", got " + std::to_string(*base_score));
    }
    // XGBoost's ProbToMargin for the logistic objectives, in float as it computes it.
    base_margin = -std::log(1.0F / *base_score - 1.0F);
  }

  // gradient_booster: gbtree holds the trees in "model"; dart wraps a gbtree and adds
  // one weight per tree.
  Result<const Json*> gb_j = json::member(learner, lw, "gradient_booster");
  if (!gb_j.ok()) return gb_j.status();
  const Where gbw = lw / "gradient_booster";
  Result<const Json*> gbn_j = json::member(**gb_j, gbw, "name");
  if (!gbn_j.ok()) return gbn_j.status();
  Result<std::string> booster = json::string_value(**gbn_j, gbw / "name");
  if (!booster.ok()) return booster.status();

  const Json* gbtree = nullptr;
  Where tw = gbw;
  const Json* weight_drop = nullptr;
  if (*booster == "gbtree") {
    gbtree = *gb_j;
  } else if (*booster == "dart") {
    Result<const Json*> inner = json::member(**gb_j, gbw, "gbtree");
    if (!inner.ok()) return inner.status();
    gbtree = *inner;
    tw = gbw / "gbtree";
    Result<const Json*> wd = array_member(**gb_j, gbw, "weight_drop");
    if (!wd.ok()) return wd.status();
    weight_drop = *wd;
  } else {
    return json::invalid(gbw / "name", "booster \"" + *booster +
                                           "\" is not supported (supported: gbtree, dart)");
  }
  Result<const Json*> model_j = json::member(*gbtree, tw, "model");
  if (!model_j.ok()) return model_j.status();
  const Where mw = tw / "model";
  Result<const Json*> trees_j = array_member(**model_j, mw, "trees");
  if (!trees_j.ok()) return trees_j.status();
  const Json& trees = **trees_j;
  const Where trw = mw / "trees";
  if (trees.size() > kMaxTrees) {
    return json::invalid(trw, "has " + std::to_string(trees.size()) + " trees, more than " +
                                  std::to_string(kMaxTrees));
  }

  if (const Json* gmp = json::optional_member(**model_j, "gbtree_model_param")) {
    if (const Json* nt = json::optional_member(*gmp, "num_trees")) {
      Result<std::int64_t> count = int_param(*nt, mw / "gbtree_model_param" / "num_trees");
      if (!count.ok()) return count.status();
      if (*count != static_cast<std::int64_t>(trees.size())) {
        return json::invalid(mw / "gbtree_model_param" / "num_trees",
                             "says " + std::to_string(*count) + " but trees has " +
                                 std::to_string(trees.size()));
      }
    }
  }
  // tree_info[t] is the output group of tree t: all 0 for one output.
  if (const Json* info = json::optional_member(**model_j, "tree_info")) {
    if (!info->is_array() || info->size() != trees.size()) {
      return json::invalid(mw / "tree_info", "must be an array with one entry per tree (" +
                                                 std::to_string(trees.size()) + ")");
    }
    for (std::size_t i = 0; i < info->size(); ++i) {
      if ((*info)[i] != 0) {
        return json::invalid(mw / "tree_info" / index_key(i),
                             "trees of several output groups (multi-class or multi-output) "
                             "are not supported");
      }
    }
  }

  std::vector<double> tree_weights(trees.size(), 1.0);
  if (weight_drop != nullptr) {
    if (weight_drop->size() != trees.size()) {
      return json::invalid(gbw / "weight_drop", "has " + std::to_string(weight_drop->size()) +
                                                    " entries for " +
                                                    std::to_string(trees.size()) + " trees");
    }
    for (std::size_t i = 0; i < trees.size(); ++i) {
      Result<double> wgt = json::finite_number((*weight_drop)[i],
                                               gbw / "weight_drop" / index_key(i));
      if (!wgt.ok()) return wgt.status();
      // XGBoost keeps the weights as float32.
      tree_weights[i] = static_cast<float>(std::clamp(*wgt, -1e30, 1e30));
    }
  }

  std::vector<Node> nodes;
  std::vector<std::int32_t> roots;
  roots.reserve(trees.size());
  for (std::size_t t = 0; t < trees.size(); ++t) {
    const Where w = trw / index_key(t);
    RawTree raw;
    if (Status s = parse_arrays(trees[t], w, raw); !s.ok()) return s;
    roots.push_back(static_cast<std::int32_t>(nodes.size()));
    if (Status s = flatten(raw, w, *num_feature, nodes); !s.ok()) return s;
  }
  nodes.shrink_to_fit();

  if (const Json* attrs = json::optional_member(learner, "attributes")) {
    if (json::optional_member(*attrs, "best_iteration") != nullptr) {
      // XGBoosterPredict (and Booster.predict) use every tree; only scikit-learn's
      // XGBRegressor.predict stops at best_iteration. We follow the library.
      spdlog::debug("{}: has best_iteration; all {} trees are used, as XGBoosterPredict does",
                    file, trees.size());
    }
  }

  std::string description = "XGBoost(" + *booster + ", " + std::to_string(trees.size()) +
                            " trees, " + std::to_string(*num_feature) + " features, " +
                            *obj_name + ")";
  auto regressor = std::make_unique<XGBoostRegressor>(
      std::move(nodes), std::move(roots), std::move(tree_weights), base_margin,
      objective->link, static_cast<Eigen::Index>(*num_feature), std::move(description),
      isa.value_or(default_xgboost_isa()), isa.has_value());
  spdlog::debug("{}: {}", file, regressor->describe());
  return std::unique_ptr<Regressor>(std::move(regressor));
}

}  // namespace estimator::models
