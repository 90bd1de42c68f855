// SPDX-License-Identifier: Apache-2.0
// The limits every JSON parse applies (models/json_fields.h): nesting depth and the size of
// the parsed form relative to the text, at every entry point a model file reaches.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zip.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "models/json_fields.h"
#include "models/keras_model.h"
#include "models/metadata.h"
#include "models/registry.h"
#include "models/weight_model.h"
#include "models/xgboost_model.h"
#include "test_util.h"

namespace estimator::models {
namespace {

namespace fs = std::filesystem;
using testing::make_folder;

// 300,000 levels in 600 KB: before the limit, copying this (registry.cpp copies fe_files
// into a component map) recursed once per level and overflowed the stack.
constexpr std::size_t kDeep = 300'000;

std::string nested_arrays(std::size_t depth) {
  return std::string(depth, '[') + std::string(depth, ']');
}

std::string nested_objects(std::size_t depth) {
  std::string s;
  for (std::size_t i = 0; i < depth; ++i) s += R"({"a":)";
  s += "1";
  s += std::string(depth, '}');
  return s;
}

void expect_depth_refusal(const Status& s, std::string_view file) {
  EXPECT_EQ(s.code(), Code::kTooLarge) << s.to_string();
  EXPECT_NE(s.message().find("nests deeper than 64 levels"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find(file), std::string::npos) << s.message();
}

std::string deep_fe_files_metadata() {
  return R"({"model_name": "Deep_1", "model_class": "scikit", "model_file": "m.pkl",
             "features": ["bpf_cpu_time_ms"], "fe_files": )" +
         nested_arrays(kDeep) + "}";
}

// An archive built in memory with libzip, the library the reader uses.
std::string zip_bytes(const std::map<std::string, std::string>& members) {
  zip_error_t err;
  zip_error_init(&err);
  zip_source_t* src = zip_source_buffer_create(nullptr, 0, 0, &err);
  zip_source_keep(src);
  zip_t* z = zip_open_from_source(src, ZIP_TRUNCATE, &err);
  EXPECT_NE(z, nullptr);
  for (const auto& [name, contents] : members) {
    zip_source_t* s = zip_source_buffer(z, contents.data(), contents.size(), 0);
    EXPECT_GE(zip_file_add(z, name.c_str(), s, ZIP_FL_ENC_UTF_8), 0);
  }
  EXPECT_EQ(zip_close(z), 0);
  std::string out;
  EXPECT_EQ(zip_source_open(src), 0);
  char buf[65536];
  for (zip_int64_t n; (n = zip_source_read(src, buf, sizeof buf)) > 0;) {
    out.append(buf, static_cast<std::size_t>(n));
  }
  zip_source_close(src);
  zip_source_free(src);
  zip_error_fini(&err);
  return out;
}

TEST(JsonParse, RefusesDeepNestingOfArraysAndObjects) {
  expect_depth_refusal(json::parse(nested_arrays(kDeep), "deep.json").status(), "deep.json");
  expect_depth_refusal(json::parse(nested_objects(kDeep), "deep.json").status(), "deep.json");
}

TEST(JsonParse, DepthLimitIsExact) {
  const auto at_limit = json::parse(nested_objects(json::kMaxDepth), "d.json");
  ASSERT_TRUE(at_limit.ok()) << at_limit.status().to_string();
  const json::Json copy = *at_limit;  // copies recurse: at the limit that is harmless
  EXPECT_EQ(copy, *at_limit);
  expect_depth_refusal(json::parse(nested_objects(json::kMaxDepth + 1), "d.json").status(),
                       "d.json");
}

TEST(JsonParse, RefusesADocumentOfManyTinyValues) {
  // 1M zeros in 2 MB: 16 MB parsed, over 6 x 2 MB + 1 MiB.
  std::string text = "[0";
  for (int i = 1; i < 1'000'000; ++i) text += ",0";
  text += "]";
  const Status s = json::parse(text, "zeros.json").status();
  EXPECT_EQ(s.code(), Code::kTooLarge) << s.to_string();
  EXPECT_NE(s.message().find("zeros.json: refused: its parsed form would take more than 12 MiB"),
            std::string::npos)
      << s.message();
  // Longer numbers, as real models have, in the same count are accepted.
  std::string floats = "[0.12345678";
  for (int i = 1; i < 1'000'000; ++i) floats += ",0.12345678";
  floats += "]";
  const auto ok = json::parse(floats, "floats.json");
  ASSERT_TRUE(ok.ok()) << ok.status().to_string();
  EXPECT_EQ(ok->size(), 1'000'000U);
}

TEST(JsonParse, BuildsWhatNlohmannBuilds) {
  for (const char* text :
       {R"({"b": [1, -2, 3.5, 1e300, 18446744073709551615, true, false, null, "x\u00e9"],
           "a": {"nested": [[], {}, [{"k": "a string longer than fifteen bytes"}]]},
           "dup": 1, "dup": 2})",
        "[]", "{}", "42", R"("s")", "null", R"([[1, 2], [3, [4, [5]]]])"}) {
    const auto ours = json::parse(text, "t.json");
    ASSERT_TRUE(ours.ok()) << text << ": " << ours.status().to_string();
    EXPECT_EQ(*ours, json::Json::parse(text)) << text;
    EXPECT_EQ(ours->dump(), json::Json::parse(text).dump()) << text;  // member order too
  }
}

