// SPDX-License-Identifier: Apache-2.0
// Non-owning views of the per-request inputs besides the matrix, shared by the wire codec
// (schema/), the models and the clients so no layer converts between look-alike types.
#pragma once

#include <span>
#include <string_view>

namespace estimator {

// A categorical feature of the node, e.g. {"cpu_architecture", "Sky Lake"}.
struct SystemValue {
  std::string_view name;
  std::string_view value;
};

// Measured node power of one component in watts, one value per CPU package.
// idle_watts is empty when unknown.
struct NodePower {
  std::string_view component;
  std::span<const float> watts;
  std::span<const float> idle_watts;
};

}  // namespace estimator
