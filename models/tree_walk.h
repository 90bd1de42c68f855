// SPDX-License-Identifier: Apache-2.0
// Walking rows down one decision tree, for the tree models (XGBoost, scikit-learn gradient
// boosting). One row's walk is a chain of dependent loads - the node, then the row's value
// of its feature, then the child - that the CPU can only wait for; kTreeLanes rows walked
// a level at a time give it that many independent chains to overlap. Which child a row
// takes is the model's own rule (`child`), so the leaves are exactly those of walking each
// row alone.
#pragma once

#include <array>
#include <cstddef>

namespace estimator::models {

inline constexpr std::ptrdiff_t kTreeLanes = 8;

// Calls add(r, leaf) for each of `rows` rows (row r at first_row + r * stride) with the
// leaf it reaches from `root`, kTreeLanes rows at a time and the rest one at a time. A node
// is a leaf when its `left` is negative; child(node, row) returns the child `row` goes to.
template <typename Node, typename Child, typename Add>
void for_each_leaf(const Node* root, const double* first_row, std::ptrdiff_t stride,
                   std::ptrdiff_t rows, Child&& child, Add&& add) {
  std::ptrdiff_t r = 0;
  for (; r + kTreeLanes <= rows; r += kTreeLanes) {
    std::array<const double*, kTreeLanes> x;
    std::array<const Node*, kTreeLanes> at;
    for (std::size_t k = 0; k < x.size(); ++k) {
      x[k] = first_row + (r + static_cast<std::ptrdiff_t>(k)) * stride;
      at[k] = root;
    }
    for (bool moved = true; moved;) {
      moved = false;
      for (std::size_t k = 0; k < at.size(); ++k) {
        if (at[k]->left < 0) continue;  // at its leaf
        at[k] = child(*at[k], x[k]);
        moved = true;
      }
    }
    for (std::size_t k = 0; k < at.size(); ++k) add(r + static_cast<std::ptrdiff_t>(k), *at[k]);
  }
  for (; r < rows; ++r) {
    const double* x = first_row + r * stride;
    const Node* n = root;
    while (n->left >= 0) n = child(*n, x);
    add(r, *n);
  }
}

}  // namespace estimator::models
