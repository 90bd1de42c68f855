// SPDX-License-Identifier: Apache-2.0
// One row's total power from its per-component powers, for the APIs that answer one number
// per row (Kepler's 2022 socket form, GetPower in the clients).
//
// Components overlap: core and uncore are parts of package, and platform (acpi) is the
// whole node. So the total is platform when the model gives it; otherwise the larger of
// package and core + uncore (package contains both, so the larger one is the measured
// one: a ratio model answers package 0 when only core power was measured), plus dram, gpu
// and other. A model with a single column, whatever its name, gives the total directly.
#pragma once

#include <algorithm>
#include <cstddef>
#include <span>
#include <string_view>

namespace estimator {

// `components` names each value of `row`; returns 0 for an empty row.
template <typename Value>
double total_power(std::span<const std::string_view> components, std::span<const Value> row) {
  if (row.size() == 1) return static_cast<double>(row[0]);
  double platform = 0, package = 0, core_uncore = 0, rest = 0;
  bool has_platform = false;
  for (std::size_t c = 0; c < row.size() && c < components.size(); ++c) {
    const std::string_view name = components[c];
    const auto v = static_cast<double>(row[c]);
    if (name == "platform") {
      platform += v;
      has_platform = true;
    } else if (name == "package") {
      package += v;
    } else if (name == "core" || name == "uncore") {
      core_uncore += v;
    } else {
      rest += v;  // dram, gpu, other, and any component that does not overlap these
    }
  }
  if (has_platform) return platform;
  return std::max(package, core_uncore) + rest;
}

}  // namespace estimator
