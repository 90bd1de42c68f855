// SPDX-License-Identifier: Apache-2.0
#include "models/xgboost_forest.h"

#include <array>

namespace estimator::models::xgboost {

namespace {

// Adds each row's leaf of one tree of depth D to margin[0..n), rows interleaved kLanes at
// a time so that their independent chains of loads overlap.
template <std::uint32_t D>
void add_tree(const float* thresholds, const std::int32_t* columns, const double* leaves,
              const float* block, double* margin, std::int64_t n) {
  constexpr std::uint32_t kFirstLeaf = (1U << D) - 1;
  constexpr std::int64_t kLanes = 8;
  std::int64_t r = 0;
  for (; r + kLanes <= n; r += kLanes) {
    std::array<std::uint32_t, kLanes> at{};
    for (std::uint32_t level = 0; level < D; ++level) {
      for (std::size_t k = 0; k < kLanes; ++k) {
        const bool left = block[columns[at[k]] + r + static_cast<std::int64_t>(k)] <
                          thresholds[at[k]];
        at[k] = 2 * at[k] + 2 - static_cast<std::uint32_t>(left);
      }
    }
    for (std::size_t k = 0; k < kLanes; ++k) {
      margin[r + static_cast<std::int64_t>(k)] += leaves[at[k] - kFirstLeaf];
    }
  }
  for (; r < n; ++r) {
    std::uint32_t at = 0;
    for (std::uint32_t level = 0; level < D; ++level) {
      at = 2 * at + 2 - static_cast<std::uint32_t>(block[columns[at] + r] < thresholds[at]);
    }
    margin[r] += leaves[at - kFirstLeaf];
  }
}

using AddTree = void (*)(const float*, const std::int32_t*, const double*, const float*,
                         double*, std::int64_t);
constexpr std::array<AddTree, kMaxDenseDepth + 1> kAddTree = {
    add_tree<0>, add_tree<1>, add_tree<2>, add_tree<3>, add_tree<4>,
    add_tree<5>, add_tree<6>, add_tree<7>, add_tree<8>};
static_assert(kMaxDenseDepth == 8, "one add_tree per depth");

}  // namespace

void add_forest_scalar(const DenseForest& forest, const float* block, double* margin,
                       std::int64_t n) {
  for (const DenseTree& t : forest.trees) {
    kAddTree[t.depth](forest.thresholds.data() + t.first_node,
                      forest.columns.data() + t.first_node, forest.leaves.data() + t.first_leaf,
                      block, margin, n);
  }
}

bool isa_supported(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return true;
    case Isa::kAvx2:
      return __builtin_cpu_supports("avx2") != 0;
    case Isa::kAvx512:
      return __builtin_cpu_supports("avx512f") != 0;
  }
  return false;
}

Isa best_isa() {
  for (const Isa isa : {Isa::kAvx512, Isa::kAvx2}) {
    if (isa_supported(isa)) return isa;
  }
  return Isa::kScalar;
}

AddForest evaluator(Isa isa) {
  switch (isa) {
    case Isa::kAvx2:
      return add_forest_avx2;
    case Isa::kAvx512:
      return add_forest_avx512;
    case Isa::kScalar:
      break;
  }
  return add_forest_scalar;
}

std::string_view isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
    case Isa::kScalar:
      break;
  }
  return "scalar";
}

}  // namespace estimator::models::xgboost
