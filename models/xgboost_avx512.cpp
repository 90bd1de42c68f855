// SPDX-License-Identifier: Apache-2.0
// The AVX-512 evaluator: 16 rows per register (float32 lanes: the block's values and the
// thresholds), up to 8 registers of rows (the whole block) in flight per tree; each row's
// leaves are added in double, tree by tree, as the scalar evaluator adds them.
//
// The code is instantiated per tree depth, so that every level's choice below is made at
// compile time and the rows' node positions stay in registers; the rows' margins are kept
// in registers across the whole forest (with 8 registers of rows the compiler spills some
// of them, which measured faster than adding each tree's leaves to memory). A level of up
// to 64 nodes is held in registers and a row's threshold and column are picked by
// permutes; deeper levels are gathered. The row's value is one gather from the block,
// except at levels 0-2 (at most 4 columns: loads and blends). Only these functions carry the target attribute (no -m flag for the file), so
// nothing else in the build may use AVX-512 instructions on a CPU without them.
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
// The per-level and per-tree pieces must be inlined into the forest loop: a call would
// pass the row registers through memory.
#define ESTIMATOR_AVX512_INLINE __attribute__((target("avx512f"), always_inline)) inline

namespace estimator::models::xgboost {

namespace {

// The registers of one block's rows: rows [16 * g, 16 * g + 16) in j[g] (node position
// within the current level) and their margins in m[2g] (the low 8 rows) and m[2g + 1].
template <int G>
struct Rows {
  __m512i j[G];
  __m512d m[2 * G];
};

// j = 2j + 1 where the row goes right (x >= threshold, never NaN: see xgboost_forest.h).
ESTIMATOR_AVX512_INLINE __m512i descend(__m512i j, __m512 x, __m512 threshold) {
  const __mmask16 right = _mm512_cmp_ps_mask(x, threshold, _CMP_NLT_UQ);
  const __m512i twice = _mm512_add_epi32(j, j);
  return _mm512_mask_add_epi32(twice, right, twice, _mm512_set1_epi32(1));
}

// Level L (2^L nodes from position 2^L - 1 of the tree's arrays) for every row register.
template <std::uint32_t L, int G>
ESTIMATOR_AVX512_INLINE void level(const float* thresholds, const std::int32_t* columns,
                                   const float* block, Rows<G>& rows) {
  const float* const t = thresholds + ((1U << L) - 1);
  const std::int32_t* const c = columns + ((1U << L) - 1);
  if constexpr (L <= 2) {
    // At most 4 columns: read each row's value from them by plain loads and blends on
    // j's bits instead of a gather.
    const __m512 t0 = _mm512_loadu_ps(t);
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g) {
      const __m512i j = rows.j[g];
      __m512 x = _mm512_loadu_ps(block + c[0] + 16 * g);
      __m512 threshold = _mm512_set1_ps(t[0]);
      if constexpr (L >= 1) {
        threshold = _mm512_permutexvar_ps(j, t0);
        const __mmask16 bit0 = _mm512_test_epi32_mask(j, _mm512_set1_epi32(1));
        x = _mm512_mask_blend_ps(bit0, x, _mm512_loadu_ps(block + c[1] + 16 * g));
        if constexpr (L == 2) {
          const __m512 x23 = _mm512_mask_blend_ps(bit0, _mm512_loadu_ps(block + c[2] + 16 * g),
                                                  _mm512_loadu_ps(block + c[3] + 16 * g));
          x = _mm512_mask_blend_ps(_mm512_test_epi32_mask(j, _mm512_set1_epi32(2)), x, x23);
        }
      }
      rows.j[g] = descend(j, x, threshold);
    }
  } else {
    // Levels 3-6: up to 4 registers of thresholds and of columns, shared by all rows.
    constexpr int kRegs = L <= 4 ? 1 : L <= 6 ? 1 << (L - 4) : 0;
    __m512 tr[kRegs > 0 ? kRegs : 1];
    __m512i cr[kRegs > 0 ? kRegs : 1];
    for (int k = 0; k < kRegs; ++k) {
      tr[k] = _mm512_loadu_ps(t + 16 * k);
      cr[k] = _mm512_loadu_si512(c + 16 * k);
    }
    const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g) {
      const __m512i j = rows.j[g];
      __m512 threshold;
      __m512i column;
      if constexpr (L <= 4) {
        threshold = _mm512_permutexvar_ps(j, tr[0]);
        column = _mm512_permutexvar_epi32(j, cr[0]);
      } else if constexpr (L == 5) {
        threshold = _mm512_permutex2var_ps(tr[0], j, tr[1]);
        column = _mm512_permutex2var_epi32(cr[0], j, cr[1]);
      } else if constexpr (L == 6) {
        // permutex2var reads 5 bits of j; bit 5 picks the half.
        const __mmask16 high = _mm512_test_epi32_mask(j, _mm512_set1_epi32(32));
        threshold = _mm512_mask_blend_ps(high, _mm512_permutex2var_ps(tr[0], j, tr[1]),
                                         _mm512_permutex2var_ps(tr[2], j, tr[3]));
        column = _mm512_mask_blend_epi32(high, _mm512_permutex2var_epi32(cr[0], j, cr[1]),
                                         _mm512_permutex2var_epi32(cr[2], j, cr[3]));
      } else {
        threshold = _mm512_i32gather_ps(j, t, 4);
        column = _mm512_i32gather_epi32(j, c, 4);
      }
      const __m512 x = _mm512_i32gather_ps(_mm512_add_epi32(column, lanes), block + 16 * g, 4);
      rows.j[g] = descend(j, x, threshold);
    }
  }
}

