// SPDX-License-Identifier: Apache-2.0
// The AVX2 evaluator: 4 rows per register (double lanes, so that the block and the sums
// are the scalar evaluator's), 8 registers of rows in flight per tree.
//
// A level of up to 4 nodes is held in a register and a row's threshold and column are
// picked by a permute; deeper levels are gathered. The row's value is one gather from the
// block. Only these functions carry the target attribute (no -m flag for the file), so
// nothing else in the build may use AVX2 instructions on a CPU without them.
// gcc 12's intrinsics start some results from an "undefined" register that its own
// -Wmaybe-uninitialized then flags once inlined (gcc bug 105593): off for their header.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#include "models/xgboost_forest.h"

#define ESTIMATOR_AVX2 __attribute__((target("avx2")))

namespace estimator::models::xgboost {

namespace {

constexpr int kRegs = 8;  // row registers per pass: 32 rows

// Rows [row0 + 4 * g, row0 + 4 * g + 4) for g < G, through one tree.
template <int G>
ESTIMATOR_AVX2 void add_tree(const double* thresholds, const std::int64_t* columns,
                             const double* leaves, std::uint32_t depth, const double* block,
                             double* margin, std::int64_t row0) {
  const __m256i one = _mm256_set1_epi64x(1);
  __m256i j[G];
  __m256i row[G];
  for (int g = 0; g < G; ++g) {
    j[g] = _mm256_setzero_si256();
    const std::int64_t r = row0 + 4 * g;
    row[g] = _mm256_setr_epi64x(r, r + 1, r + 2, r + 3);
  }
  std::uint32_t level_start = 0;
  for (std::uint32_t level = 0; level < depth; ++level) {
    const double* const t = thresholds + level_start;
    const auto* const c = reinterpret_cast<const long long*>(columns + level_start);
    // Levels 0 to 2 (at most 4 nodes, one register): a 32-bit permute that moves the two
    // halves of entry j, dwords 2j and 2j + 1.
    const __m256i t_reg = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t));
    const __m256i c_reg = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c));
    for (int g = 0; g < G; ++g) {
      __m256d threshold;
      __m256i column;
      if (level <= 2) {
        const __m256i twice = _mm256_add_epi64(j[g], j[g]);
        const __m256i dwords =
            _mm256_or_si256(twice, _mm256_slli_epi64(_mm256_add_epi64(twice, one), 32));
        threshold = _mm256_castsi256_pd(_mm256_permutevar8x32_epi32(t_reg, dwords));
        column = _mm256_permutevar8x32_epi32(c_reg, dwords);
      } else {
        threshold = _mm256_i64gather_pd(t, j[g], 8);
        column = _mm256_i64gather_epi64(c, j[g], 8);
      }
      const __m256d x = _mm256_i64gather_pd(block, _mm256_add_epi64(column, row[g]), 8);
      // All ones (-1) where the row goes left: j = 2j + 1 - left.
      const __m256i left = _mm256_castpd_si256(_mm256_cmp_pd(x, threshold, _CMP_LT_OQ));
      j[g] = _mm256_add_epi64(_mm256_add_epi64(j[g], j[g]), _mm256_add_epi64(one, left));
    }
    level_start += 1U << level;
  }
  for (int g = 0; g < G; ++g) {
    const __m256d leaf = _mm256_i64gather_pd(leaves, j[g], 8);
    double* const m = margin + row0 + 4 * g;
    _mm256_storeu_pd(m, _mm256_add_pd(_mm256_loadu_pd(m), leaf));
  }
}

template <int G>
ESTIMATOR_AVX2 void add_trees(const DenseForest& forest, const double* block, double* margin,
                              std::int64_t row0) {
  for (const DenseTree& tree : forest.trees) {
    add_tree<G>(forest.thresholds.data() + tree.first_node,
                forest.columns.data() + tree.first_node, forest.leaves.data() + tree.first_leaf,
                tree.depth, block, margin, row0);
  }
}

}  // namespace

ESTIMATOR_AVX2 void add_forest_avx2(const DenseForest& forest, const double* block,
                                    double* margin, std::int64_t n) {
  // Whole passes of 32 rows, then the rest. Each pass adds every tree in order to its own
  // rows, so each row's sum is still in tree order.
  std::int64_t row0 = 0;
  for (; row0 + 4 * kRegs <= n; row0 += 4 * kRegs) add_trees<kRegs>(forest, block, margin, row0);
  switch ((n - row0 + 3) / 4) {
    case 1: return add_trees<1>(forest, block, margin, row0);
    case 2: return add_trees<2>(forest, block, margin, row0);
    case 3: return add_trees<3>(forest, block, margin, row0);
    case 4: return add_trees<4>(forest, block, margin, row0);
    case 5: return add_trees<5>(forest, block, margin, row0);
    case 6: return add_trees<6>(forest, block, margin, row0);
    case 7: return add_trees<7>(forest, block, margin, row0);
    case 8: return add_trees<8>(forest, block, margin, row0);
    default: return;
  }
}

}  // namespace estimator::models::xgboost
