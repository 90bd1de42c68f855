// SPDX-License-Identifier: Apache-2.0
// The ratio model against hand-computed splits of node power.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>

#include "test_files.h"
#include "test_util.h"

namespace estimator::models {
namespace {

using testing::evaluate;
using testing::make_folder;
using testing::must_load;
using testing::rows;

constexpr const char* kMeta = R"({"model_name": "R", "model_class": "ratio",
  "model_file": "ratio.json", "output_type": "DynPower", "source": "rapl-sysfs"})";

constexpr const char* kRatio = R"({
  "components": {"package": "cpu_instructions", "uncore": "", "dram": "cache_miss",
                 "gpu": "gpu_compute_util", "other": ""},
  "fallback_usage": "bpf_cpu_time_ms"})";

ModelFolder ratio_folder(const char* ratio = kRatio) {
  return make_folder("mem/R", {{"metadata.json", kMeta}, {"ratio.json", ratio}});
}

// package: 10 + 6 W over two packages, idle 2 + 1 W; uncore 3 W; dram 6 W; no gpu and
// no other power measured.
const float kPackage[] = {10, 6};
const float kPackageIdle[] = {2, 1};
const float kUncore[] = {3};
const float kDram[] = {6};
std::vector<NodePower> node_power() {
  return {{"package", kPackage, kPackageIdle}, {"uncore", kUncore, {}}, {"dram", kDram, {}}};
}

TEST(RatioModel, Info) {
  auto sut = must_load(ratio_folder());
  ASSERT_NE(sut, nullptr);
  const ModelInfo& info = sut->info();
  EXPECT_EQ(info.components,
            (std::vector<std::string>{"package", "uncore", "dram", "gpu", "other"}));
  EXPECT_EQ(info.features, (std::vector<std::string>{"cpu_instructions", "cache_miss",
                                                     "gpu_compute_util", "bpf_cpu_time_ms"}));
  EXPECT_TRUE(info.needs_node_power);
  EXPECT_TRUE(std::isnan(info.mae));
  EXPECT_EQ(info.model_class, "ratio");
  EXPECT_EQ(info.output_type, "DynPower");
}

TEST(RatioModel, SplitsByUsageEvenlyAndIdle) {
  auto sut = must_load(ratio_folder());
  ASSERT_NE(sut, nullptr);
  // cpu_instructions 1, 3, 4 (sum 8); cache_miss all 0; gpu_compute_util 5, 5, 0.
  auto e = evaluate(*sut, {"cpu_instructions", "cache_miss", "gpu_compute_util"},
                    rows({{1, 0, 5}, {3, 0, 5}, {4, 0, 0}}), {}, node_power());
  ASSERT_TRUE(e.status.ok()) << e.status.to_string();
  // package: P = 16, idle I = 3 -> u/8*16 + 3/3
  EXPECT_FLOAT_EQ(e.out(0, 0), 1.0F / 8 * 16 + 1);  // 3
  EXPECT_FLOAT_EQ(e.out(1, 0), 3.0F / 8 * 16 + 1);  // 7
  EXPECT_FLOAT_EQ(e.out(2, 0), 4.0F / 8 * 16 + 1);  // 9
  // uncore: even split of 3 W
  for (int r = 0; r < 3; ++r) EXPECT_FLOAT_EQ(e.out(r, 1), 1.0F);
  // dram: cache_miss sums to 0 -> even split of 6 W
  for (int r = 0; r < 3; ++r) EXPECT_FLOAT_EQ(e.out(r, 2), 2.0F);
  // gpu and other: no node power in the request -> 0, whatever the usage
  for (int r = 0; r < 3; ++r) {
    EXPECT_FLOAT_EQ(e.out(r, 3), 0.0F);
    EXPECT_FLOAT_EQ(e.out(r, 4), 0.0F);
  }
  // The shares of a component add up to its node power plus idle.
  EXPECT_FLOAT_EQ(e.out.col(0).sum(), 16.0F + 3.0F);
}

