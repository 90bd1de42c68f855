// SPDX-License-Identifier: Apache-2.0
// Kepler v0.9's own data/model_weight folder (../shared/kepler-samples, read in place) as a
// flat --model-dir: the file names say which energy source and output type each file
// serves, and Kepler's requests get the file they name. Expected numbers come from the
// weight formula (KEPLER.md section 6) applied to the JSON here, not through WeightModel.
//
// Also the registry-level invariant over every model directory the project ships or
// tests with: a model either states its source and output type, or no request naming
// them can auto-select it.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "models/embedded_defaults.h"
#include "models/registry.h"
#include "test_util.h"

namespace estimator::models {
namespace {

namespace fs = std::filesystem;
using testing::evaluate;
using testing::near_rel;

const fs::path kShared(ESTIMATOR_SHARED_DIR);
const fs::path kWeightDir = kShared / "kepler-samples" / "kepler-v0.9.0-data-model_weight";

// What Kepler v0.9 sends (KEPLER.md section 4), and one process row of a busy node: per-
// second rates of a process using 2.6 cores.
const std::vector<std::string_view> kKeplerFeatures = {
    "cpu_cycles",     "cpu_instructions", "cache_miss",    "cpu_ref_cycles",    "bpf_cpu_time_ms",
    "bpf_net_tx_irq", "bpf_net_rx_irq",   "bpf_block_irq", "bpf_page_cache_hit"};
const std::vector<float> kProcessRow = {5.2e9F, 7.9e9F, 3.1e7F, 4.8e9F, 2600.0F,
                                        120.0F, 340.0F, 45.0F,  5200.0F};
const std::vector<SystemValue> kSystem = {{"cpu_architecture", "Sky Lake"}};

// power = bias + categorical weights of the row's system values + sum of w * x / scale
// (scale 0 skips the term), clamped at 0; computed from the file's JSON by hand.
std::map<std::string, double> by_formula(const fs::path& file) {
  std::ifstream in(file);
  const nlohmann::json doc = nlohmann::json::parse(in);
  std::map<std::string, double> out;
  for (const auto& [component, body] : doc.items()) {
    if (!body.is_object() || !body.contains("All_Weights")) continue;
    const nlohmann::json& w = body["All_Weights"];
    double p = w["Bias_Weight"].get<double>();
    for (const SystemValue& sv : kSystem) {
      const auto cat = w.find("Categorical_Variables");
      if (cat == w.end() || !cat->contains(std::string(sv.name))) continue;
      const nlohmann::json& values = (*cat)[std::string(sv.name)];
      if (values.contains(std::string(sv.value))) {
        p += values[std::string(sv.value)]["weight"].get<double>();
      }
    }
    for (const auto& [feature, term] : w["Numerical_Variables"].items()) {
      const double scale = term["scale"].get<double>();
      if (scale == 0) continue;
      const auto at = std::find(kKeplerFeatures.begin(), kKeplerFeatures.end(), feature);
      EXPECT_NE(at, kKeplerFeatures.end()) << feature << " is not among Kepler's features";
      if (at == kKeplerFeatures.end()) continue;
      const double x = kProcessRow[static_cast<std::size_t>(at - kKeplerFeatures.begin())];
      p += term["weight"].get<double>() * x / scale;
    }
    out[component] = std::max(p, 0.0);
  }
  return out;
}

RowMatrixF process_row() {
  RowMatrixF m(1, static_cast<Eigen::Index>(kProcessRow.size()));
  for (std::size_t c = 0; c < kProcessRow.size(); ++c) m(0, static_cast<Eigen::Index>(c)) = kProcessRow[c];
  return m;
}

class KeplerWeightDir : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::is_directory(kWeightDir)) {
      GTEST_SKIP() << "Kepler v0.9 weight files not found at " << kWeightDir.string()
                   << " (the shared/ folder beside the repository); nothing to select from";
    }
    std::vector<Refusal> refused;
    auto folders = Registry::scan_directory(kWeightDir, refused);
    ASSERT_TRUE(folders.ok()) << folders.status().to_string();
    registry = Registry::build(*folders, std::move(refused));
    ASSERT_TRUE(registry->refused().empty()) << registry->refused()[0].reason.to_string();
    ASSERT_EQ(registry->models().size(), 4U);
  }

  // The file that answers a Kepler v0.9 request of this kind, and what it answers.
  void expect_selected(std::string_view source, std::string_view output_type,
                       const std::string& file) {
    SCOPED_TRACE(std::string(source) + " " + std::string(output_type));
    auto m = registry->select({.output_type = output_type, .source = source}, kKeplerFeatures, false);
    ASSERT_TRUE(m.ok()) << m.status().to_string();
    EXPECT_EQ(fs::path(m.value()->info().origin).filename(), file);
    const std::map<std::string, double> want = by_formula(kWeightDir / file);
    const ModelInfo& info = m.value()->info();
    std::vector<std::string> want_components;
    for (const auto& [c, p] : want) want_components.push_back(c);
    std::vector<std::string> have_components = info.components;
    std::sort(have_components.begin(), have_components.end());
    ASSERT_EQ(have_components, want_components);
    auto e = evaluate(*m.value(), kKeplerFeatures, process_row(), kSystem);
    ASSERT_TRUE(e.status.ok()) << e.status.to_string();
    for (std::size_t c = 0; c < info.components.size(); ++c) {
      EXPECT_TRUE(near_rel(want.at(info.components[c]), e.out(0, static_cast<Eigen::Index>(c))))
          << info.components[c];
    }
  }

  std::shared_ptr<const Registry> registry;
};

