// SPDX-License-Identifier: Apache-2.0
// Loading folders, scanning directories and choosing a model for a request.
#include "models/registry.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <unistd.h>

#include "models/metadata.h"
#include "test_util.h"
#include "tests/support/files.h"

namespace estimator::models {
namespace {

namespace fs = std::filesystem;
using testing::make_folder;
using testing::weight_folder;

// A one-component weight model over `features` (all weight 1, scale 1).
ModelFolder linear(const std::string& origin, const std::string& name, const std::string& source,
                   const std::string& output_type, double mae,
                   const std::vector<std::string>& features,
                   const std::string& component = "package", const std::string& extra_meta = "") {
  std::string meta = R"({"model_name": ")" + name + R"(", "model_class": "weight",
      "model_file": "weights.json", "source": ")" + source + R"(", "output_type": ")" +
                     output_type + R"(")";
  if (!std::isnan(mae)) meta += R"(, "mae": )" + std::to_string(mae);
  meta += extra_meta + "}";
  std::string numerical;
  for (const std::string& f : features) {
    if (!numerical.empty()) numerical += ", ";
    numerical += R"(")" + f + R"(": {"scale": 1.0, "weight": 1.0})";
  }
  const std::string weights = R"({")" + component +
                              R"(": {"All_Weights": {"Bias_Weight": 0.0, "Numerical_Variables": {)" +
                              numerical + "}}}}";
  return weight_folder(origin, meta, weights);
}

const std::vector<std::string> kBpf{"bpf_cpu_time_ms", "bpf_page_cache_hit"};
const std::vector<std::string> kCpuTime{"bpf_cpu_time_ms"};
std::vector<std::string_view> bpf_views() { return {"bpf_cpu_time_ms", "bpf_page_cache_hit"}; }

std::vector<ModelFolder> fixture_folders() {
  return {
      linear("f/sgd-abs", "SGDRegressorTrainer_0", "rapl-sysfs", "AbsPower", 60.0, kCpuTime),
      linear("f/lin-abs", "LinearRegressionTrainer_1", "rapl-sysfs", "AbsPower", 3.0, kBpf),
      linear("f/poly-abs", "PolynomialRegressionTrainer_2", "rapl-sysfs", "AbsPower", kUnknown,
             kCpuTime),
      linear("f/sgd-acpi", "SGDRegressorTrainer_0", "acpi", "AbsPower", 1.0, kCpuTime,
             "platform"),
      linear("f/sgd-dyn", "SGDRegressorTrainer_0", "rapl-sysfs", "DynPower", 2.0, kCpuTime),
  };
}

std::string origin_of(const Result<const Model*>& r) {
  return r.ok() ? (*r)->info().origin : "error: " + r.status().to_string();
}

class RegistrySelect : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::vector<ModelFolder> folders = fixture_folders();
    sut = Registry::build(folders);
    ASSERT_EQ(sut->models().size(), folders.size());
    ASSERT_TRUE(sut->refused().empty());
  }
  Result<const Model*> select(Selector s, std::vector<std::string_view> features,
                              bool node_power = false) {
    return sut->select(s, features, node_power);
  }
  std::shared_ptr<const Registry> sut;
};

TEST_F(RegistrySelect, SmallestMaeAmongEligible) {
  // acpi (mae 1) is of another source; lin-abs (3) beats sgd-abs (60).
  EXPECT_EQ(origin_of(select({.output_type = "AbsPower", .source = "rapl-sysfs"},
                             {"bpf_page_cache_hit", "bpf_cpu_time_ms"})),
            "f/lin-abs");
  // Without bpf_page_cache_hit, lin-abs is not eligible: sgd-abs (60) beats poly (unknown).
  EXPECT_EQ(origin_of(select({.output_type = "AbsPower", .source = "rapl-sysfs"},
                             {"bpf_cpu_time_ms", "cpu_cycles"})),
            "f/sgd-abs");
  // No filters at all: acpi has the smallest error of everything eligible.
  EXPECT_EQ(origin_of(select({}, {"bpf_cpu_time_ms"})), "f/sgd-acpi");
}

TEST_F(RegistrySelect, FiltersUseCanonicalNames) {
  EXPECT_EQ(origin_of(select({.output_type = "AbsPower", .source = "intel_rapl"},
                             {"bpf_cpu_time_ms", "bpf_page_cache_hit"})),
            "f/lin-abs");
  EXPECT_EQ(origin_of(select({.output_type = "DynComponentPower", .source = "rapl"},
                             {"bpf_cpu_time_ms"})),
            "f/sgd-dyn");
  EXPECT_EQ(origin_of(select({.output_type = "AbsPower", .source = "ACPI"},
                             {"bpf_cpu_time_ms"})),
            "f/sgd-acpi");
}