TEST(JsonParse, SyntaxErrorsStillNameTheField) {
  const Status s = json::parse(R"({"a": {"b": [1, 2, oops]}})", "f.json").status();
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  EXPECT_NE(s.message().find("f.json: not valid JSON (in a.b[2])"), std::string::npos)
      << s.message();
}

// An object of `n` members "k0".."k<n-1>" with small integer values, then `repeats` as
// extra members (repeated keys), each value distinct from the first ones.
std::string object_of(std::size_t n, const std::vector<std::string>& repeats = {}) {
  std::string s = "{";
  for (std::size_t i = 0; i < n; ++i) {
    if (i > 0) s += ',';
    s += "\"k" + std::to_string(i) + "\":" + std::to_string(i);
  }
  for (std::size_t i = 0; i < repeats.size(); ++i) {
    s += ",\"" + repeats[i] + "\":{\"again\":" + std::to_string(i) + "}";
  }
  return s + "}";
}

TEST(JsonParse, RepeatedKeysKeepTheirFirstPlaceAndTheirLastValueAtEverySize) {
  // Small objects search their keys; those of 32 members or more are sorted when they
  // close: both sides of that line, repeats first, last, twice and inside a nested object.
  std::vector<std::string> texts;
  for (std::size_t n : {1, 2, 30, 31, 32, 33, 100, 1000}) {
    texts.push_back(object_of(n));
    texts.push_back(object_of(n, {"k0"}));
    texts.push_back(object_of(n, {"k" + std::to_string(n - 1), "k0", "k0", "new", "new"}));
    texts.push_back(R"({"outer": )" + object_of(n, {"k0"}) + R"(, "k0": [)" +
                    object_of(n, {"k0", "k0"}) + "], \"outer\": " + object_of(n / 2 + 1, {"k0"}) +
                    "}");
  }
  for (const std::string& text : texts) {
    const auto ours = json::parse(text, "t.json");
    ASSERT_TRUE(ours.ok()) << ours.status().to_string();
    const json::Json theirs = json::Json::parse(text);
    EXPECT_EQ(*ours, theirs) << text.substr(0, 200);
    EXPECT_EQ(ours->dump(), theirs.dump()) << text.substr(0, 200);  // member order too
  }
  // What that means, spelled out on one large object.
  const auto doc = json::parse(object_of(40, {"k3", "k3"}), "t.json");
  ASSERT_TRUE(doc.ok());
  ASSERT_EQ(doc->size(), 40U);
  EXPECT_EQ(doc->begin().key(), "k0");
  EXPECT_EQ(std::next(doc->begin(), 3).key(), "k3");
  EXPECT_EQ((*doc)["k3"], json::Json::parse(R"({"again": 1})"));
  EXPECT_EQ((*doc)["k39"], 39);
}