TEST_F(KeplerWeightDir, EachFileServesTheKindItsNameSays) {
  std::map<std::string, std::string> kinds;
  for (const auto& m : registry->models()) {
    kinds[fs::path(m->info().origin).filename().string()] =
        m->info().source + "/" + m->info().output_type;
  }
  EXPECT_EQ(kinds, (std::map<std::string, std::string>{
                       {"acpi_AbsPowerModel.json", "acpi/AbsPower"},
                       {"acpi_DynPowerModel.json", "acpi/DynPower"},
                       {"intel_rapl_AbsPowerModel.json", "rapl-sysfs/AbsPower"},
                       {"intel_rapl_DynPowerModel.json", "rapl-sysfs/DynPower"}}));
}

TEST_F(KeplerWeightDir, ProcessDynPowerRequestGetsTheRaplDynPowerWeights) {
  // Kepler names rapl "intel_rapl"; before the file name counted, acpi_AbsPowerModel.json
  // answered this (platform only, idle included) and package, core, uncore, dram were 0.
  expect_selected("intel_rapl", "DynPower", "intel_rapl_DynPowerModel.json");
  expect_selected("rapl-sysfs", "DynPower", "intel_rapl_DynPowerModel.json");
  expect_selected("rapl-msr", "DynPower", "intel_rapl_DynPowerModel.json");
  expect_selected("intel_rapl", "AbsPower", "intel_rapl_AbsPowerModel.json");
}

TEST_F(KeplerWeightDir, PlatformRequestsGetTheAcpiWeights) {
  expect_selected("acpi", "AbsPower", "acpi_AbsPowerModel.json");
  expect_selected("acpi", "DynPower", "acpi_DynPowerModel.json");
  // Redfish and HMC read the same platform power as ACPI.
  expect_selected("redfish", "AbsPower", "acpi_AbsPowerModel.json");
  expect_selected("hmc", "DynPower", "acpi_DynPowerModel.json");
}

// ---- every directory: a known kind, or never auto-selected for a named one -----------

// The selectors a Kepler request can carry: each source alias family and output type, and
// each named alone.
std::vector<Selector> kind_selectors() {
  std::vector<Selector> out;
  for (std::string_view source : {"", "intel_rapl", "acpi"}) {
    for (std::string_view type : {"", "AbsPower", "DynPower"}) {
      if (!source.empty() || !type.empty()) out.push_back({.output_type = type, .source = source});
    }
  }
  return out;
}

