// SPDX-License-Identifier: Apache-2.0
// How loaders write an array shape in messages: numpy's notation, "(3,)" and "(2, 5)".
#pragma once

#include <string>
#include <vector>

namespace estimator::models {

template <typename Int>
std::string shape_text(const std::vector<Int>& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

}  // namespace estimator::models