TEST(RatioModel, FallbackColumnWhenUsageColumnAbsent) {
  auto sut = must_load(ratio_folder());
  ASSERT_NE(sut, nullptr);
  // No cpu_instructions nor gpu_compute_util: both use bpf_cpu_time_ms (2, 2, 4; sum 8).
  const float gpu[] = {8};
  std::vector<NodePower> np = node_power();
  np.push_back({"gpu", gpu, {}});
  auto e = evaluate(*sut, {"cache_miss", "bpf_cpu_time_ms"}, rows({{1, 2}, {1, 2}, {2, 4}}),
                    {}, np);
  ASSERT_TRUE(e.status.ok()) << e.status.to_string();
  EXPECT_FLOAT_EQ(e.out(0, 0), 2.0F / 8 * 16 + 1);  // 5
  EXPECT_FLOAT_EQ(e.out(2, 0), 4.0F / 8 * 16 + 1);  // 9
  // dram now has usage 1, 1, 2 (sum 4): u/4*6
  EXPECT_FLOAT_EQ(e.out(0, 2), 1.5F);
  EXPECT_FLOAT_EQ(e.out(2, 2), 3.0F);
  // gpu: bpf_cpu_time_ms share of 8 W: 2/8*8 = 2, 4/8*8 = 4
  EXPECT_FLOAT_EQ(e.out(0, 3), 2.0F);
  EXPECT_FLOAT_EQ(e.out(2, 3), 4.0F);
}

TEST(RatioModel, UsageColumnWinsOverFallback) {
  auto sut = must_load(ratio_folder());
  ASSERT_NE(sut, nullptr);
  auto e = evaluate(*sut, {"bpf_cpu_time_ms", "cpu_instructions", "cache_miss", "gpu_compute_util"},
                    rows({{100, 1, 0, 0}, {0, 3, 0, 0}}), {}, node_power());
  ASSERT_TRUE(e.status.ok());
  // package by cpu_instructions (1, 3; sum 4), not bpf_cpu_time_ms: 1/4*16 + 3/2
  EXPECT_FLOAT_EQ(e.out(0, 0), 4.0F + 1.5F);
  EXPECT_FLOAT_EQ(e.out(1, 0), 12.0F + 1.5F);
}

TEST(RatioModel, NegativeUsageCountsAsZero) {
  auto sut = must_load(ratio_folder());
  ASSERT_NE(sut, nullptr);
  auto e = evaluate(*sut, {"cpu_instructions", "cache_miss", "gpu_compute_util"},
                    rows({{-4, 0, 0}, {2, 0, 0}}), {}, node_power());
  ASSERT_TRUE(e.status.ok());
  // usage (0, 2): all 16 W to row 1, idle 3 W split evenly
  EXPECT_FLOAT_EQ(e.out(0, 0), 1.5F);
  EXPECT_FLOAT_EQ(e.out(1, 0), 16.0F + 1.5F);
}

TEST(RatioModel, MissingUsageAndFallbackIsNamed) {
  auto sut = must_load(ratio_folder());
  ASSERT_NE(sut, nullptr);
  auto e = evaluate(*sut, {"cache_miss"}, rows({{1}}), {}, node_power());
  EXPECT_EQ(e.status.code(), Code::kMissingFeatures);
  EXPECT_EQ(e.status.message(),
            "model R needs features missing from the request: cpu_instructions (or "
            "bpf_cpu_time_ms), gpu_compute_util (or bpf_cpu_time_ms)");

  auto no_fallback = must_load(ratio_folder(R"({"components": {"package": "cpu_instructions",
      "uncore": ""}})"));
  ASSERT_NE(no_fallback, nullptr);
  auto f = evaluate(*no_fallback, {"bpf_cpu_time_ms"}, rows({{1}}), {}, node_power());
  EXPECT_EQ(f.status.code(), Code::kMissingFeatures);
  EXPECT_EQ(f.status.message(),
            "model R needs features missing from the request: cpu_instructions");
  // Only even splits: no column needed at all.
  auto even = must_load(ratio_folder(R"({"components": {"uncore": ""}})"));
  ASSERT_NE(even, nullptr);
  auto g = evaluate(*even, {}, RowMatrixF(4, 0), {}, node_power());
  ASSERT_TRUE(g.status.ok()) << g.status.to_string();
  EXPECT_FLOAT_EQ(g.out(3, 0), 0.75F);  // 3 W / 4 rows
}

