// SPDX-License-Identifier: Apache-2.0
// Kepler's own published files (../shared/kepler-samples, read in place, never copied)
// load and predict the formula computed here independently from the same JSON.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "test_util.h"
#include "tests/support/files.h"

namespace estimator::models {
namespace {

using estimator::testing::read_file;

namespace fs = std::filesystem;
using testing::evaluate;
using testing::make_folder;
using testing::must_load;
using testing::near_rel;

fs::path samples_dir() { return fs::path(ESTIMATOR_SHARED_DIR) / "kepler-samples"; }

#define REQUIRE_SAMPLES()                                                                \
  if (!fs::is_directory(samples_dir())) {                                                \
    GTEST_SKIP() << "Kepler samples not found at " << samples_dir().string()             \
                 << " (the shared/ folder beside the repository); nothing to compare with"; \
  }

// The reference: Kepler's formula evaluated straight from the parsed JSON, row by row.
double reference(const nlohmann::json& all_weights, const std::vector<std::string>& names,
                 const std::vector<double>& row, std::string_view arch) {
  double p = all_weights.value("Bias_Weight", 0.0);
  for (const auto& [feature, values] : all_weights["Categorical_Variables"].items()) {
    if (feature == "cpu_architecture" && values.contains(std::string(arch))) {
      p += values[std::string(arch)]["weight"].get<double>();
    }
  }
  for (std::size_t j = 0; j < names.size(); ++j) {
    const auto& v = all_weights["Numerical_Variables"][names[j]];
    const double w = v["weight"].get<double>();
    if (v.contains("scale")) {
      const double s = v["scale"].get<double>();
      if (s != 0) p += w * row[j] / s;
    } else {
      const double var = v["variance"].get<double>();
      if (var != 0) p += w * (row[j] - v["mean"].get<double>()) / std::sqrt(var);
    }
  }
  return p < 0 ? 0 : p;
}

TEST(KeplerSamples, V090DefaultWeights) {
  REQUIRE_SAMPLES();
  const fs::path dir = samples_dir() / "kepler-v0.9.0-data-model_weight";
  const std::vector<std::string> names{"bpf_cpu_time_ms", "bpf_page_cache_hit"};
  const std::vector<std::vector<double>> data{{0, 0}, {1000, 5}, {95877, 100}, {250000, 0}};
  RowMatrixF x(static_cast<Eigen::Index>(data.size()), 2);
  for (std::size_t r = 0; r < data.size(); ++r) {
    x(static_cast<Eigen::Index>(r), 0) = static_cast<float>(data[r][0]);
    x(static_cast<Eigen::Index>(r), 1) = static_cast<float>(data[r][1]);
  }
  int files = 0;
  for (const char* source : {"intel_rapl", "acpi"}) {
    for (const char* type : {"AbsPower", "DynPower"}) {
      const fs::path file = dir / (std::string(source) + "_" + type + "Model.json");
      const std::string text = read_file(file);
      ASSERT_FALSE(text.empty()) << file;
      auto model = must_load(make_folder(
          file.string(),
          {{"metadata.json", R"({"model_class": "weight", "model_file": "w.json"})"},
           {"w.json", text}},
          {source, type}));
      ASSERT_NE(model, nullptr);
      ++files;
      EXPECT_EQ(model->info().name, "SGDRegressorTrainer_0");
      EXPECT_EQ(model->info().source, canonical_source(source));
      EXPECT_EQ(model->info().output_type, type);
      const nlohmann::json doc = nlohmann::json::parse(text);
      auto e = evaluate(*model, {"bpf_cpu_time_ms", "bpf_page_cache_hit"}, x);
      ASSERT_TRUE(e.status.ok()) << e.status.to_string();
      ASSERT_EQ(model->info().components.size(), doc.size() - 1);
      for (std::size_t c = 0; c < model->info().components.size(); ++c) {
        const auto& all = doc[model->info().components[c]]["All_Weights"];
        for (std::size_t r = 0; r < data.size(); ++r) {
          EXPECT_TRUE(near_rel(reference(all, names, data[r], ""),
                               e.out(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(c))))
              << file << " " << model->info().components[c] << " row " << r;
        }
      }
    }
  }
  EXPECT_EQ(files, 4);
}

TEST(KeplerSamples, MeanVarianceSample2023) {
  REQUIRE_SAMPLES();
  const fs::path dir = samples_dir() / "kepler-model-server-tests_test_models-2023";
  const std::string weights = read_file(dir / "AbsModelWeight_CounterOnly_Sample_Sample.json");
  const std::string metadata = read_file(dir / "AbsModelWeight_CounterOnly_Sample_metadata.json");
  // Laid out as in kepler-model-server tests/test_models/AbsModelWeight/CounterOnly/Sample/.
  auto model = must_load(make_folder("test_models/AbsModelWeight/CounterOnly/Sample",
                                     {{"metadata.json", metadata}, {"Sample.json", weights}},
                                     {"test_models", "AbsModelWeight", "CounterOnly", "Sample"}));
  ASSERT_NE(model, nullptr);
  const ModelInfo& info = model->info();
  EXPECT_EQ(info.name, "Sample");
  EXPECT_EQ(info.output_type, "AbsPower");
  EXPECT_EQ(info.components, (std::vector<std::string>{"platform"}));
  EXPECT_DOUBLE_EQ(info.mae, 99999999.0);
  // metadata.json lists cache_miss, but the weights use cpu_time: the weights decide,
  // in metadata order first.
  EXPECT_EQ(info.features, (std::vector<std::string>{"cpu_cycles", "cpu_instr", "cpu_time"}));

  const std::vector<std::string> names{"cpu_cycles", "cpu_instr", "cpu_time"};
  const std::vector<std::vector<double>> data{
      {6571067392.0, 3905655552.0, 168149.25},  // the means: bias + arch only
      {9.0e9, 5.5e9, 200000.0},
      {1.0e9, 0.5e9, 1000.0}};
  RowMatrixF x(3, 4);  // an extra column the model ignores, placed first
  for (Eigen::Index r = 0; r < 3; ++r) {
    x(r, 0) = 42;
    for (Eigen::Index j = 0; j < 3; ++j) {
      x(r, j + 1) = static_cast<float>(data[static_cast<std::size_t>(r)][static_cast<std::size_t>(j)]);
    }
  }
  const nlohmann::json doc = nlohmann::json::parse(weights);
  for (std::string_view arch : {"Sky Lake", "Broadwell", "Unknown Lake"}) {
    auto e = evaluate(*model, {"cache_miss", "cpu_cycles", "cpu_instr", "cpu_time"}, x,
                      {{"cpu_architecture", arch}});
    ASSERT_TRUE(e.status.ok()) << e.status.to_string();
    for (Eigen::Index r = 0; r < 3; ++r) {
      // The reference sees the float32 inputs the model sees.
      std::vector<double> row;
      for (Eigen::Index j = 1; j < 4; ++j) row.push_back(static_cast<double>(x(r, j)));
      EXPECT_TRUE(near_rel(reference(doc["All_Weights"], names, row, arch), e.out(r, 0)))
          << arch << " row " << r;
    }
  }
  // Row 0 by hand: at the means the numerical terms vanish (up to float32 rounding of
  // the inputs), leaving bias + Sky Lake = 21.378134 - 0.322866 = 21.055267.
  auto sky = evaluate(*model, {"cache_miss", "cpu_cycles", "cpu_instr", "cpu_time"}, x,
                      {{"cpu_architecture", "Sky Lake"}});
  EXPECT_NEAR(sky.out(0, 0), 21.055267, 1e-3);
}

TEST(KeplerSamples, ComponentWeightsWithOldPkgName) {
  REQUIRE_SAMPLES();
  const fs::path dir = samples_dir() / "kepler-model-server-tests_test_models-2023";
  auto model = must_load(make_folder(
      "DynComponentModelWeight/CgroupOnly/ScikitMixed",
      {{"metadata.json", read_file(dir / "DynComponentModelWeight_CgroupOnly_ScikitMixed_metadata.json")},
       {"ScikitMixed.json", read_file(dir / "DynComponentModelWeight_CgroupOnly_ScikitMixed_ScikitMixed.json")}}));
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->info().output_type, "DynPower");
  EXPECT_EQ(model->info().components, (std::vector<std::string>{"package", "dram"}));
  EXPECT_EQ(model->info().features.size(), 4U);
}

TEST(KeplerSamples, ModelDbFilesLoadOrAreRefusedClearly) {
  REQUIRE_SAMPLES();
  const fs::path dir = samples_dir() / "kepler-model-db-v0.7";
  const std::string prefix = "ec2-0.7.11__rapl-sysfs_AbsPower_BPFOnly_";
  // Curve fits load now (curvefit_model_test.cpp checks their values).
  auto curve = load_model(make_folder(
      "ec2/ExponentialRegressionTrainer_0",
      {{"metadata.json", R"({"model_name": "ExponentialRegressionTrainer_0",
          "model_class": "curvefit", "model_file": "w.json"})"},
       {"w.json", read_file(dir / (prefix + "ExponentialRegressionTrainer_0.json"))}}));
  EXPECT_TRUE(curve.ok()) << curve.status().to_string();
  // A scikit zip's metadata and component map (the pickles are not in the samples).
  auto gb = load_model(make_folder(
      "ec2/GradientBoostingRegressorTrainer_1",
      {{"metadata.json",
        read_file(dir / (prefix + "GradientBoostingRegressorTrainer_1.zip__metadata.json"))},
       {"GradientBoostingRegressorTrainer_1.json",
        read_file(dir / (prefix + "GradientBoostingRegressorTrainer_1.zip__"
                              "GradientBoostingRegressorTrainer_1.json"))}}));
  ASSERT_FALSE(gb.ok()) << "the component map names files the sample lacks";
  EXPECT_NE(gb.status().message().find("missing file 'scaler.pkl'"), std::string::npos)
      << gb.status().message();
}

TEST(KeplerSamples, ModelDbSgdWeightsMatchTheEmbeddedDefault) {
  REQUIRE_SAMPLES();
  // Why the default rapl-sysfs AbsPower model carries mae 60.78: kepler-model-db
  // publishes this weight file with exactly Kepler v0.9.0's coefficients.
  const auto db = nlohmann::json::parse(read_file(
      samples_dir() / "kepler-model-db-v0.7" /
      "ec2-0.7.11__rapl-sysfs_AbsPower_BPFOnly_SGDRegressorTrainer_0.json"));
  auto v090 = nlohmann::json::parse(
      read_file(samples_dir() / "kepler-v0.9.0-data-model_weight" / "intel_rapl_AbsPowerModel.json"));
  v090.erase("model_name");
  EXPECT_EQ(db, v090);
  const auto md = nlohmann::json::parse(read_file(
      samples_dir() / "kepler-model-db-v0.7" /
      "ec2-0.7.11__rapl-sysfs_AbsPower_BPFOnly_SGDRegressorTrainer_0.zip__metadata.json"));
  EXPECT_DOUBLE_EQ(md["mae"].get<double>(), 60.78);
}

}  // namespace
}  // namespace estimator::models
