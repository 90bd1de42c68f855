// SPDX-License-Identifier: Apache-2.0
// metadata.json parsing and the canonical names selection relies on.
#include "models/metadata.h"

#include <gtest/gtest.h>

#include <cmath>
#include <initializer_list>
#include <string_view>
#include <utility>

#include "test_util.h"

namespace estimator::models {
namespace {

using testing::make_folder;

Result<Metadata> parse(const std::string& metadata, std::vector<std::string> hints = {}) {
  return parse_metadata(make_folder("dir/M", {{"metadata.json", metadata}}, std::move(hints)));
}

// (given, expected) pairs of a name mapping.
using Cases = std::initializer_list<std::pair<std::string_view, std::string_view>>;

TEST(CanonicalSource, ResolvesRaplAndPlatformAliases) {
  for (const auto& [given, want] : Cases{{"intel_rapl", "rapl-sysfs"},
                                         {"rapl", "rapl-sysfs"},
                                         {"rapl-msr", "rapl-sysfs"},
                                         {"rapl-sysfs", "rapl-sysfs"},
                                         {"Intel_RAPL", "rapl-sysfs"},
                                         {"ACPI", "acpi"},
                                         {"redfish", "acpi"},  // the same platform power as ACPI
                                         {"hmc", "acpi"},
                                         {"", ""}}) {
    EXPECT_EQ(canonical_source(given), want) << given;
  }
}

TEST(CanonicalOutputType, ResolvesOldNames) {
  for (const auto& [given, want] : Cases{{"AbsPower", "AbsPower"},
                                         {"AbsModelWeight", "AbsPower"},
                                         {"AbsComponentPower", "AbsPower"},
                                         {"DynComponentModelWeight", "DynPower"},
                                         {"DynPower", "DynPower"},
                                         {"Other", "Other"}}) {
    EXPECT_EQ(canonical_output_type(given), want) << given;
  }
}

TEST(MissingFeatures, JoinsAbsentNamesInOrder) {
  const std::vector<std::string> wanted{"a", "b", "c"};
  const std::vector<std::string_view> have{"c", "x"};
  EXPECT_EQ(missing_features(wanted, have), "a, b");
  const std::vector<std::string_view> all{"b", "a", "c"};
  EXPECT_EQ(missing_features(wanted, all), "");
}

TEST(Metadata, TrainerFromName) {
  for (const auto& [given, want] : Cases{{"SGDRegressorTrainer_0", "SGDRegressorTrainer"},
                                         {"XgboostFitTrainer_109", "XgboostFitTrainer"},
                                         {"Linear Regression_10", "Linear Regression"},
                                         {"Sample", "Sample"},
                                         {"A_b", "A_b"},
                                         {"A_", "A_"}}) {
    EXPECT_EQ(trainer_from_name(given), want) << given;
  }
}

TEST(Metadata, ModelServerFields) {
  // As published in kepler-model-db, plus the fields other generations add.
  auto md = parse(R"({"model_name": "SGDRegressorTrainer_0", "model_class": "scikit",
    "model_file": "SGDRegressorTrainer_0.json", "features": ["bpf_cpu_time_ms",
    "bpf_page_cache_hit"], "fe_files": [], "output_type": "AbsPower", "mae": 60.78,
    "mape": 17.77, "core_mape": -1, "node_type": 0, "source": "intel_rapl",
    "machine_spec": {"vendor": "intel", "cores": 96, "chips": 2}})");
  ASSERT_TRUE(md.ok()) << md.status().to_string();
  const ModelInfo& info = md->info;
  EXPECT_EQ(info.name, "SGDRegressorTrainer_0");
  EXPECT_EQ(info.trainer, "SGDRegressorTrainer");
  EXPECT_EQ(info.model_class, "scikit");
  EXPECT_EQ(md->model_file, "SGDRegressorTrainer_0.json");
  EXPECT_EQ(info.features, (std::vector<std::string>{"bpf_cpu_time_ms", "bpf_page_cache_hit"}));
  EXPECT_EQ(info.output_type, "AbsPower");
  EXPECT_EQ(info.source, "rapl-sysfs");
  EXPECT_DOUBLE_EQ(info.mae, 60.78);
  EXPECT_DOUBLE_EQ(info.mape, 17.77);
  EXPECT_EQ(info.node_type, "0");
  EXPECT_DOUBLE_EQ(info.machine_cores, 96);
  EXPECT_EQ(info.origin, "dir/M");
}

TEST(Metadata, ExplicitTrainerAndEnergySource) {
  auto md = parse(R"({"model_name": "X_3", "trainer": "Custom", "energy_source": "rapl-msr",
    "node_type": "m5.metal"})");
  ASSERT_TRUE(md.ok());
  EXPECT_EQ(md->info.trainer, "Custom");
  EXPECT_EQ(md->info.source, "rapl-sysfs");
  EXPECT_EQ(md->info.node_type, "m5.metal");
}

