// SPDX-License-Identifier: Apache-2.0
// The defaults compiled into the binary load cleanly and compute Kepler v0.9.0's formula.
#include "models/embedded_defaults.h"
#include "models/registry.h"

#include <gtest/gtest.h>

#include <cmath>

#include "test_util.h"

namespace estimator::models {
namespace {

using testing::evaluate;
using testing::near_rel;
using testing::rows;

// Coefficients of Kepler v0.9.0 data/model_weight/*.json (bias, bpf_cpu_time_ms weight,
// scale), written out again here so that the embedded files are checked against them.
struct Coefficients {
  double bias;
  double weight;
  double scale;
};
constexpr Coefficients kRaplAbsPackage{143.81206324506658, 305.148172889668, 95877.00000000001};
constexpr Coefficients kRaplAbsDram{18.616285480502686, 8.434209551249596, 95877.00000000001};
constexpr Coefficients kRaplDynPackage{89.26166499273477, 304.9021003654337, 95877.0};
constexpr Coefficients kRaplDynDram{4.456733766091277, 8.249791438136015, 95877.0};
constexpr Coefficients kAcpiAbs{63.732101547596734, 60.735455390707436, 3991.690709751875};
constexpr Coefficients kAcpiDyn{2.2983085534792616, 59.30618884592585, 3991.690709751875};

double kepler(const Coefficients& c, double bpf_cpu_time_ms) {
  return c.bias + c.weight * bpf_cpu_time_ms / c.scale;
}

class EmbeddedDefaults : public ::testing::Test {
 protected:
  void SetUp() override {
    folders = embedded_model_folders();
    sut = Registry::build(folders);
  }
  const Model* pick(Selector s, bool node_power = false) {
    const std::vector<std::string_view> features{"bpf_cpu_time_ms", "bpf_page_cache_hit"};
    Result<const Model*> m = sut->select(s, features, node_power);
    EXPECT_TRUE(m.ok()) << m.status().to_string();
    return m.ok() ? *m : nullptr;
  }
  std::vector<ModelFolder> folders;
  std::shared_ptr<const Registry> sut;
};

TEST_F(EmbeddedDefaults, AllLoadWithoutRefusal) {
  ASSERT_EQ(folders.size(), 5U);
  EXPECT_EQ(folders[0].origin, "embedded:acpi/AbsPower/SGDRegressorTrainer_0");
  EXPECT_EQ(folders[0].path_hints,
            (std::vector<std::string>{"acpi", "AbsPower", "SGDRegressorTrainer_0"}));
  EXPECT_EQ(folders[0].files.size(), 2U);
  for (const Refusal& r : sut->refused()) ADD_FAILURE() << r.origin << ": " << r.reason.to_string();
  EXPECT_EQ(sut->models().size(), 5U);
}

TEST_F(EmbeddedDefaults, RaplAbsPowerIsKeplersDefault) {
  const Model* m = pick({.output_type = "AbsPower", .source = "intel_rapl"});
  ASSERT_NE(m, nullptr);
  const ModelInfo& info = m->info();
  EXPECT_EQ(info.name, "SGDRegressorTrainer_0");
  EXPECT_EQ(info.trainer, "SGDRegressorTrainer");
  EXPECT_EQ(info.source, "rapl-sysfs");
  EXPECT_EQ(info.components, (std::vector<std::string>{"package", "core", "uncore", "dram"}));
  EXPECT_DOUBLE_EQ(info.mae, 60.78);  // kepler-model-db ec2-0.7.11 node type 0
  EXPECT_DOUBLE_EQ(info.mape, 17.77);

  auto e = evaluate(*m, {"bpf_page_cache_hit", "bpf_cpu_time_ms"},
                    rows({{7, 1000}, {0, 0}, {123, 95877}}));
  ASSERT_TRUE(e.status.ok()) << e.status.to_string();
  const double x[] = {1000, 0, 95877};
  for (int r = 0; r < 3; ++r) {
    EXPECT_TRUE(near_rel(kepler(kRaplAbsPackage, x[r]), e.out(r, 0))) << "row " << r;
    EXPECT_EQ(e.out(r, 1), 0.0F);
    EXPECT_EQ(e.out(r, 2), 0.0F);
    EXPECT_TRUE(near_rel(kepler(kRaplAbsDram, x[r]), e.out(r, 3))) << "row " << r;
  }
  // Row 2 by hand: 143.812063 + 305.148173 * 95877 / 95877.00000000001 = 448.960236
  EXPECT_NEAR(e.out(2, 0), 448.960236, 1e-3);
}

TEST_F(EmbeddedDefaults, RaplDynPowerRegressorWithoutNodePower) {
  const Model* m = pick({.output_type = "DynPower", .source = "rapl-sysfs"});
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->info().name, "SGDRegressorTrainer_0");
  EXPECT_TRUE(std::isnan(m->info().mae));
  auto e = evaluate(*m, {"bpf_cpu_time_ms", "bpf_page_cache_hit"}, rows({{2500, 1}}));
  ASSERT_TRUE(e.status.ok());
  EXPECT_TRUE(near_rel(kepler(kRaplDynPackage, 2500), e.out(0, 0)));
  EXPECT_TRUE(near_rel(kepler(kRaplDynDram, 2500), e.out(0, 3)));
}

TEST_F(EmbeddedDefaults, RaplDynPowerRatioWithNodePower) {
  const Model* m = pick({.output_type = "DynPower", .source = "rapl-sysfs"}, true);
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->info().name, "Ratio");
  EXPECT_EQ(m->info().components,
            (std::vector<std::string>{"package", "core", "uncore", "dram", "gpu", "other"}));
  // Without hardware counters the ratio falls back to bpf_cpu_time_ms (1 and 3).
  const float package[] = {40};
  const float uncore[] = {2};
  auto e = evaluate(*m, {"bpf_cpu_time_ms", "bpf_page_cache_hit"}, rows({{1, 0}, {3, 0}}), {},
                    {{"package", package, {}}, {"uncore", uncore, {}}});
  ASSERT_TRUE(e.status.ok()) << e.status.to_string();
  EXPECT_FLOAT_EQ(e.out(0, 0), 10.0F);  // 1/4 * 40
  EXPECT_FLOAT_EQ(e.out(1, 0), 30.0F);  // 3/4 * 40
  EXPECT_FLOAT_EQ(e.out(0, 2), 1.0F);   // uncore: even
  EXPECT_FLOAT_EQ(e.out(1, 3), 0.0F);   // dram: not measured
}

