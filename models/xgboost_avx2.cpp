// SPDX-License-Identifier: Apache-2.0
// The AVX2 evaluator: 8 rows per register (float32 lanes: the block's values and the
// thresholds), up to 8 registers of rows in flight per tree (a block in passes of 64
// rows); each row's leaves are added in double, tree by tree, as the scalar evaluator adds
// them.
//
// The code is instantiated per tree depth, so that every level's choice below is made at
// compile time and the rows' node positions stay in registers. A level of up to 16 nodes
// is held in one or two registers and a row's threshold and column are picked by
// permutes (and a blend); deeper levels are gathered. The row's value is one gather from the
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

#include <algorithm>

#include "models/xgboost_forest.h"

#define ESTIMATOR_AVX2 __attribute__((target("avx2")))
// The per-level and per-tree pieces must be inlined into the forest loop: a call would
// pass the row registers through memory.
#define ESTIMATOR_AVX2_INLINE __attribute__((target("avx2"), always_inline)) inline

namespace estimator::models::xgboost {

namespace {

// j = 2j + 1 where the row goes right (x >= threshold, never NaN: see xgboost_forest.h);
// the comparison's mask is all ones (-1) where the row goes left.
ESTIMATOR_AVX2_INLINE __m256i descend(__m256i j, __m256 x, __m256 threshold) {
  const __m256i left = _mm256_castps_si256(_mm256_cmp_ps(x, threshold, _CMP_LT_OQ));
  return _mm256_add_epi32(_mm256_add_epi32(j, j), _mm256_add_epi32(_mm256_set1_epi32(1), left));
}

// Level L (2^L nodes from position 2^L - 1 of the tree's arrays) for rows [8g, 8g + 8),
// g < G, their node positions in j.
template <std::uint32_t L, int G>
ESTIMATOR_AVX2_INLINE void level(const float* thresholds, const std::int32_t* columns,
                                 const float* block, __m256i (&j)[G]) {
  const float* const t = thresholds + ((1U << L) - 1);
  const std::int32_t* const c = columns + ((1U << L) - 1);
  if constexpr (L <= 2) {
    const __m256 t_reg = _mm256_loadu_ps(t);
    // At most 4 columns: read each row's value from them by plain loads and blends on
    // j's bits (moved to the sign bit, which blendv reads) instead of a gather.
#pragma GCC unroll 16
    for (int g = 0; g < G; ++g) {
      __m256 x = _mm256_loadu_ps(block + c[0] + 8 * g);
      __m256 threshold = _mm256_set1_ps(t[0]);
      if constexpr (L >= 1) {
        threshold = _mm256_permutevar8x32_ps(t_reg, j[g]);
        const __m256 bit0 = _mm256_castsi256_ps(_mm256_slli_epi32(j[g], 31));
        x = _mm256_blendv_ps(x, _mm256_loadu_ps(block + c[1] + 8 * g), bit0);
        if constexpr (L == 2) {
          const __m256 x23 = _mm256_blendv_ps(_mm256_loadu_ps(block + c[2] + 8 * g),
                                              _mm256_loadu_ps(block + c[3] + 8 * g), bit0);
          x = _mm256_blendv_ps(x, x23, _mm256_castsi256_ps(_mm256_slli_epi32(j[g], 30)));
        }
      }
      j[g] = descend(j[g], x, threshold);
    }
  } else {
    // Levels 3 and 4 (8 and 16 nodes): a row's threshold and column picked by a permute
    // of one register, or of two and a blend on j's bit 3; deeper levels gather them
    // (level 5 by four permutes and three blends measured slower than the gathers).
    __m256 tr[2];
    __m256i cr[2];
    if constexpr (L <= 4) {
      for (std::uint32_t k = 0; k < (1U << (L - 3)); ++k) {
        tr[k] = _mm256_loadu_ps(t + 8 * k);
        cr[k] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + 8 * k));
      }
    }
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
#pragma GCC unroll 16
    for (int g = 0; g < G; ++g) {
      __m256 threshold;
      __m256i column;
      if constexpr (L == 3) {
        threshold = _mm256_permutevar8x32_ps(tr[0], j[g]);
        column = _mm256_permutevar8x32_epi32(cr[0], j[g]);
      } else if constexpr (L == 4) {
        const __m256 bit3 = _mm256_castsi256_ps(_mm256_slli_epi32(j[g], 28));
        threshold = _mm256_blendv_ps(_mm256_permutevar8x32_ps(tr[0], j[g]),
                                     _mm256_permutevar8x32_ps(tr[1], j[g]), bit3);
        column = _mm256_castps_si256(
            _mm256_blendv_ps(_mm256_castsi256_ps(_mm256_permutevar8x32_epi32(cr[0], j[g])),
                             _mm256_castsi256_ps(_mm256_permutevar8x32_epi32(cr[1], j[g])), bit3));
      } else {
        threshold = _mm256_i32gather_ps(t, j[g], 4);
        column = _mm256_i32gather_epi32(c, j[g], 4);
      }
      const __m256 x = _mm256_i32gather_ps(block + 8 * g, _mm256_add_epi32(column, lanes), 4);
      j[g] = descend(j[g], x, threshold);
    }
  }
}