template <std::uint32_t L, std::uint32_t D, int G>
ESTIMATOR_AVX512_INLINE void levels(const float* thresholds, const std::int32_t* columns,
                                    const float* block, Rows<G>& rows) {
  if constexpr (L < D) {
    level<L, G>(thresholds, columns, block, rows);
    levels<L + 1, D, G>(thresholds, columns, block, rows);
  }
}

// One tree of depth D: every row's leaf added to its margin.
template <std::uint32_t D, int G>
ESTIMATOR_AVX512_INLINE void add_tree(const float* thresholds, const std::int32_t* columns,
                                      const double* leaves, const float* block, Rows<G>& rows) {
  if constexpr (D == 0) {
    const __m512d leaf = _mm512_set1_pd(leaves[0]);
#pragma GCC unroll 16
    for (int k = 0; k < 2 * G; ++k) rows.m[k] = _mm512_add_pd(rows.m[k], leaf);
  } else {
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g) rows.j[g] = _mm512_setzero_si512();
    levels<0, D, G>(thresholds, columns, block, rows);
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g) {
      const __m512i j = rows.j[g];
      const __m512d low = _mm512_i32gather_pd(_mm512_castsi512_si256(j), leaves, 8);
      const __m512d high = _mm512_i32gather_pd(_mm512_extracti64x4_epi64(j, 1), leaves, 8);
      rows.m[2 * g] = _mm512_add_pd(rows.m[2 * g], low);
      rows.m[2 * g + 1] = _mm512_add_pd(rows.m[2 * g + 1], high);
    }
  }
}

template <int G>
ESTIMATOR_AVX512 void add_trees(const DenseForest& forest, const float* block, double* margin) {
  static_assert(kMaxDenseDepth == 8, "one case per depth");
  Rows<G> rows;
  for (int k = 0; k < 2 * G; ++k) rows.m[k] = _mm512_loadu_pd(margin + 8 * k);
  const float* const thresholds = forest.thresholds.data();
  const std::int32_t* const columns = forest.columns.data();
  const double* const leaves = forest.leaves.data();
  for (const DenseTree& tree : forest.trees) {
    const float* const t = thresholds + tree.first_node;
    const std::int32_t* const c = columns + tree.first_node;
    const double* const l = leaves + tree.first_leaf;
    switch (tree.depth) {
      case 0: add_tree<0, G>(t, c, l, block, rows); break;
      case 1: add_tree<1, G>(t, c, l, block, rows); break;
      case 2: add_tree<2, G>(t, c, l, block, rows); break;
      case 3: add_tree<3, G>(t, c, l, block, rows); break;
      case 4: add_tree<4, G>(t, c, l, block, rows); break;
      case 5: add_tree<5, G>(t, c, l, block, rows); break;
      case 6: add_tree<6, G>(t, c, l, block, rows); break;
      case 7: add_tree<7, G>(t, c, l, block, rows); break;
      default: add_tree<8, G>(t, c, l, block, rows); break;
    }
  }
  for (int k = 0; k < 2 * G; ++k) _mm512_storeu_pd(margin + 8 * k, rows.m[k]);
}

}  // namespace

ESTIMATOR_AVX512 void add_forest_avx512(const DenseForest& forest, const float* block,
                                        double* margin, std::int64_t n) {
  static_assert(kBlockRows == 128, "8 registers of 16 rows");
  switch ((n + 15) / 16) {
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
