// SPDX-License-Identifier: Apache-2.0
// The seed's own 2022 model folders (../shared/model-samples/kepler-2022, read in place)
// and scikit-learn's predictions for them (tools/kepler2022_reference.py, run with
// /usr/bin/python3 at test time): shared by tests/models/kepler2022_test.cpp and the
// daemon-level tests/integration/kepler2022_daemon_test.cpp.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "tests/support/shell_command.h"

namespace estimator::testing::kepler2022 {

namespace fs = std::filesystem;

inline fs::path models_dir() {
  return fs::path(ESTIMATOR_SHARED_DIR) / "model-samples" / "kepler-2022";
}

#define REQUIRE_KEPLER_2022()                                                                 \
  if (!std::filesystem::is_directory(::estimator::testing::kepler2022::models_dir())) {      \
    GTEST_SKIP() << "the seed's 2022 model folders are not at "                               \
                 << ::estimator::testing::kepler2022::models_dir().string()                   \
                 << " (the shared/ folder beside the repository); nothing to compare with"; \
  }

#define REQUIRE_SKLEARN_REFERENCE()                                                        \
  if (!::estimator::testing::kepler2022::have_reference()) {                               \
    GTEST_SKIP() << "/usr/bin/python3 with scikit-learn and numpy is not installed: no " \
                    "reference to compare with";                                           \
  }

// The three scikit-learn folders; the fourth, CorrRatio, is a ratio model.
inline const std::array<std::string, 3> kScikitModels = {
    "Linear Regression_10", "Polynomial Regression_10", "GradientBoostingRegressor_10"};

// metadata.json's features of the three scikit-learn folders, in order.
inline const std::array<std::string_view, 10> kFeatures = {
    "curr_bytes_read",       "curr_bytes_writes",
    "curr_cache_misses",     "curr_cgroupfs_cpu_usage_us",
    "curr_cgroupfs_memory_usage_bytes", "curr_cgroupfs_system_cpu_usage_us",
    "curr_cgroupfs_user_cpu_usage_us",  "curr_cpu_cycles",
    "curr_cpu_instructions", "curr_cpu_time"};

// The training range of each feature: scaler.pkl's data_max_ (data_min_ is 0), as
// scikit-learn prints it; except the first two, constant 0 in training (scale_ 1), for
// which any byte count is beyond the range.
inline constexpr std::array<double, 10> kTrainedMax = {
    1000, 2000, 6.98216531e+09, 1.85476967e+12, 1.67397562e+10,
    1.13543451e+08, 1.85476967e+12, 2.30914963e+13, 5.83171688e+13, 6.01469600e+03};

// Rows (row-major, kFeatures order) spanning the training range and leaving it on both
// sides: MinMaxScaler does not clip, so these are extrapolated, not saturated.
inline std::vector<float> rows_over_the_range() {
  std::vector<double> fractions = {0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.5, 2.5, -0.05};
  std::vector<float> m;
  for (double f : fractions) {
    for (double max : kTrainedMax) m.push_back(static_cast<float>(f * max));
  }
  // Features moving independently, within and beyond the range.
  std::mt19937 rng(2022);
  std::uniform_real_distribution<double> u(0.0, 1.6);
  for (int r = 0; r < 12; ++r) {
    for (double max : kTrainedMax) m.push_back(static_cast<float>(u(rng) * max));
  }
  return m;
}

using estimator::testing::shell_quote;

inline bool have_reference() {
  static const bool ok =
      std::system("/usr/bin/python3 -c 'import sklearn, numpy' >/dev/null 2>&1") == 0;
  return ok;
}

// scikit-learn's prediction (before clamping) for each row of `x` (cols = kFeatures.size())
// through the folder `model`; empty, with a test failure, when the script fails.
inline std::vector<double> reference(const std::string& model, const std::vector<float>& x) {
  char path[] = "/tmp/kepler2022_rows_XXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) {
    ADD_FAILURE() << "mkstemp failed";
    return {};
  }
  close(fd);
  {
    std::ofstream out(path);
    char buf[32];
    for (std::size_t i = 0; i < x.size(); ++i) {
      std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(x[i]));  // reads back as x[i]
      out << buf << ((i + 1) % kFeatures.size() == 0 ? "\n" : ",");
    }
  }
  const std::string cmd = "/usr/bin/python3 " + shell_quote(KEPLER2022_REFERENCE_SCRIPT) + " " +
                          shell_quote((models_dir() / model).string()) + " < " + path;
  std::vector<double> y;
  if (const std::optional<std::string> text = command_output(cmd)) {
    std::istringstream in(*text);
    for (double v; in >> v;) y.push_back(v);
  } else {
    ADD_FAILURE() << "reference script failed: " << cmd;
  }
  fs::remove(path);
  if (y.size() * kFeatures.size() != x.size()) {
    ADD_FAILURE() << "reference script gave " << y.size() << " values for "
                  << x.size() / kFeatures.size() << " rows: " << cmd;
    y.clear();
  }
  return y;
}

// The daemon's answer for a reference value: negatives clamp to 0 (Kepler's rule).
inline double clamped(double reference) { return std::max(reference, 0.0); }

// |ours - reference| relative to the reference (absolute below 1e-9 W: a clamped 0).
inline double relative_error(double ours, double reference) {
  const double want = clamped(reference);
  return std::abs(ours - want) / std::max(std::abs(want), 1e-9);
}

inline constexpr double kTolerance = 1e-5;  // KEPLER.md section 6

}  // namespace estimator::testing::kepler2022
