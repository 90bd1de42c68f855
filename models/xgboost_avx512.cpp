// SPDX-License-Identifier: Apache-2.0
// The AVX-512 evaluator: 16 rows per register (float32 lanes: the block's values and the
// thresholds), up to 4 registers of rows in flight per tree; each row's leaves are added
// in double, tree by tree, as the scalar evaluator adds them.
//
// A level of up to 64 nodes is held in registers and a row's threshold and column are
// picked by permutes; deeper levels are gathered. The row's value is one gather from the
// block, except at levels 0-2 (at most 4 columns: loads and blends). Only these
// functions carry the target attribute (no -m flag for the file), so nothing else in the
// build may use AVX-512 instructions on a CPU without them.
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

#define ESTIMATOR_AVX512 __attribute__((target("avx512f")))

namespace estimator::models::xgboost {

namespace {

// Up to 64 entries of a level (levels 0 to 6), loaded once per tree and level and shared by
// all its row registers.
struct LevelRegs {
  __m512 t[4];
  __m512i c[4];
};

// Rows [16 * g, 16 * g + 16) for g < G, through one tree.
template <int G>
ESTIMATOR_AVX512 void add_tree(const float* thresholds, const std::int32_t* columns,
                               const double* leaves, std::uint32_t depth, const float* block,
                               double* margin) {
  const __m512i one = _mm512_set1_epi32(1);
  const __m512i lanes =
      _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __m512i j[G];
  for (int g = 0; g < G; ++g) j[g] = _mm512_setzero_si512();
  std::uint32_t level_start = 0;
  for (std::uint32_t level = 0; level < depth; ++level) {
    const float* const t = thresholds + level_start;
    const std::int32_t* const c = columns + level_start;
    const std::uint32_t regs = level <= 4 ? 1 : level <= 6 ? 1U << (level - 4) : 0;
    LevelRegs r;
    for (std::uint32_t k = 0; k < regs; ++k) {
      r.t[k] = _mm512_loadu_ps(t + 16 * k);
      r.c[k] = _mm512_loadu_si512(c + 16 * k);
    }
    if (level <= 2) {
      // At most 4 columns: read each row's value from them by plain loads and blends on
      // j's bits instead of a gather.
      const float* const x0 = block + c[0];
      for (int g = 0; g < G; ++g) {
        const __m512 threshold = _mm512_permutexvar_ps(j[g], r.t[0]);
        __m512 x = _mm512_loadu_ps(x0 + 16 * g);
        if (level >= 1) {
          const __mmask16 bit0 = _mm512_test_epi32_mask(j[g], one);
          x = _mm512_mask_blend_ps(bit0, x, _mm512_loadu_ps(block + c[1] + 16 * g));
          if (level == 2) {
            const __m512 x23 = _mm512_mask_blend_ps(bit0, _mm512_loadu_ps(block + c[2] + 16 * g),
                                                    _mm512_loadu_ps(block + c[3] + 16 * g));
            x = _mm512_mask_blend_ps(_mm512_test_epi32_mask(j[g], _mm512_set1_epi32(2)), x, x23);
          }
        }
        const __mmask16 left = _mm512_cmp_ps_mask(x, threshold, _CMP_LT_OQ);
        const __m512i twice = _mm512_add_epi32(j[g], j[g]);
        j[g] = _mm512_mask_add_epi32(twice, static_cast<__mmask16>(~left), twice, one);
      }
      level_start += 1U << level;
      continue;
    }
    for (int g = 0; g < G; ++g) {
      __m512 threshold;
      __m512i column;
      if (level <= 4) {
        threshold = _mm512_permutexvar_ps(j[g], r.t[0]);
        column = _mm512_permutexvar_epi32(j[g], r.c[0]);
      } else if (level == 5) {
        threshold = _mm512_permutex2var_ps(r.t[0], j[g], r.t[1]);
        column = _mm512_permutex2var_epi32(r.c[0], j[g], r.c[1]);
      } else if (level == 6) {
        // permutex2var reads 5 bits of j; bit 5 picks the half.
        const __mmask16 high = _mm512_test_epi32_mask(j[g], _mm512_set1_epi32(32));
        threshold = _mm512_mask_blend_ps(high, _mm512_permutex2var_ps(r.t[0], j[g], r.t[1]),
                                         _mm512_permutex2var_ps(r.t[2], j[g], r.t[3]));
        column = _mm512_mask_blend_epi32(high, _mm512_permutex2var_epi32(r.c[0], j[g], r.c[1]),
                                         _mm512_permutex2var_epi32(r.c[2], j[g], r.c[3]));
      } else {
        threshold = _mm512_i32gather_ps(j[g], t, 4);
        column = _mm512_i32gather_epi32(j[g], c, 4);
      }
      const __m512 x = _mm512_i32gather_ps(_mm512_add_epi32(column, lanes), block + 16 * g, 4);
      const __mmask16 left = _mm512_cmp_ps_mask(x, threshold, _CMP_LT_OQ);
      const __m512i twice = _mm512_add_epi32(j[g], j[g]);
      j[g] = _mm512_mask_add_epi32(twice, static_cast<__mmask16>(~left), twice, one);
    }
    level_start += 1U << level;
  }
  for (int g = 0; g < G; ++g) {
    double* const m = margin + 16 * g;
    const __m512d low = _mm512_i32gather_pd(_mm512_castsi512_si256(j[g]), leaves, 8);
    const __m512d high = _mm512_i32gather_pd(_mm512_extracti64x4_epi64(j[g], 1), leaves, 8);
    _mm512_storeu_pd(m, _mm512_add_pd(_mm512_loadu_pd(m), low));
    _mm512_storeu_pd(m + 8, _mm512_add_pd(_mm512_loadu_pd(m + 8), high));
  }
}

template <int G>
ESTIMATOR_AVX512 void add_trees(const DenseForest& forest, const float* block, double* margin) {
  for (const DenseTree& tree : forest.trees) {
    add_tree<G>(forest.thresholds.data() + tree.first_node,
                forest.columns.data() + tree.first_node, forest.leaves.data() + tree.first_leaf,
                tree.depth, block, margin);
  }
}

}  // namespace

ESTIMATOR_AVX512 void add_forest_avx512(const DenseForest& forest, const float* block,
                                        double* margin, std::int64_t n) {
  static_assert(kBlockRows == 64, "4 registers of 16 rows");
  switch ((n + 15) / 16) {
    case 1: return add_trees<1>(forest, block, margin);
    case 2: return add_trees<2>(forest, block, margin);
    case 3: return add_trees<3>(forest, block, margin);
    case 4: return add_trees<4>(forest, block, margin);
    default: return;
  }
}

}  // namespace estimator::models::xgboost
