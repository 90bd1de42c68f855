// SPDX-License-Identifier: Apache-2.0
// The complete-tree form of an XGBoost forest and its evaluators: one scalar (the
// reference, and the fallback on any CPU) and one per instruction set, chosen once at load.
//
// Each tree is padded at load to the complete tree of its depth D <= kMaxDenseDepth, so
// every row takes exactly D steps of `j = 2j + (x >= threshold)`, where j is the node's
// position within its level, and ends at leaf j. A block of up to kBlockRows rows is first
// copied, feature-major, into two columns per split feature (the caller's job, see
// xgboost_model.cpp): one with NaN as -infinity (read by nodes whose missing value goes
// left) and one with NaN as +infinity. Thresholds are finite, so the copy turns XGBoost's
// split rule into a plain float32 `x < threshold`, XGBoost's own comparison. Leaves are
// doubles (weight x value, the dart weight included) and so are the sums.
//
//   thresholds / columns, per tree, level by level (the complete tree of depth 3):
//
//   first_node: [ n0 | n1 n2 | n3 n4 n5 n6 ]      leaves at first_leaf: [ l0 .. l7 ]
//                 L0   L1      L2                 (weight x leaf value, left to right)
//
//   block (column c holds rows 0..kBlockRows-1 of one feature, c = 2 x pair + {0 left, 1 right}):
//
//   [ c0: r0 r1 .. r127 | c1: r0 .. r127 | ... ]  node -> columns[node] = c x kBlockRows
//
// Every index an evaluator forms is bounded by construction (make_dense in
// xgboost_model.cpp, which also checks the column offsets): a node position within a tree
// is below 2^D - 1, a leaf below 2^D, a column offset plus a row below the block's size.
// The SIMD evaluators also read whole vectors from a level's start (up to 15 entries past
// a shallow tree's last node), which is why both node arrays end in kDensePadding unused
// entries.
//
// Every evaluator adds, for each row, the trees' leaves in tree order to the row's margin,
// one double addition per tree: the sums are the same bits on every path.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace estimator::models::xgboost {

// Rows per block (a column of the copy): the AVX-512 evaluator walks a tree with all of
// them at once, 8 registers of 16 rows, enough independent gathers in flight to hide their
// latency (docs/benchmarks.md "XGBoost evaluation").
inline constexpr std::int64_t kBlockRows = 128;
inline constexpr std::uint32_t kMaxDenseDepth = 8;  // deeper trees are walked node by node
inline constexpr std::size_t kDensePadding = 64;    // unused entries after the node arrays

struct DenseTree {
  std::uint32_t first_node;  // 2^depth - 1 nodes, level by level (children of i: 2i+1, 2i+2)
  std::uint32_t first_leaf;  // 2^depth leaves
  std::uint32_t depth;
};

struct DenseForest {
  std::vector<float> thresholds;     // per node; a pass-through node has 0
  std::vector<std::int32_t> columns;  // per node: its block column x kBlockRows
  std::vector<double> leaves;
  std::vector<DenseTree> trees;
  std::vector<std::uint32_t> features;  // block column pair p holds input column features[p]
};

// The instruction sets with an evaluator of their own.
enum class Isa : std::uint8_t { kScalar, kAvx2, kAvx512 };

// The widest evaluator's rows per register (AVX-512: 16 floats).
inline constexpr std::int64_t kVectorRows = 16;

// Adds every tree's leaf to margin[0..n) for the n <= kBlockRows rows of `block`.
// The SIMD evaluators compute whole vectors: up to n rounded up to kVectorRows, the entries
// of each block column past n are read (so they must hold floats, whatever their values)
// and those of margin written with meaningless values.
using AddForest = void (*)(const DenseForest& forest, const float* block, double* margin,
                           std::int64_t n);

void add_forest_scalar(const DenseForest& forest, const float* block, double* margin,
                       std::int64_t n);
void add_forest_avx2(const DenseForest& forest, const float* block, double* margin,
                     std::int64_t n);
void add_forest_avx512(const DenseForest& forest, const float* block, double* margin,
                       std::int64_t n);

// Whether this CPU (and the OS's saved register state) runs `isa`'s evaluator.
bool isa_supported(Isa isa);
// The fastest evaluator this CPU runs.
Isa best_isa();
AddForest evaluator(Isa isa);
std::string_view isa_name(Isa isa);  // "scalar", "avx2", "avx512"

}  // namespace estimator::models::xgboost