TEST(RatioModel, RejectsNonFiniteInputsAndForeignPlans) {
  auto sut = must_load(ratio_folder());
  ASSERT_NE(sut, nullptr);
  auto e = evaluate(*sut, {"cpu_instructions", "cache_miss", "gpu_compute_util"},
                    rows({{std::nanf(""), 0, 0}}), {}, node_power());
  EXPECT_EQ(e.status.code(), Code::kInvalidValue);

  const float inf[] = {INFINITY};
  auto p = evaluate(*sut, {"cpu_instructions", "cache_miss", "gpu_compute_util"},
                    rows({{1, 0, 0}}), {}, {{"package", inf, {}}});
  EXPECT_EQ(p.status.code(), Code::kInvalidValue);

  auto weights = must_load(make_folder(
      "mem/W", {{"metadata.json", R"({"model_name": "W", "model_file": "w.json"})"},
                {"w.json", R"({"All_Weights": {"Bias_Weight": 1, "Numerical_Variables": {}}})"}}));
  ASSERT_NE(weights, nullptr);
  const std::vector<std::string_view> cols{"cpu_instructions", "cache_miss", "gpu_compute_util"};
  auto weight_plan = weights->plan(cols);
  ASSERT_TRUE(weight_plan.ok());
  RowMatrixF x = rows({{1, 0, 0}});
  RowMatrixF out(1, 5);
  const ModelInput in{ConstMatrixView(x.data(), 1, 3), {}, {}};
  EXPECT_EQ(sut->predict(**weight_plan, in, MatrixView(out.data(), 1, 5)).code(),
            Code::kInternal);
}

TEST(RatioModel, MalformedFilesAreRefused) {
  auto err = [](const char* ratio) {
    Result<std::unique_ptr<Model>> m = load_model(ratio_folder(ratio));
    EXPECT_FALSE(m.ok());
    return m.status().message();
  };
  EXPECT_NE(err(R"({"fallback_usage": "x"})").find("ratio.json: components: missing"),
            std::string::npos);
  EXPECT_NE(err(R"({"components": {"package": 3}})").find("components.package"),
            std::string::npos);
  EXPECT_NE(err(R"({"components": {}})").find("no components"), std::string::npos);
  EXPECT_NE(err(R"({"components": {"package": ""}, "fallback_usage": 1})")
                .find("fallback_usage"),
            std::string::npos);
  EXPECT_NE(err(R"({"components": )").find("not valid JSON"), std::string::npos);
}

// ---- the 2022 CorrRatio variant -------------------------------------------------------

constexpr const char* kCorrMeta = R"({"model_name": "CorrRatio", "model_class": "ratio",
  "model_file": "ratio.json", "features": ["a", "b"]})";
constexpr const char* kCorr = R"({
  "core_score": {"a": 0.25, "b": 0.75},
  "dram_score": {"b": 1},
  "gpu_score": {"a": 0, "b": 0}})";

// Kepler's formula written out directly: P_c * sum_m score_cm * x_im / sum_k x_km, an even
// split for a column that sums to 0.
double corr_share(const std::vector<std::vector<double>>& x, std::size_t row,
                  const std::vector<std::pair<std::size_t, double>>& scores) {
  double share = 0;
  for (const auto& [col, score] : scores) {
    double sum = 0;
    for (const auto& r : x) sum += r[col];
    share += score * (sum > 0 ? x[row][col] / sum : 1.0 / static_cast<double>(x.size()));
  }
  return share;
}