// CPU time of this thread, which other processes on the machine do not inflate.
double thread_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
}

TEST(JsonParse, AnObjectOfManyKeysParsesInNearLinearTime) {
  // 200,000 keys in 2.3 MB. Inserting each through ordered_map's emplace compared it with
  // every key before it: 2e10 comparisons, minutes of CPU. Sorted once, it takes
  // milliseconds; the bound is one only quadratic work can reach.
  constexpr std::size_t kKeys = 200'000;
  const std::string text = object_of(kKeys, {"k0", "k199999"});
  const double t0 = thread_cpu_seconds();
  const auto doc = json::parse(text, "keys.json");
  const double took = thread_cpu_seconds() - t0;
  ASSERT_TRUE(doc.ok()) << doc.status().to_string();
  EXPECT_LT(took, 10.0);
  ASSERT_EQ(doc->size(), kKeys);
  EXPECT_EQ(doc->begin().key(), "k0");
  EXPECT_EQ(std::prev(doc->end()).key(), "k199999");
  EXPECT_EQ((*doc)["k0"], json::Json::parse(R"({"again": 0})"));
  EXPECT_EQ((*doc)["k100000"], 100000);
  EXPECT_EQ((*doc)["k199999"], json::Json::parse(R"({"again": 1})"));
}

TEST(WeightModelLimits, AWeightFileOfManyFeaturesLoadsInNearLinearTime) {
  // 100,000 numerical variables. The loader's feature lists were searched for every
  // feature (std::find in three loops): 1.5e10 string comparisons. With sets it takes
  // milliseconds; the bound is one only quadratic work can reach.
  constexpr int kFeatures = 100'000;
  std::string text = R"({"All_Weights": {"Bias_Weight": 1.5, "Categorical_Variables": {},)"
                     R"( "Numerical_Variables": {)";
  for (int i = 0; i < kFeatures; ++i) {
    text += (i == 0 ? "" : ", ") + ("\"f" + std::to_string(i) + R"(": {"weight": 2, "scale": 4})");
  }
  text += "}}}";
  const auto doc = json::parse(text, "w.json");
  ASSERT_TRUE(doc.ok()) << doc.status().to_string();
  const double t0 = thread_cpu_seconds();
  const auto model = load_weight_model(ModelInfo{}, *doc, "w.json");
  const double took = thread_cpu_seconds() - t0;
  ASSERT_TRUE(model.ok()) << model.status().to_string();
  EXPECT_LT(took, 10.0);
  const ModelInfo& info = (*model)->info();
  ASSERT_EQ(info.features.size(), static_cast<std::size_t>(kFeatures));
  EXPECT_EQ(info.features.front(), "f0");
  EXPECT_EQ(info.features.back(), "f99999");
}

// ---- every loader that reads JSON ---------------------------------------------------------

TEST(JsonDepthEntryPoints, Metadata) {
  const auto md = parse_metadata(make_folder("dir/Deep_1", {{"metadata.json", deep_fe_files_metadata()}}));
  expect_depth_refusal(md.status(), "dir/Deep_1/metadata.json");
}

TEST(JsonDepthEntryPoints, DeepFeFilesInMetadataOfASingleFileModel) {
  // The shape that crashed: metadata.json is read twice, the second time for fe_files.
  const auto m = load_model(
      make_folder("dir/Deep_1", {{"metadata.json", deep_fe_files_metadata()}, {"m.pkl", "x"}}));
  expect_depth_refusal(m.status(), "metadata.json");
}

