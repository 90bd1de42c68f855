// Walking several rows down one decision tree at once, for the tree models (XGBoost,
// scikit-learn gradient boosting). One row's walk is a chain of dependent loads - the node,
// then the row's value of its feature, then the child - that the CPU can only wait for;
// kTreeLanes rows walked a level at a time give it that many independent chains to
// overlap. Which child a row takes is the model's own rule (`child`), so the leaves are
// exactly those of walking each row alone.
#pragma once

#include <array>
#include <cstddef>

namespace estimator::models {

inline constexpr std::size_t kTreeLanes = 8;

template <typename T>
using TreeLanes = std::array<T, kTreeLanes>;

// The leaves `rows` reach from `root`. A node is a leaf when its `left` is negative;
// child(node, row) returns the child `row` goes to.
template <typename Node, typename Child>
TreeLanes<const Node*> leaves_of(const Node* root, const TreeLanes<const double*>& rows,
                                 Child&& child) {
  TreeLanes<const Node*> at;
  at.fill(root);
  for (bool moved = true; moved;) {
    moved = false;
    for (std::size_t k = 0; k < kTreeLanes; ++k) {
      if (at[k]->left < 0) continue;  // at its leaf
      at[k] = child(*at[k], rows[k]);
      moved = true;
    }
  }
  return at;
}

}  // namespace estimator::models