TEST(CorrRatioModel, WeightsSeveralUsageColumnsByScore) {
  auto sut = must_load(make_folder("mem/C", {{"metadata.json", kCorrMeta}, {"ratio.json", kCorr}}));
  ASSERT_NE(sut, nullptr);
  EXPECT_EQ(sut->info().components, (std::vector<std::string>{"core", "dram", "gpu"}));
  EXPECT_EQ(sut->info().features, (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(sut->info().needs_node_power);

  const std::vector<std::vector<double>> x{{1, 0}, {3, 0}, {4, 0}};  // b sums to 0: even
  const float core[] = {30, 10};  // two packages
  const float dram[] = {9};
  const float core_idle[] = {6};
  auto e = evaluate(*sut, {"b", "a", "extra"}, rows({{0, 1, 7}, {0, 3, 7}, {0, 4, 7}}), {},
                    {{"core", core, core_idle}, {"dram", dram, {}}});
  ASSERT_TRUE(e.status.ok()) << e.status.to_string();
  for (std::size_t r = 0; r < 3; ++r) {
    const double want_core = 40 * corr_share(x, r, {{0, 0.25}, {1, 0.75}}) + 6.0 / 3;
    const double want_dram = 9 * corr_share(x, r, {{1, 1.0}});
    EXPECT_NEAR(e.out(static_cast<Eigen::Index>(r), 0), want_core, 1e-5 * want_core) << r;
    EXPECT_NEAR(e.out(static_cast<Eigen::Index>(r), 1), want_dram, 1e-5 * want_dram) << r;
    EXPECT_EQ(e.out(static_cast<Eigen::Index>(r), 2), 0.0F) << "gpu not measured";
  }
}

TEST(CorrRatioModel, MissingScoredColumnIsNamedAndBadScoresRefused) {
  auto sut = must_load(make_folder("mem/C", {{"metadata.json", kCorrMeta}, {"ratio.json", kCorr}}));
  ASSERT_NE(sut, nullptr);
  auto e = evaluate(*sut, {"a"}, rows({{1}}), {}, {});
  EXPECT_EQ(e.status.code(), Code::kMissingFeatures);
  EXPECT_NE(e.status.message().find("missing from the request: b"), std::string::npos)
      << e.status.message();
  for (const char* bad : {R"({"core_score": {"a": "x"}})", R"({"core_score": [1]})",
                          R"({"core_score": {"a": 1e999}})"}) {
    auto m = load_model(make_folder("mem/C", {{"metadata.json", kCorrMeta}, {"ratio.json", bad}}));
    EXPECT_FALSE(m.ok()) << bad;
  }
}

// Kepler's own 2022 CorrRatio file (../shared/kepler-samples), against the formula.
TEST(CorrRatioModel, KeplerPublishedScores) {
  const std::filesystem::path dir =
      std::filesystem::path(ESTIMATOR_SHARED_DIR) / "kepler-samples/kepler-2022-estimator-model";
  const auto meta = testing::read_file_bytes(dir / "CorrRatio__metadata.json");
  const auto ratio = testing::read_file_bytes(dir / "CorrRatio__ratio.json");
  if (!meta || !ratio) GTEST_SKIP() << "../shared/kepler-samples is absent: " << dir;
  auto sut = must_load(make_folder("kepler/CorrRatio", {{"metadata.json", *meta}, {"ratio.json", *ratio}}));
  ASSERT_NE(sut, nullptr);
  ASSERT_EQ(sut->info().components, (std::vector<std::string>{"core", "dram", "gpu", "other"}));
  // curr_cache_misses, curr_cpu_cycles, curr_cpu_instructions; the scores published.
  const std::vector<std::vector<double>> x{{10, 2e6, 3e6}, {30, 1e6, 1e6}, {0, 5e5, 2e6}};
  const float core[] = {50}, dram[] = {8}, gpu[] = {20}, other[] = {4};
  auto e = evaluate(*sut, {"curr_cache_misses", "curr_cpu_cycles", "curr_cpu_instructions"},
                    rows({{10, 2e6, 3e6}, {30, 1e6, 1e6}, {0, 5e5, 2e6}}), {},
                    {{"core", core, {}}, {"dram", dram, {}}, {"gpu", gpu, {}}, {"other", other, {}}});
  ASSERT_TRUE(e.status.ok()) << e.status.to_string();
  for (std::size_t r = 0; r < 3; ++r) {
    const double want[] = {
        50 * corr_share(x, r, {{0, 0.260257}, {1, 0.368648}, {2, 0.371095}}),
        8 * corr_share(x, r, {{0, 0.319293}, {1, 0.340407}, {2, 0.340299}}),
        20 * corr_share(x, r, {{2, 1.0}}),
        4 * corr_share(x, r, {{2, 1.0}}),
    };
    for (Eigen::Index c = 0; c < 4; ++c) {
      EXPECT_NEAR(e.out(static_cast<Eigen::Index>(r), c), want[c], 1e-5 * want[c]) << r << "," << c;
    }
  }
}

}  // namespace
}  // namespace estimator::models