TEST_F(RegistrySelect, ByNameEvenWithWorseError) {
  EXPECT_EQ(origin_of(select({.name = "PolynomialRegressionTrainer_2"}, {"bpf_cpu_time_ms"})),
            "f/poly-abs");
  // Several models share the name: narrowed by kind, then the smallest error.
  EXPECT_EQ(origin_of(select({.name = "SGDRegressorTrainer_0"}, {"bpf_cpu_time_ms"})),
            "f/sgd-acpi");
  EXPECT_EQ(origin_of(select({.name = "SGDRegressorTrainer_0", .output_type = "DynPower"},
                             {"bpf_cpu_time_ms"})),
            "f/sgd-dyn");
}

TEST_F(RegistrySelect, ByTrainer) {
  EXPECT_EQ(origin_of(select({.trainer = "SGDRegressorTrainer", .source = "rapl-sysfs"},
                             {"bpf_cpu_time_ms"})),
            "f/sgd-dyn");  // mae 2 beats the AbsPower one's 60
  EXPECT_EQ(origin_of(select({.trainer = "SGDRegressorTrainer", .output_type = "AbsPower",
                              .source = "rapl-sysfs"},
                             {"bpf_cpu_time_ms"})),
            "f/sgd-abs");
  EXPECT_EQ(origin_of(select({.trainer = "LinearRegressionTrainer"}, bpf_views())),
            "f/lin-abs");
}

TEST_F(RegistrySelect, NamedModelMissingFeatures) {
  auto r = select({.name = "LinearRegressionTrainer_1"}, {"bpf_cpu_time_ms"});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kMissingFeatures);
  EXPECT_EQ(r.status().message(),
            "model LinearRegressionTrainer_1 needs features missing from the request: "
            "bpf_page_cache_hit");
}

TEST_F(RegistrySelect, UnknownName) {
  auto r = select({.name = "XgboostFitTrainer_1"}, {"bpf_cpu_time_ms"});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  EXPECT_EQ(r.status().message(),
            "no model named XgboostFitTrainer_1 (loaded: LinearRegressionTrainer_1, "
            "PolynomialRegressionTrainer_2, SGDRegressorTrainer_0)");
  auto t = select({.trainer = "KNeighborsRegressorTrainer"}, {"bpf_cpu_time_ms"});
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), Code::kNotFound);
  EXPECT_NE(t.status().message().find("no model with trainer KNeighborsRegressorTrainer"),
            std::string::npos);
}

TEST_F(RegistrySelect, NamedModelOfAnotherKind) {
  auto r = select({.name = "LinearRegressionTrainer_1", .source = "acpi"}, bpf_views());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  EXPECT_NE(r.status().message().find("exists, but not for source acpi"), std::string::npos)
      << r.status().message();
}

TEST_F(RegistrySelect, NothingEligibleExplainsWhy) {
  auto r = select({.output_type = "AbsPower", .source = "rapl-sysfs"},
                  {"cpu_cycles", "cpu_instructions"});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  const std::string m = r.status().message();
  EXPECT_NE(m.find("features offered: cpu_cycles, cpu_instructions"), std::string::npos) << m;
  EXPECT_NE(m.find("3 candidates rejected"), std::string::npos) << m;
  // The closest candidate lacks one feature (sgd-abs ranks before poly-abs by error).
  EXPECT_NE(m.find("closest: model SGDRegressorTrainer_0 needs features missing from the "
                   "request: bpf_cpu_time_ms"),
            std::string::npos)
      << m;

  auto none = select({.output_type = "DynPower", .source = "redfish"}, {"bpf_cpu_time_ms"});
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), Code::kNotFound);
  EXPECT_NE(none.status().message().find("no model for output_type DynPower and source acpi"),
            std::string::npos)
      << none.status().message();
}

TEST(Registry, TiesAreBrokenByNameThenOriginWhateverTheLoadOrder) {
  std::vector<ModelFolder> folders{
      linear("b/2", "B_0", "rapl-sysfs", "AbsPower", 5.0, kCpuTime),
      linear("a/2", "A_0", "rapl-sysfs", "AbsPower", 5.0, kCpuTime),
      linear("a/1", "A_0", "rapl-sysfs", "AbsPower", 5.0, kCpuTime),
  };
  const std::vector<std::string_view> features{"bpf_cpu_time_ms"};
  auto forward = Registry::build(folders);
  std::reverse(folders.begin(), folders.end());
  auto backward = Registry::build(folders);
  EXPECT_EQ(origin_of(forward->select({}, features, false)), "a/1");
  EXPECT_EQ(origin_of(backward->select({}, features, false)), "a/1");
}