// Checks the invariant over one registry; `require_known`: every model must state both.
void expect_kinds_are_safe(const Registry& reg, bool require_known) {
  for (const auto& m : reg.models()) {
    const ModelInfo& info = m->info();
    SCOPED_TRACE(info.origin);
    if (require_known) {
      EXPECT_FALSE(info.source.empty());
      EXPECT_FALSE(info.output_type.empty());
    }
    if (!info.source.empty() && !info.output_type.empty()) continue;
    // Its own features and node power: the request it fits best.
    std::vector<std::string_view> features(info.features.begin(), info.features.end());
    for (std::string_view usage : {"cpu_instructions", "cache_miss", "bpf_cpu_time_ms"}) {
      features.push_back(usage);
    }
    auto named = reg.select({.name = info.name}, features, true);
    ASSERT_TRUE(named.ok()) << "the check below would prove nothing: " << named.status().to_string();
    for (const Selector& s : kind_selectors()) {
      const bool names_unknown = (!s.source.empty() && info.source.empty()) ||
                                 (!s.output_type.empty() && info.output_type.empty());
      if (!names_unknown) continue;
      auto chosen = reg.select(s, features, true);
      if (chosen.ok()) {
        EXPECT_NE(chosen.value(), m.get())
            << "auto-selected for source '" << s.source << "', output_type '" << s.output_type << "'";
      }
    }
  }
}

std::shared_ptr<const Registry> scanned(const fs::path& dir) {
  std::vector<Refusal> refused;
  auto folders = Registry::scan_directory(dir, refused);
  EXPECT_TRUE(folders.ok()) << folders.status().to_string();
  if (!folders.ok()) return Registry::build({});
  return Registry::build(*folders, std::move(refused));
}

TEST(ModelKindInvariant, EmbeddedDefaultsStateTheirKind) {
  const auto reg = Registry::build(embedded_model_folders());
  ASSERT_FALSE(reg->models().empty());
  expect_kinds_are_safe(*reg, true);
}

TEST(ModelKindInvariant, KeplerWeightFolderStatesItsKind) {
  if (!fs::is_directory(kWeightDir)) GTEST_SKIP() << kWeightDir.string() << " not found";
  const auto reg = scanned(kWeightDir);
  ASSERT_EQ(reg->models().size(), 4U);
  expect_kinds_are_safe(*reg, true);
}

TEST(ModelKindInvariant, ModelDbTreeStatesItsKind) {
  const fs::path zips = kShared / "model-samples" / "kepler-model-db";
  if (!fs::is_directory(zips)) GTEST_SKIP() << zips.string() << " not found";
  // Laid out as kepler-model-db publishes them (and as the fetcher lands them).
  const fs::path root = fs::temp_directory_path() / ("kind_invariant_" + std::to_string(getpid()));
  fs::remove_all(root);
  const fs::path dir = root / "ec2" / "rapl-sysfs" / "AbsPower" / "BPFIRQ";
  fs::create_directories(dir);
  for (const auto& e : fs::directory_iterator(zips)) {
    if (e.path().extension() == ".zip" || e.path().extension() == ".json") {
      fs::copy_file(e.path(), dir / e.path().filename());
    }
  }
  const auto reg = scanned(root / "ec2");
  fs::remove_all(root);
  ASSERT_EQ(reg->models().size(), 8U);  // seven zips and the bare weight file
  expect_kinds_are_safe(*reg, true);
}

TEST(ModelKindInvariant, SampleFoldersOfNoKnownLayoutAreNeverAutoSelectedForAKind) {
  // Flat folders whose path says nothing: the 2022 estimator's models, zips and weight
  // files taken out of their kepler-model-db tree.
  // (Some of them are refused by the loaders; the loaded ones are checked.)
  bool found = false;
  std::size_t models = 0;
  for (const fs::path& dir : {kShared / "model-samples" / "kepler-2022",
                              kShared / "model-samples" / "kepler-model-db",
                              kShared / "model-samples" / "kepler-model-db-more",
                              kShared / "kepler-samples" / "kepler-model-db-v0.7"}) {
    if (!fs::is_directory(dir)) continue;
    SCOPED_TRACE(dir.string());
    found = true;
    const auto reg = scanned(dir);
    expect_kinds_are_safe(*reg, false);
    models += reg->models().size();
  }
  if (!found) GTEST_SKIP() << "no sample folders under " << kShared.string();
  EXPECT_GT(models, 0U);
}

}  // namespace
}  // namespace estimator::models
