// SPDX-License-Identifier: Apache-2.0
// A simulated node whose power follows a known model, for the tests of choosing models by
// measured error (`estimator validate`, the daemon's measured selection).
//
// Ground truth, node level (AbsPower, idle included), in watts:
//   package = 40 + 2.0 * cpu_util + 0.05 * mem_mb
//   dram    =  5 + 0.01 * mem_mb
// measured = truth + noise, the noise uniform in [-0.5, 0.5] W from a fixed generator.
// Three weight models serve rapl-sysfs AbsPower from [cpu_util, mem_mb]; their published
// errors rank them exactly wrongly:
//   Published_0 (published mae 0.5):  package = 70 + 1.5 cpu + 0.02 mem, dram = 2 + 0.02 mem
//   Middle_0    (published mae 2):    package = 40 + 2.2 cpu + 0.05 mem, dram = 5 + 0.012 mem
//   Truth_0     (published mae 9):    the ground truth itself.
// The tests compute the expected errors from these formulas, not from the models.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace estimator::testing {

struct NodeModel {
  const char* name;
  double published_mae;
  double package_bias, package_cpu, package_mem;
  double dram_bias, dram_mem;

  double package(double cpu, double mem) const { return package_bias + package_cpu * cpu + package_mem * mem; }
  double dram(double mem) const { return dram_bias + dram_mem * mem; }
};

inline constexpr NodeModel kPublishedBest{"Published_0", 0.5, 70, 1.5, 0.02, 2, 0.02};
inline constexpr NodeModel kMiddle{"Middle_0", 2, 40, 2.2, 0.05, 5, 0.012};
inline constexpr NodeModel kTruth{"Truth_0", 9, 40, 2.0, 0.05, 5, 0.01};
inline constexpr NodeModel kNodeModels[] = {kPublishedBest, kMiddle, kTruth};

struct NodeSample {
  float cpu_util, mem_mb;     // features
  float package, dram;        // measured watts (truth + noise)
};

// `n` intervals of a node whose load wanders; the same on every call.
inline std::vector<NodeSample> node_samples(std::size_t n) {
  std::uint64_t state = 0x2545F4914F6CDD1DULL;
  auto uniform = [&] {  // xorshift64*, in [0, 1)
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return static_cast<double>((state * 0x2545F4914F6CDD1DULL) >> 11) / 9007199254740992.0;
  };
  std::vector<NodeSample> out;
  for (std::size_t i = 0; i < n; ++i) {
    const double t = static_cast<double>(i);
    const auto cpu = static_cast<float>(50 + 40 * std::sin(t / 7.0) + 5 * uniform());
    const auto mem = static_cast<float>(2000 + 1500 * std::cos(t / 11.0) + 100 * uniform());
    const auto package = static_cast<float>(kTruth.package(cpu, mem) + uniform() - 0.5);
    const auto dram = static_cast<float>(kTruth.dram(mem) + uniform() - 0.5);
    out.push_back({cpu, mem, package, dram});
  }
  return out;
}

// Writes the three models as rapl-sysfs AbsPower weight-model folders under `dir`.
inline void write_node_models(const std::filesystem::path& dir) {
  for (const NodeModel& m : kNodeModels) {
    const std::filesystem::path folder = dir / m.name;
    std::filesystem::create_directories(folder);
    std::ofstream(folder / "metadata.json")
        << R"({"model_name": ")" << m.name << R"(", "model_class": "weight", )"
        << R"("model_file": "weights.json", "source": "rapl-sysfs", "output_type": "AbsPower", )"
        << R"("features": ["cpu_util", "mem_mb"], "mae": )" << m.published_mae << "}";
    std::ofstream(folder / "weights.json")
        << R"({"package": {"All_Weights": {"Bias_Weight": )" << m.package_bias
        << R"(, "Numerical_Variables": {"cpu_util": {"scale": 1, "weight": )" << m.package_cpu
        << R"(}, "mem_mb": {"scale": 1, "weight": )" << m.package_mem << R"(}}}},)"
        << R"( "dram": {"All_Weights": {"Bias_Weight": )" << m.dram_bias
        << R"(, "Numerical_Variables": {"cpu_util": {"scale": 1, "weight": 0}, )"
        << R"("mem_mb": {"scale": 1, "weight": )" << m.dram_mem << "}}}}}";
  }
}

// The exponentially weighted MAE of one component as docs/models.md defines it, over
// `errors` in time order: sum(a (1-a)^(n-1-i) e_i) / sum(a (1-a)^(n-1-i)), a = 2 / (w + 1).
inline double weighted_mean(const std::vector<double>& errors, double window) {
  const double a = 2 / (window + 1);
  double num = 0, den = 0;
  for (double e : errors) {
    num = (1 - a) * num + a * e;
    den = (1 - a) * den + a;
  }
  return num / den;
}

// The weighted MAE of `m` per component (package, dram) against the samples' measurement.
inline std::pair<double, double> weighted_maes(const NodeModel& m, const std::vector<NodeSample>& samples,
                                               double window) {
  std::vector<double> p, d;
  for (const NodeSample& s : samples) {
    p.push_back(std::abs(m.package(s.cpu_util, s.mem_mb) - s.package));
    d.push_back(std::abs(m.dram(s.mem_mb) - s.dram));
  }
  return {weighted_mean(p, window), weighted_mean(d, window)};
}

}  // namespace estimator::testing