TEST(Registry, ModelWithoutStatedKindIsChosenOnlyByNameOrTrainer) {
  const std::vector<ModelFolder> folders{weight_folder(
      "plain", R"({"model_name": "P_0", "model_file": "weights.json"})",
      R"({"All_Weights": {"Bias_Weight": 1, "Numerical_Variables": {"x": {"scale": 1, "weight": 1}}}})")};
  auto reg = Registry::build(folders);
  ASSERT_EQ(reg->models().size(), 1U);
  const std::vector<std::string_view> features{"x"};
  // A request that names a kind is never answered by a model that may be of another.
  for (const Selector& s : {Selector{.output_type = "AbsPower", .source = "acpi"},
                            Selector{.output_type = "DynPower"}, Selector{.source = "intel_rapl"}}) {
    auto r = reg->select(s, features, false);
    ASSERT_FALSE(r.ok()) << s.output_type << " " << s.source;
    EXPECT_EQ(r.status().code(), Code::kNotFound);
    EXPECT_NE(r.status().message().find("P_0 (unknown source/unknown output type)"),
              std::string::npos)
        << r.status().message();
  }
  // Asked for by name or trainer, or by a request that names no kind, it serves.
  EXPECT_EQ(origin_of(reg->select({.name = "P_0", .output_type = "AbsPower", .source = "acpi"},
                                  features, false)),
            "plain");
  EXPECT_EQ(origin_of(reg->select({.trainer = "P", .source = "rapl-sysfs"}, features, false)),
            "plain");
  EXPECT_EQ(origin_of(reg->select({}, features, false)), "plain");
}

TEST(Registry, StatedOutputTypeWithUnknownSourceIsNotChosenForANamedSource) {
  const std::vector<ModelFolder> folders{
      linear("half", "H_0", "", "AbsPower", 1.0, kCpuTime),
      linear("full", "F_0", "acpi", "AbsPower", 50.0, kCpuTime, "platform")};
  auto reg = Registry::build(folders);
  const std::vector<std::string_view> features{"bpf_cpu_time_ms"};
  EXPECT_EQ(origin_of(reg->select({.output_type = "AbsPower", .source = "acpi"}, features, false)),
            "full");
  EXPECT_EQ(origin_of(reg->select({.output_type = "AbsPower"}, features, false)), "half");
}

TEST(Registry, NodePowerNeedsAreMet) {
  const std::vector<ModelFolder> folders{make_folder(
      "ratio", {{"metadata.json", R"({"model_name": "Ratio", "model_class": "ratio"})"},
                {"ratio.json", R"({"components": {"package": "cpu_instructions"}})"}})};
  auto reg = Registry::build(folders);
  ASSERT_EQ(reg->models().size(), 1U);
  const std::vector<std::string_view> features{"cpu_instructions"};
  auto without = reg->select({}, features, false);
  ASSERT_FALSE(without.ok());
  EXPECT_NE(without.status().message().find("needs measured node power"), std::string::npos)
      << without.status().message();
  EXPECT_NE(without.status().message().find("no node power"), std::string::npos);
  auto named = reg->select({.name = "Ratio"}, features, false);
  ASSERT_FALSE(named.ok());
  EXPECT_EQ(named.status().code(), Code::kMissingFeatures);
  EXPECT_EQ(origin_of(reg->select({}, features, true)), "ratio");
}

