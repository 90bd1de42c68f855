// SPDX-License-Identifier: Apache-2.0
// The AVX2 evaluator: 8 rows per register (float32 lanes: the block's values and the
// thresholds), up to 8 registers of rows in flight per tree; each row's leaves are added
// in double, tree by tree, as the scalar evaluator adds them.
//
// A level of up to 8 nodes is held in a register and a row's threshold and column are
// picked by a permute; deeper levels are gathered. The row's value is one gather from the
// block, except at levels 0-2 (at most 4 columns: loads and blends). Only these
// functions carry the target attribute (no -m flag for the file), so nothing else in the
// build may use AVX2 instructions on a CPU without them.
//
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

// Rows [8 * g, 8 * g + 8) for g < G, through one tree.
template <int G>
ESTIMATOR_AVX2 void add_tree(const float* thresholds, const std::int32_t* columns,
                             const double* leaves, std::uint32_t depth, const float* block,
                             double* margin) {
  const __m256i one = _mm256_set1_epi32(1);
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  __m256i j[G];
  for (int g = 0; g < G; ++g) j[g] = _mm256_setzero_si256();
  std::uint32_t level_start = 0;
  for (std::uint32_t level = 0; level < depth; ++level) {
    const float* const t = thresholds + level_start;
    const std::int32_t* const c = columns + level_start;
    // Levels 0 to 3 (at most 8 nodes) in one register each.
    const __m256 t_reg = _mm256_loadu_ps(t);
    const __m256i c_reg = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c));
    if (level <= 2) {
      // At most 4 columns: read each row's value from them by plain loads and blends on
      // j's bits (moved to the sign bit, which blendv reads) instead of a gather.
      for (int g = 0; g < G; ++g) {
        const __m256 threshold = _mm256_permutevar8x32_ps(t_reg, j[g]);
        __m256 x = _mm256_loadu_ps(block + c[0] + 8 * g);
        if (level >= 1) {
          const __m256 bit0 = _mm256_castsi256_ps(_mm256_slli_epi32(j[g], 31));
          x = _mm256_blendv_ps(x, _mm256_loadu_ps(block + c[1] + 8 * g), bit0);
          if (level == 2) {
            const __m256 x23 = _mm256_blendv_ps(_mm256_loadu_ps(block + c[2] + 8 * g),
                                                _mm256_loadu_ps(block + c[3] + 8 * g), bit0);
            x = _mm256_blendv_ps(x, x23, _mm256_castsi256_ps(_mm256_slli_epi32(j[g], 30)));
          }
        }
        const __m256i left = _mm256_castps_si256(_mm256_cmp_ps(x, threshold, _CMP_LT_OQ));
        j[g] = _mm256_add_epi32(_mm256_add_epi32(j[g], j[g]), _mm256_add_epi32(one, left));
      }
      level_start += 1U << level;
      continue;
    }
    for (int g = 0; g < G; ++g) {
      __m256 threshold;
      __m256i column;
      if (level <= 3) {
        threshold = _mm256_permutevar8x32_ps(t_reg, j[g]);
        column = _mm256_permutevar8x32_epi32(c_reg, j[g]);
      } else {
        threshold = _mm256_i32gather_ps(t, j[g], 4);
        column = _mm256_i32gather_epi32(c, j[g], 4);
      }
      const __m256 x = _mm256_i32gather_ps(block + 8 * g, _mm256_add_epi32(column, lanes), 4);
      // All ones (-1) where the row goes left: j = 2j + 1 - left.
      const __m256i left = _mm256_castps_si256(_mm256_cmp_ps(x, threshold, _CMP_LT_OQ));
      j[g] = _mm256_add_epi32(_mm256_add_epi32(j[g], j[g]), _mm256_add_epi32(one, left));
    }
    level_start += 1U << level;
  }
  for (int g = 0; g < G; ++g) {
    double* const m = margin + 8 * g;
    const __m256d low = _mm256_i32gather_pd(leaves, _mm256_castsi256_si128(j[g]), 8);
    const __m256d high = _mm256_i32gather_pd(leaves, _mm256_extracti128_si256(j[g], 1), 8);
    _mm256_storeu_pd(m, _mm256_add_pd(_mm256_loadu_pd(m), low));
    _mm256_storeu_pd(m + 4, _mm256_add_pd(_mm256_loadu_pd(m + 4), high));
  }
}

template <int G>
ESTIMATOR_AVX2 void add_trees(const DenseForest& forest, const float* block, double* margin) {
  for (const DenseTree& tree : forest.trees) {
    add_tree<G>(forest.thresholds.data() + tree.first_node,
                forest.columns.data() + tree.first_node, forest.leaves.data() + tree.first_leaf,
                tree.depth, block, margin);
  }
}

}  // namespace

ESTIMATOR_AVX2 void add_forest_avx2(const DenseForest& forest, const float* block,
                                    double* margin, std::int64_t n) {
  static_assert(kBlockRows == 64, "8 registers of 8 rows");
  switch ((n + 7) / 8) {
    case 1: return add_trees<1>(forest, block, margin);
    case 2: return add_trees<2>(forest, block, margin);
    case 3: return add_trees<3>(forest, block, margin);
    case 4: return add_trees<4>(forest, block, margin);
    case 5: return add_trees<5>(forest, block, margin);
    case 6: return add_trees<6>(forest, block, margin);
    case 7: return add_trees<7>(forest, block, margin);
    case 8: return add_trees<8>(forest, block, margin);
    default: return;
  }
}

}  // namespace estimator::models::xgboost