template <std::uint32_t L, std::uint32_t D, int G>
ESTIMATOR_AVX2_INLINE void levels(const float* thresholds, const std::int32_t* columns,
                                  const float* block, __m256i (&j)[G]) {
  if constexpr (L < D) {
    level<L, G>(thresholds, columns, block, j);
    levels<L + 1, D, G>(thresholds, columns, block, j);
  }
}

// One tree of depth D: every row's leaf added to its margin (in memory: 16 registers
// hold too few rows' margins to keep them there).
template <std::uint32_t D, int G>
ESTIMATOR_AVX2_INLINE void add_tree(const float* thresholds, const std::int32_t* columns,
                                    const double* leaves, const float* block, double* margin) {
  if constexpr (D == 0) {
    const __m256d leaf = _mm256_set1_pd(leaves[0]);
#pragma GCC unroll 16
    for (int k = 0; k < 2 * G; ++k) {
      _mm256_storeu_pd(margin + 4 * k, _mm256_add_pd(_mm256_loadu_pd(margin + 4 * k), leaf));
    }
  } else {
    __m256i j[G];
#pragma GCC unroll 16
    for (int g = 0; g < G; ++g) j[g] = _mm256_setzero_si256();
    levels<0, D, G>(thresholds, columns, block, j);
#pragma GCC unroll 16
    for (int g = 0; g < G; ++g) {
      double* const m = margin + 8 * g;
      const __m256d low = _mm256_i32gather_pd(leaves, _mm256_castsi256_si128(j[g]), 8);
      const __m256d high = _mm256_i32gather_pd(leaves, _mm256_extracti128_si256(j[g], 1), 8);
      _mm256_storeu_pd(m, _mm256_add_pd(_mm256_loadu_pd(m), low));
      _mm256_storeu_pd(m + 4, _mm256_add_pd(_mm256_loadu_pd(m + 4), high));
    }
  }
}

template <int G>
ESTIMATOR_AVX2 void add_trees(const DenseForest& forest, const float* block, double* margin) {
  static_assert(kMaxDenseDepth == 8, "one case per depth");
  const float* const thresholds = forest.thresholds.data();
  const std::int32_t* const columns = forest.columns.data();
  const double* const leaves = forest.leaves.data();
  for (const DenseTree& tree : forest.trees) {
    const float* const t = thresholds + tree.first_node;
    const std::int32_t* const c = columns + tree.first_node;
    const double* const l = leaves + tree.first_leaf;
    switch (tree.depth) {
      case 0: add_tree<0, G>(t, c, l, block, margin); break;
      case 1: add_tree<1, G>(t, c, l, block, margin); break;
      case 2: add_tree<2, G>(t, c, l, block, margin); break;
      case 3: add_tree<3, G>(t, c, l, block, margin); break;
      case 4: add_tree<4, G>(t, c, l, block, margin); break;
      case 5: add_tree<5, G>(t, c, l, block, margin); break;
      case 6: add_tree<6, G>(t, c, l, block, margin); break;
      case 7: add_tree<7, G>(t, c, l, block, margin); break;
      default: add_tree<8, G>(t, c, l, block, margin); break;
    }
  }
}

}  // namespace

ESTIMATOR_AVX2 void add_forest_avx2(const DenseForest& forest, const float* block,
                                    double* margin, std::int64_t n) {
  // Rows in passes of at most 8 registers (a block's column offsets hold for any row
  // offset into it).
  static_assert(kBlockRows % 64 == 0, "passes of 8 registers of 8 rows");
  for (std::int64_t r = 0; r < n; r += 64) {
    switch ((std::min<std::int64_t>(n - r, 64) + 7) / 8) {
      case 1: add_trees<1>(forest, block + r, margin + r); break;
      case 2: add_trees<2>(forest, block + r, margin + r); break;
      case 3: add_trees<3>(forest, block + r, margin + r); break;
      case 4: add_trees<4>(forest, block + r, margin + r); break;
      case 5: add_trees<5>(forest, block + r, margin + r); break;
      case 6: add_trees<6>(forest, block + r, margin + r); break;
      case 7: add_trees<7>(forest, block + r, margin + r); break;
      default: add_trees<8>(forest, block + r, margin + r); break;
    }
  }
}

}  // namespace estimator::models::xgboost