TEST(Registry, RefusalsAreRecordedAndOthersLoad) {
  std::vector<ModelFolder> folders = fixture_folders();
  folders.push_back(weight_folder("bad/nan", R"({"model_name": "Bad_0", "model_file": "weights.json"})",
                                  R"({"All_Weights": {"Bias_Weight": "NaN"}})"));
  folders.push_back(make_folder("bad/pkl", {{"metadata.json", R"({"model_name": "GB_1",
      "model_class": "scikit", "model_file": "GB_1.zip", "features": ["a"]})"}, {"GB_1.zip", "PK"}}));
  folders.push_back(make_folder("bad/none", {{"metadata.json", R"({"model_name": "N",
      "model_file": "gone.json"})"}}));
  folders.push_back(make_folder("bad/nometa", {{"weights.json", "{}"}}));
  auto reg = Registry::build(folders);
  EXPECT_EQ(reg->models().size(), fixture_folders().size());
  ASSERT_EQ(reg->refused().size(), 4U);
  EXPECT_EQ(reg->refused()[0].origin, "bad/nan");
  EXPECT_NE(reg->refused()[0].reason.message().find("All_Weights.Bias_Weight"),
            std::string::npos);
  EXPECT_EQ(reg->refused()[1].origin, "bad/pkl");
  EXPECT_NE(reg->refused()[1].reason.message().find("GB_1.zip: unknown model file type"),
            std::string::npos)
      << reg->refused()[1].reason.message();
  EXPECT_NE(reg->refused()[2].reason.message().find("gone.json"), std::string::npos);
  EXPECT_NE(reg->refused()[2].reason.message().find("not in the folder"), std::string::npos);
  EXPECT_EQ(reg->refused()[3].reason.code(), Code::kNotFound);
}

TEST(LoadModel, NameAndModelFileFallbacks) {
  // No model_name in metadata.json: taken from the weight file.
  auto from_file = load_model(make_folder(
      "d/X", {{"metadata.json", R"({"model_file": "w.json"})"},
              {"w.json", R"({"model_name": "Lin_4", "All_Weights": {"Bias_Weight": 1,
                  "Numerical_Variables": {}}})"}}));
  ASSERT_TRUE(from_file.ok()) << from_file.status().to_string();
  EXPECT_EQ((*from_file)->info().name, "Lin_4");
  EXPECT_EQ((*from_file)->info().trainer, "Lin");
  // No model_file: <model_name>.json.
  auto by_name = load_model(make_folder(
      "d/Y", {{"metadata.json", R"({"model_name": "Sample"})"},
              {"Sample.json", R"({"All_Weights": {"Bias_Weight": 1, "Numerical_Variables": {}}})"}}));
  ASSERT_TRUE(by_name.ok()) << by_name.status().to_string();
  // Neither name: the folder's.
  auto by_folder = load_model(make_folder(
      "embedded:acpi/AbsPower/Folder_7",
      {{"metadata.json", R"({"model_file": "w.json"})"},
       {"w.json", R"({"All_Weights": {"Bias_Weight": 1, "Numerical_Variables": {}}})"}},
      {"acpi", "AbsPower", "Folder_7"}));
  ASSERT_TRUE(by_folder.ok()) << by_folder.status().to_string();
  EXPECT_EQ((*by_folder)->info().name, "Folder_7");
  EXPECT_EQ((*by_folder)->info().source, "acpi");
  EXPECT_EQ((*by_folder)->info().output_type, "AbsPower");
  // Nothing to go by.
  auto none = load_model(make_folder("d/Z", {{"metadata.json", R"({"model_name": "Z"})"}}));
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("model_file: missing"), std::string::npos);
}

// ---- better models passed over ------------------------------------------------------

TEST_F(RegistrySelect, ReportsTheBetterModelsItPassedOverBestFirst) {
  std::vector<PassedOver> passed;
  // lin-abs (mae 3) needs bpf_page_cache_hit: sgd-abs (60) answers.
  auto r = sut->select({.output_type = "AbsPower", .source = "rapl-sysfs"},
                       std::vector<std::string_view>{"bpf_cpu_time_ms"}, false, {}, &passed);
  ASSERT_EQ(origin_of(r), "f/sgd-abs");
  ASSERT_EQ(passed.size(), 1U);
  EXPECT_EQ(passed[0].model->info().origin, "f/lin-abs");
  EXPECT_EQ(passed[0].missing, "bpf_page_cache_hit");
  EXPECT_FALSE(passed[0].lacks_node_power);
  EXPECT_EQ(describe_needs(passed[0]),
            "needs features missing from the request: bpf_page_cache_hit");

  // The best model answers: nothing passed over, and earlier contents are cleared. poly-abs
  // (unknown mae) is rejected too, but ranks after the answer.
  r = sut->select({.output_type = "AbsPower", .source = "rapl-sysfs"}, bpf_views(), false, {},
                  &passed);
  ASSERT_EQ(origin_of(r), "f/lin-abs");
  EXPECT_TRUE(passed.empty());
}

TEST(Registry, PassedOverIsRankedAndLeavesOutTheFilterAndOtherKinds) {
  const std::vector<ModelFolder> folders{
      linear("m/worst", "W_0", "rapl-sysfs", "AbsPower", 60.0, kCpuTime, "package",
             R"(, "mape": 5)"),
      linear("m/best", "B_0", "rapl-sysfs", "AbsPower", 1.0, {"bpf_cpu_time_ms", "cpu_cycles"},
             "package", R"(, "mape": 50)"),
      linear("m/second", "S_0", "rapl-sysfs", "AbsPower", 2.0, {"bpf_cpu_time_ms", "cache_miss"}),
      linear("m/other-kind", "O_0", "acpi", "AbsPower", 0.1, kCpuTime, "platform"),
  };
  auto reg = Registry::build(folders);
  ASSERT_EQ(reg->models().size(), folders.size());
  std::vector<PassedOver> passed;
  auto r = reg->select({.output_type = "AbsPower", .source = "rapl"},
                       std::vector<std::string_view>{"bpf_cpu_time_ms"}, false, {}, &passed);
  ASSERT_EQ(origin_of(r), "m/worst");
  ASSERT_EQ(passed.size(), 2U);  // not the acpi model, better still but of another kind
  EXPECT_EQ(passed[0].model->info().origin, "m/best");
  EXPECT_EQ(passed[0].missing, "cpu_cycles");
  EXPECT_EQ(passed[1].model->info().origin, "m/second");
  EXPECT_EQ(passed[1].missing, "cache_miss");

  // Dropped by the request's own filter (best: mape 50; second: none published) is what the
  // client asked for, not a fallback.
  r = reg->select({.output_type = "AbsPower", .source = "rapl", .filter = "mape:10"},
                  std::vector<std::string_view>{"bpf_cpu_time_ms", "cpu_cycles"}, false, {},
                  &passed);
  ASSERT_EQ(origin_of(r), "m/worst");
  EXPECT_TRUE(passed.empty());
}

TEST(Registry, PassedOverNamesMissingNodePower) {
  const std::vector<ModelFolder> folders{
      make_folder("ratio", {{"metadata.json", R"({"model_name": "Ratio", "model_class": "ratio",
          "source": "rapl-sysfs", "output_type": "DynPower", "mae": 0.5})"},
                            {"ratio.json", R"({"components": {"package": "cpu_instructions"}})"}}),
      linear("sgd", "SGD_0", "rapl-sysfs", "DynPower", 9.0, {"cpu_instructions"})};
  auto reg = Registry::build(folders);
  ASSERT_EQ(reg->models().size(), 2U);
  std::vector<PassedOver> passed;
  auto r = reg->select({.output_type = "DynPower"}, std::vector<std::string_view>{"cpu_instructions"},
                       false, {}, &passed);
  ASSERT_EQ(origin_of(r), "sgd");
  ASSERT_EQ(passed.size(), 1U);
  EXPECT_TRUE(passed[0].lacks_node_power);
  EXPECT_EQ(describe_needs(passed[0]), "needs measured node power, which the request does not carry");
}

// ---- scan_directory -----------------------------------------------------------------

class ScanDirectory : public ::testing::Test {
 protected:
  void SetUp() override {
    root = fs::temp_directory_path() /
           ("models_scan_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root);
    fs::create_directories(root);
  }
  void TearDown() override { fs::remove_all(root); }

  static void write(const fs::path& p, const std::string& contents) {
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << contents;
  }

  fs::path root;
};

constexpr const char* kScanMeta = R"({"model_name": "M_1", "model_file": "weights.json"})";
constexpr const char* kScanWeights =
    R"({"package": {"All_Weights": {"Bias_Weight": 2, "Numerical_Variables": {}}}})";

TEST_F(ScanDirectory, FindsFoldersReadsFilesAndSkipsWhatItMust) {
  const fs::path models = root / "models";
  const fs::path m1 = models / "rapl-sysfs" / "AbsPower" / "M_1";
  write(m1 / "metadata.json", kScanMeta);
  write(m1 / "weights.json", kScanWeights);
  write(m1 / "notes.txt", "kept");
  // Too large: a sparse file costs no disk.
  write(m1 / "huge.bin", "");
  fs::resize_file(m1 / "huge.bin", Registry::kMaxFileBytes + 1);
  // A symlink out of the directory is not read.
  write(root / "outside.txt", "secret");
  fs::create_symlink(root / "outside.txt", m1 / "leak.txt");
  // A symlink inside it is (Kubernetes ConfigMap mounts are made of those).
  fs::create_symlink(m1 / "notes.txt", m1 / "alias.txt");
  // Hidden directories (ConfigMap "..data") are not scanned.
  write(models / "..2024_01" / "X_1" / "metadata.json", kScanMeta);
  // A second folder, in another branch; the listing is in path order.
  write(models / "acpi" / "DynPower" / "M_2" / "metadata.json",
        R"({"model_name": "M_2", "model_file": "w.json"})");
  write(models / "acpi" / "DynPower" / "M_2" / "w.json",
        R"({"platform": {"All_Weights": {"Bias_Weight": 1, "Numerical_Variables": {}}}})");

  std::vector<Refusal> refused;
  auto folders = Registry::scan_directory(models, refused);
  ASSERT_TRUE(folders.ok()) << folders.status().to_string();
  ASSERT_EQ(folders->size(), 2U);
  const ModelFolder& f2 = (*folders)[0];
  const ModelFolder& f1 = (*folders)[1];
  EXPECT_EQ(f2.origin, (models / "acpi" / "DynPower" / "M_2").string());
  EXPECT_EQ(f1.origin, m1.string());
  EXPECT_EQ(f1.path_hints,
            (std::vector<std::string>{"models", "rapl-sysfs", "AbsPower", "M_1"}));
  EXPECT_EQ(f1.files.size(), 4U);  // metadata.json, weights.json, notes.txt, alias.txt
  EXPECT_EQ(f1.files.at("alias.txt"), "kept");
  EXPECT_FALSE(f1.files.contains("huge.bin"));
  EXPECT_FALSE(f1.files.contains("leak.txt"));

  ASSERT_EQ(refused.size(), 2U);
  bool saw_large = false;
  bool saw_link = false;
  for (const Refusal& r : refused) {
    if (r.origin == (m1 / "huge.bin").string()) {
      saw_large = true;
      EXPECT_EQ(r.reason.code(), Code::kTooLarge);
    }
    if (r.origin == (m1 / "leak.txt").string()) {
      saw_link = true;
      EXPECT_NE(r.reason.message().find("symlink"), std::string::npos);
    }
  }
  EXPECT_TRUE(saw_large);
  EXPECT_TRUE(saw_link);

  auto reg = Registry::build(*folders, refused);
  ASSERT_EQ(reg->models().size(), 2U);
  EXPECT_EQ(reg->refused().size(), 2U);
  const ModelInfo& info = reg->models()[1]->info();
  EXPECT_EQ(info.source, "rapl-sysfs");
  EXPECT_EQ(info.output_type, "AbsPower");
  EXPECT_EQ(reg->models()[0]->info().source, "acpi");
}

TEST_F(ScanDirectory, DirectoryThatIsItselfAModelFolder) {
  // The Python estimator's download/<source>/<OutputType>/ layout.
  const fs::path dir = root / "download" / "rapl-sysfs" / "AbsPower";
  write(dir / "metadata.json", kScanMeta);
  write(dir / "weights.json", kScanWeights);
  auto folders = Registry::scan_directory(dir);
  ASSERT_TRUE(folders.ok());
  ASSERT_EQ(folders->size(), 1U);
  EXPECT_EQ((*folders)[0].path_hints, (std::vector<std::string>{"AbsPower"}));
}

TEST_F(ScanDirectory, MissingDirectory) {
  auto folders = Registry::scan_directory(root / "nope");
  ASSERT_FALSE(folders.ok());
  EXPECT_EQ(folders.status().code(), Code::kNotFound);
  EXPECT_NE(folders.status().message().find("nope"), std::string::npos);
}

// ---- the kepler-model-db tree: zips and bare weight files --------------------------

std::string fixture_bytes(const std::string& name) {
  return estimator::testing::read_file(std::string(ESTIMATOR_FIXTURES_DIR) + "/zip/" + name);
}

TEST_F(ScanDirectory, ModelDbTreeOfZipsAndBareWeightFiles) {
  const fs::path tree = root / "ec2" / "rapl-sysfs" / "AbsPower" / "BPFOnly";
  write(tree / "SGDRegressorTrainer_1.zip", fixture_bytes("weight_model.zip"));
  write(tree / "Nested_1.zip", fixture_bytes("weight_model_in_folder.zip"));
  write(tree / "Broken_1.zip", fixture_bytes("truncated.zip"));
  write(tree / "SGDRegressorTrainer_0.json", kScanWeights);
  write(root / "ec2" / "node_type_index.json", R"({"0": {"cores": 96}})");  // not a model
  std::vector<Refusal> refused;
  auto folders = Registry::scan_directory(root / "ec2", refused);
  ASSERT_TRUE(folders.ok()) << folders.status().to_string();
  ASSERT_EQ(folders->size(), 3u);
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_NE(refused[0].origin.find("Broken_1.zip"), std::string::npos);

  auto reg = Registry::build(*folders, std::move(refused));
  ASSERT_EQ(reg->models().size(), 3u);
  for (const auto& m : reg->models()) {
    EXPECT_EQ(m->info().source, "rapl-sysfs") << m->info().origin;
    EXPECT_EQ(m->info().output_type, "AbsPower") << m->info().origin;
  }
  const std::string_view cols[] = {"bpf_cpu_time_ms"};
  auto best = reg->select({}, cols, false);
  ASSERT_TRUE(best.ok()) << best.status().to_string();
  EXPECT_EQ(best.value()->info().name, "SGDRegressorTrainer_1") << "mae 4.5 beats unknown";
  auto e = testing::evaluate(*best.value(), {"bpf_cpu_time_ms"}, testing::rows({{4}}));
  ASSERT_TRUE(e.status.ok());
  EXPECT_FLOAT_EQ(e.out(0, 0), 16.0f);  // 10 + 3 * 4 / 2
  EXPECT_EQ(reg->refused().size(), 1u);
}

// ---- filter, error key and node type (Kepler's model-server selection) ----------------

// A one-feature weight model whose metadata.json carries `figures` (a JSON fragment such
// as "\"mae\": 2, \"mape\": 9").
ModelFolder with_figures(const std::string& origin, const std::string& figures) {
  return weight_folder(
      origin,
      R"({"model_name": ")" + origin + R"(", "model_file": "weights.json", "output_type": "AbsPower", )" +
          figures + "}",
      R"({"package": {"All_Weights": {"Bias_Weight": 0, "Numerical_Variables": {"bpf_cpu_time_ms": {"scale": 1, "weight": 1}}}}})");
}

class SelectionPolicyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::vector<ModelFolder> folders{
        with_figures("low-mae", R"("mae": 1, "mape": 30, "abs_max_corr": 0.5, "node_type": 3)"),
        with_figures("low-mape", R"("mae": 5, "mape": 2, "abs_max_corr": 0.9, "node_type": 1)"),
        with_figures("no-mape", R"("mae": 3, "mape": -1, "node_type": 1)"),
    };
    reg = Registry::build(folders);
    ASSERT_EQ(reg->models().size(), 3U);
  }
  std::string pick(std::string_view filter, SelectionPolicy policy = {}) {
    return origin_of(reg->select({.filter = filter}, features, false, policy));
  }
  std::shared_ptr<const Registry> reg;
  const std::vector<std::string_view> features{"bpf_cpu_time_ms"};
};

TEST_F(SelectionPolicyTest, FilterKeepsModelsAtMostTheLimit) {
  EXPECT_EQ(pick(""), "low-mae");
  EXPECT_EQ(pick("mape:10"), "low-mape");  // low-mae (30) fails; no-mape publishes none
  EXPECT_EQ(pick("mae:4"), "low-mae");
  EXPECT_EQ(pick(" mae : 4 ; mape:10 ;"), "error: not_found: no model fits the request "
                                          "(features offered: bpf_cpu_time_ms; no node power; "
                                          "filter  mae : 4 ; mape:10 ;): 3 candidates rejected, "
                                          "closest: model low-mae fails the filter: allows mape "
                                          "<= 10, model has 30");
  EXPECT_EQ(pick("mae:3"), "low-mae");
  EXPECT_EQ(pick("mae:0.5").substr(0, 16), "error: not_found");
}

TEST_F(SelectionPolicyTest, AbsMaxCorrIsAFloor) {
  EXPECT_EQ(pick("abs_max_corr:0.8"), "low-mape");
  EXPECT_EQ(pick("abs_max_corr:0.4"), "low-mae");
}

TEST_F(SelectionPolicyTest, FilterAppliesToNamedModelsAndNamesTheFigure) {
  auto r = reg->select({.name = "low-mae", .filter = "mae:0.5"}, features, false);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  EXPECT_NE(r.status().message().find("fails the filter: allows mae <= 0.5, model has 1"),
            std::string::npos)
      << r.status().message();
}

TEST_F(SelectionPolicyTest, MalformedFilterIsRefused) {
  for (std::string_view bad : {"mae", "mae:", ":3", "mae:x", "mae:1e999", "mae:3;mape"}) {
    auto r = reg->select({.filter = bad}, features, false);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << bad;
    EXPECT_NE(r.status().message().find("is not key:number"), std::string::npos)
        << r.status().message();
  }
}

TEST_F(SelectionPolicyTest, ErrorKeyIsConfigurable) {
  EXPECT_EQ(pick("", {.error_key = "mape"}), "low-mape");
  EXPECT_EQ(pick("", {.error_key = "mae"}), "low-mae");
  // A key nobody publishes leaves the name order.
  EXPECT_EQ(pick("", {.error_key = "r2"}), "low-mae");
}

TEST_F(SelectionPolicyTest, NodeTypeComesFirstWhenAnyModelOfItFits) {
  EXPECT_EQ(pick("", {.node_type = "1"}), "no-mape");  // mae 3 beats 5 within node type 1
  EXPECT_EQ(pick("mape:10", {.node_type = "1"}), "low-mape");
  EXPECT_EQ(pick("", {.node_type = "7"}), "low-mae");  // none of type 7: plain ranking
}

TEST(ModelFigures, EveryNonNegativeNumberOfMetadataIsKept) {
  auto m = testing::must_load(with_figures("f", R"("mae": 2, "mse_val": 8.5, "mape": -1)"));
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->info().figure("mae"), 2.0);
  EXPECT_EQ(m->info().figure("mse_val"), 8.5);
  EXPECT_TRUE(std::isnan(m->info().figure("mape")));
  EXPECT_TRUE(std::isnan(m->info().figure("absent")));
}

// ---- Kepler's flat weight files: the name gives the kind ----------------------------

TEST(KindFromWeightFileName, KeplerDataModelWeightNames) {
  struct Case {
    std::string_view file, source, output_type;
  };
  for (const Case& c : {Case{"intel_rapl_DynPowerModel.json", "rapl-sysfs", "DynPower"},
                        Case{"intel_rapl_AbsPowerModel.json", "rapl-sysfs", "AbsPower"},
                        Case{"acpi_AbsPowerModel.json", "acpi", "AbsPower"},
                        Case{"acpi_DynPowerModel.json", "acpi", "DynPower"},
                        Case{"rapl-msr_AbsPowerModel.json", "rapl-sysfs", "AbsPower"},
                        Case{"redfish_DynPowerModel.json", "acpi", "DynPower"},
                        // Not of the form, or naming what Kepler does not know.
                        Case{"SGDRegressorTrainer_0.json", "", ""},
                        Case{"intel_rapl_DynPowerModel.zip", "", ""},
                        Case{"intel_rapl_DynPower.json", "", ""},
                        Case{"_AbsPowerModel.json", "", ""},
                        Case{"AbsPowerModel.json", "", ""},
                        Case{"gpu_AbsPowerModel.json", "", ""},
                        Case{"intel_rapl_PowerModel.json", "", ""}}) {
    const ModelKind k = kind_from_weight_file_name(c.file);
    EXPECT_EQ(k.source, c.source) << c.file;
    EXPECT_EQ(k.output_type, c.output_type) << c.file;
  }
}

TEST_F(ScanDirectory, FlatKeplerWeightFilesTakeTheirKindFromTheirNameOverTheFolder) {
  // A weight file fetched for rapl AbsPower that names itself acpi DynPower is acpi
  // DynPower (the fetcher warns); a name that says nothing leaves the folder's kind.
  const fs::path dir = root / "models" / "rapl-sysfs" / "AbsPower";
  write(dir / "acpi_DynPowerModel.json", kScanWeights);
  write(dir / "SGDRegressorTrainer_0.json", kScanWeights);
  write(root / "flat" / "intel_rapl_DynPowerModel.json", kScanWeights);
  auto folders = Registry::scan_directory(root / "models");
  ASSERT_TRUE(folders.ok()) << folders.status().to_string();
  auto flat = Registry::scan_directory(root / "flat");
  ASSERT_TRUE(flat.ok()) << flat.status().to_string();
  folders->insert(folders->end(), flat->begin(), flat->end());
  auto reg = Registry::build(*folders);
  ASSERT_EQ(reg->models().size(), 3U);
  std::map<std::string, std::string> kinds;
  for (const auto& m : reg->models()) {
    kinds[fs::path(m->info().origin).filename().string()] =
        m->info().source + "/" + m->info().output_type;
  }
  EXPECT_EQ(kinds, (std::map<std::string, std::string>{
                       {"acpi_DynPowerModel.json", "acpi/DynPower"},
                       {"SGDRegressorTrainer_0.json", "rapl-sysfs/AbsPower"},
                       {"intel_rapl_DynPowerModel.json", "rapl-sysfs/DynPower"}}));
}

}  // namespace
}  // namespace estimator::models