TEST(Metadata, UndefinedErrorsAreUnknown) {
  auto md = parse(R"({"model_name": "M", "mae": -1})");
  ASSERT_TRUE(md.ok());
  EXPECT_TRUE(std::isnan(md->info.mae));
  EXPECT_TRUE(std::isnan(md->info.mape));
  EXPECT_DOUBLE_EQ(md->info.machine_cores, 0);
  auto null_mae = parse(R"({"model_name": "M", "mae": null})");
  ASSERT_TRUE(null_mae.ok());
  EXPECT_TRUE(std::isnan(null_mae->info.mae));
}

TEST(Metadata, OldOutputTypesAreNormalized) {
  auto md = parse(R"({"model_name": "S", "output_type": "DynComponentModelWeight"})");
  ASSERT_TRUE(md.ok());
  EXPECT_EQ(md->info.output_type, "DynPower");
}

TEST(Metadata, PathHintsFillSourceAndOutputType) {
  auto md = parse(R"({"model_name": "M"})", {"models", "intel_rapl", "AbsModelWeight", "M"});
  ASSERT_TRUE(md.ok());
  EXPECT_EQ(md->info.source, "rapl-sysfs");
  EXPECT_EQ(md->info.output_type, "AbsPower");

  // metadata.json wins over the path.
  auto stated = parse(R"({"model_name": "M", "output_type": "DynPower", "source": "acpi"})",
                      {"rapl-sysfs", "AbsPower"});
  ASSERT_TRUE(stated.ok());
  EXPECT_EQ(stated->info.source, "acpi");
  EXPECT_EQ(stated->info.output_type, "DynPower");

  // Names that merely contain "Abs" are not output types.
  auto plain = parse(R"({"model_name": "M"})", {"Absolute", "rapl-sysfs-old"});
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->info.output_type, "");
  EXPECT_EQ(plain->info.source, "");
}

TEST(Metadata, RefusesWrongTypesNamingTheField) {
  auto expect_error = [](const std::string& text, std::string_view field) {
    auto md = parse(text);
    ASSERT_FALSE(md.ok()) << text;
    EXPECT_NE(md.status().message().find("dir/M/metadata.json"), std::string::npos)
        << md.status().message();
    EXPECT_NE(md.status().message().find(field), std::string::npos) << md.status().message();
  };
  expect_error(R"({"model_name": 3})", "model_name");
  expect_error(R"({"features": "cpu_cycles"})", "features");
  expect_error(R"({"features": ["a", 2]})", "features[1]");
  expect_error(R"({"mae": "3.1"})", "mae");
  expect_error(R"({"machine_spec": {"cores": "many"}})", "machine_spec.cores");
  expect_error(R"({"machine_spec": [96]})", "machine_spec");
  expect_error(R"({"node_type": 1.5})", "node_type");
  expect_error(R"([])", "expected an object");
  expect_error(R"({"model_name": )", "not valid JSON");
}

TEST(Metadata, FolderWithoutMetadata) {
  auto md = parse_metadata(make_folder("dir/empty", {{"weights.json", "{}"}}));
  ASSERT_FALSE(md.ok());
  EXPECT_EQ(md.status().code(), Code::kNotFound);
  EXPECT_NE(md.status().message().find("dir/empty"), std::string::npos);
}

}  // namespace
}  // namespace estimator::models
