// SPDX-License-Identifier: Apache-2.0
// The AVX-512 evaluator: 8 rows per register (double lanes, so that the block and the
// sums are the scalar evaluator's), up to 8 registers of rows in flight per tree.
//
// A level of up to 32 nodes is held in registers and a row's threshold and column are
// picked by permutes; deeper levels are gathered. The row's value is one gather from the
// block. Only these functions carry the target attribute (no -m flag for the file), so
// nothing else in the build may use AVX-512 instructions on a CPU without them.
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

// One level's thresholds and column offsets for the rows' positions j (each < 2^level).
struct Picked {
  __m512d threshold;
  __m512i column;
};

// Up to 32 entries of a level, loaded once per tree and shared by all its row registers.
struct LevelRegs {
  __m512d t[4];
  __m512i c[4];
};

ESTIMATOR_AVX512 inline LevelRegs load_level(const double* t, const std::int64_t* c,
                                              std::uint32_t level) {
  LevelRegs r{};
  const std::uint32_t regs = level <= 3 ? 1 : level <= 5 ? 1U << (level - 3) : 0;
  for (std::uint32_t k = 0; k < regs; ++k) {
    r.t[k] = _mm512_loadu_pd(t + 8 * k);
    r.c[k] = _mm512_loadu_si512(c + 8 * k);
  }
  return r;
}

ESTIMATOR_AVX512 inline Picked pick(const LevelRegs& r, const double* t, const std::int64_t* c,
                                    std::uint32_t level, __m512i j) {
  if (level <= 3) {
    return {_mm512_permutexvar_pd(j, r.t[0]), _mm512_permutexvar_epi64(j, r.c[0])};
  }
  if (level == 4) {
    return {_mm512_permutex2var_pd(r.t[0], j, r.t[1]),
            _mm512_permutex2var_epi64(r.c[0], j, r.c[1])};
  }
  if (level == 5) {
    // permutex2var reads 4 bits of j; bit 4 picks the half.
    const __mmask8 high = _mm512_test_epi64_mask(j, _mm512_set1_epi64(16));
    return {_mm512_mask_blend_pd(high, _mm512_permutex2var_pd(r.t[0], j, r.t[1]),
                                 _mm512_permutex2var_pd(r.t[2], j, r.t[3])),
            _mm512_mask_blend_epi64(high, _mm512_permutex2var_epi64(r.c[0], j, r.c[1]),
                                    _mm512_permutex2var_epi64(r.c[2], j, r.c[3]))};
  }
  return {_mm512_i64gather_pd(j, t, 8), _mm512_i64gather_epi64(j, c, 8)};
}

// Rows [8 * g, 8 * g + 8) for g < G, through one tree.
template <int G>
ESTIMATOR_AVX512 void add_tree(const double* thresholds, const std::int64_t* columns,
                               const double* leaves, std::uint32_t depth, const double* block,
                               double* margin) {
  const __m512i one = _mm512_set1_epi64(1);
  __m512i j[G];
  __m512i row[G];
  for (int g = 0; g < G; ++g) {
    j[g] = _mm512_setzero_si512();
    row[g] = _mm512_setr_epi64(8 * g, 8 * g + 1, 8 * g + 2, 8 * g + 3, 8 * g + 4, 8 * g + 5,
                               8 * g + 6, 8 * g + 7);
  }
  std::uint32_t level_start = 0;
  for (std::uint32_t level = 0; level < depth; ++level) {
    const double* const t = thresholds + level_start;
    const std::int64_t* const c = columns + level_start;
    const LevelRegs regs = load_level(t, c, level);
    for (int g = 0; g < G; ++g) {
      const Picked p = pick(regs, t, c, level, j[g]);
      const __m512d x = _mm512_i64gather_pd(_mm512_add_epi64(p.column, row[g]), block, 8);
      const __mmask8 left = _mm512_cmp_pd_mask(x, p.threshold, _CMP_LT_OQ);
      const __m512i twice = _mm512_add_epi64(j[g], j[g]);
      j[g] = _mm512_mask_add_epi64(twice, static_cast<__mmask8>(~left), twice, one);
    }
    level_start += 1U << level;
  }
  for (int g = 0; g < G; ++g) {
    const __m512d leaf = _mm512_i64gather_pd(j[g], leaves, 8);
    _mm512_storeu_pd(margin + 8 * g, _mm512_add_pd(_mm512_loadu_pd(margin + 8 * g), leaf));
  }
}

template <int G>
ESTIMATOR_AVX512 void add_trees(const DenseForest& forest, const double* block,
                                double* margin) {
  for (const DenseTree& tree : forest.trees) {
    add_tree<G>(forest.thresholds.data() + tree.first_node,
                forest.columns.data() + tree.first_node, forest.leaves.data() + tree.first_leaf,
                tree.depth, block, margin);
  }
}

}  // namespace

ESTIMATOR_AVX512 void add_forest_avx512(const DenseForest& forest, const double* block,
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
