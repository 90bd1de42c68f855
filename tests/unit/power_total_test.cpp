// SPDX-License-Identifier: Apache-2.0
// The per-row total of the one-number-per-row APIs (common/power_total.h).
#include "common/power_total.h"

#include <gtest/gtest.h>

#include <string_view>
#include <vector>

namespace estimator {
namespace {

double total(std::vector<std::string_view> names, std::vector<float> row) {
  return total_power<float>(names, row);
}

TEST(PowerTotal, RaplComponentsDoNotCountCoreAndUncoreTwice) {
  // package 50 contains core 30 and uncore 5; dram, gpu and other add.
  EXPECT_DOUBLE_EQ(total({"package", "core", "uncore", "dram"}, {50, 30, 5, 8}), 58);
  EXPECT_DOUBLE_EQ(total({"package", "core", "uncore", "dram", "gpu", "other"}, {50, 30, 5, 8, 20, 2}), 80);
}

TEST(PowerTotal, CoreCountsWhenPackageWasNotMeasured) {
  // A ratio model answers package 0 when only core power was measured (Kepler's 2022 form).
  EXPECT_DOUBLE_EQ(total({"package", "core", "uncore", "dram"}, {0, 30, 0, 8}), 38);
  EXPECT_DOUBLE_EQ(total({"core", "dram", "gpu", "other"}, {30, 8, 20, 2}), 60);
}

TEST(PowerTotal, PlatformIsTheWholeNode) {
  EXPECT_DOUBLE_EQ(total({"platform", "package", "dram"}, {200, 50, 8}), 200);
}

TEST(PowerTotal, SingleColumnIsTheTotalAndEmptyIsZero) {
  EXPECT_DOUBLE_EQ(total({"whatever"}, {12.5}), 12.5);
  EXPECT_DOUBLE_EQ(total({}, {7}), 7);
  EXPECT_DOUBLE_EQ(total({}, {}), 0);
}

}  // namespace
}  // namespace estimator