TEST(JsonDepthEntryPoints, WeightJson) {
  const auto m = load_model(testing::weight_folder(
      "dir/W", R"({"model_name": "W", "model_class": "weight", "model_file": "weights.json"})",
      R"({"All_Weights": )" + nested_arrays(kDeep) + "}"));
  expect_depth_refusal(m.status(), "dir/W/weights.json");
}

TEST(JsonDepthEntryPoints, RatioJson) {
  const auto m = load_model(make_folder(
      "dir/R", {{"metadata.json", R"({"model_name": "R", "model_class": "ratio"})"},
                {"ratio.json", nested_objects(kDeep)}}));
  expect_depth_refusal(m.status(), "dir/R/ratio.json");
}

TEST(JsonDepthEntryPoints, XgboostJson) {
  const std::string text = R"({"learner": {"gradient_booster": )" + nested_arrays(kDeep) + "}}";
  expect_depth_refusal(load_xgboost_json(text, "x.json").status(), "x.json");
}

TEST(JsonDepthEntryPoints, KerasConfig) {
  const std::string archive = zip_bytes({{"config.json", nested_objects(kDeep)},
                                         {"model.weights.h5", "not read"},
                                         {"metadata.json", nested_arrays(kDeep)}});
  expect_depth_refusal(load_keras_zip(archive, "k.keras").status(), "k.keras: config.json");
}

class JsonLimitsOnDisk : public ::testing::Test {
 protected:
  void SetUp() override {
    root = fs::temp_directory_path() / ("json_limits_test_" + std::to_string(getpid()));
    fs::remove_all(root);
    dir = root / "acpi" / "AbsPower" / "BPFOnly";
    fs::create_directories(dir);
  }
  void TearDown() override { fs::remove_all(root); }

  static void write(const fs::path& p, const std::string& bytes) {
    std::ofstream(p, std::ios::binary) << bytes;
  }
  // Scans and builds; the refusal of `origin` must carry `needle`.
  void expect_refused(const std::string& origin, std::string_view needle) {
    std::vector<Refusal> refused;
    auto folders = Registry::scan_directory(root, refused);
    ASSERT_TRUE(folders.ok()) << folders.status().to_string();
    const auto reg = Registry::build(*folders, std::move(refused));
    bool found = false;
    for (const Refusal& r : reg->refused()) {
      if (r.origin.find(origin) == std::string::npos) continue;
      found = true;
      EXPECT_NE(r.reason.message().find(needle), std::string::npos) << r.reason.to_string();
    }
    EXPECT_TRUE(found) << origin << " was not refused";
  }

  fs::path root, dir;
};

TEST_F(JsonLimitsOnDisk, ZipWithDeepMetadata) {
  write(dir / "Deep_1.zip", zip_bytes({{"metadata.json", deep_fe_files_metadata()}, {"m.pkl", "x"}}));
  expect_refused("Deep_1.zip", "nests deeper than 64 levels");
}

TEST_F(JsonLimitsOnDisk, FifosAreSkippedWithoutBlocking) {
  // A read of a FIFO with no writer blocks forever: the alarm fails the test instead.
  alarm(60);
  fs::create_directories(dir / "M");
  write(dir / "M" / "metadata.json",
        R"({"model_name": "M", "model_class": "weight", "model_file": "weights.json"})");
  ASSERT_EQ(mkfifo((dir / "M" / "weights.json").c_str(), 0600), 0);
  ASSERT_EQ(mkfifo((dir / "Trainer_1.json").c_str(), 0600), 0);
  ASSERT_EQ(mkfifo((dir / "Trainer_2.zip").c_str(), 0600), 0);
  std::vector<Refusal> refused;
  auto folders = Registry::scan_directory(root, refused);
  ASSERT_TRUE(folders.ok()) << folders.status().to_string();
  const auto reg = Registry::build(*folders, std::move(refused));
  EXPECT_TRUE(reg->models().empty());
  alarm(0);
}

}  // namespace
}  // namespace estimator::models