TEST_F(EmbeddedDefaults, AcpiModelsPredictPlatform) {
  const Model* abs = pick({.output_type = "AbsPower", .source = "acpi"});
  const Model* dyn = pick({.output_type = "DynPower", .source = "acpi"});
  ASSERT_NE(abs, nullptr);
  ASSERT_NE(dyn, nullptr);
  EXPECT_EQ(abs->info().components, (std::vector<std::string>{"platform"}));
  const auto x = rows({{3991.690709751875F, 0}, {120, 0}});
  auto a = evaluate(*abs, {"bpf_cpu_time_ms", "bpf_page_cache_hit"}, x);
  auto d = evaluate(*dyn, {"bpf_cpu_time_ms", "bpf_page_cache_hit"}, x);
  ASSERT_TRUE(a.status.ok());
  ASSERT_TRUE(d.status.ok());
  for (int r = 0; r < 2; ++r) {
    EXPECT_TRUE(near_rel(kepler(kAcpiAbs, x(r, 0)), a.out(r, 0)));
    EXPECT_TRUE(near_rel(kepler(kAcpiDyn, x(r, 0)), d.out(r, 0)));
  }
  // Row 0 by hand: x = scale, so bias + weight = 63.732102 + 60.735455 = 124.467557
  EXPECT_NEAR(a.out(0, 0), 124.467557, 1e-3);
}

TEST_F(EmbeddedDefaults, KeplerRequiresBothBpfFeatures) {
  const std::vector<std::string_view> features{"bpf_cpu_time_ms"};
  auto r = sut->select({.output_type = "AbsPower", .source = "rapl-sysfs"}, features, false);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("bpf_page_cache_hit"), std::string::npos);
}

}  // namespace
}  // namespace estimator::models
