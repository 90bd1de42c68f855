// SPDX-License-Identifier: Apache-2.0
// XGBoost's UBJSON: the reader on hand-made documents (every type, the optimised container
// forms, hostile input), and the XGBoost loader on models xgboost 1.7 writes at test time
// (tools/xgboost_ubjson_reference.py: model.ubj, model.json and a pickle's handle bytes of
// the same booster) against the library's own predictions.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "models/registry.h"
#include "models/stage_loader.h"
#include "models/stages.h"
#include "models/ubjson.h"
#include "models/xgboost_model.h"
#include "models/xgboost_ubjson.h"
#include "test_files.h"
#include "xgboost_test_util.h"
#include "tests/support/shell_command.h"

namespace estimator::models {
namespace {

namespace fs = std::filesystem;
using json::Json;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// ---- building UBJSON by hand ---------------------------------------------------------

std::string be(std::uint64_t v, int bytes) {
  std::string s;
  for (int k = bytes - 1; k >= 0; --k) s += static_cast<char>((v >> (8 * k)) & 0xFF);
  return s;
}
std::string i8(std::int64_t v) { return "i" + be(static_cast<std::uint64_t>(v), 1); }
std::string i32(std::int64_t v) { return "l" + be(static_cast<std::uint64_t>(v), 4); }
std::string i64(std::int64_t v) { return "L" + be(static_cast<std::uint64_t>(v), 8); }
std::string f32(float f) {
  std::uint32_t bits = 0;
  std::memcpy(&bits, &f, 4);
  return "d" + be(bits, 4);
}
std::string f64(double d) {
  std::uint64_t bits = 0;
  std::memcpy(&bits, &d, 8);
  return "D" + be(bits, 8);
}
// A key as XGBoost writes it: an int64 length (no S marker), then the bytes.
std::string key(const std::string& k) { return i64(static_cast<std::int64_t>(k.size())) + k; }
std::string str(const std::string& s) { return "S" + key(s); }

Result<Json> parse(const std::string& bytes) { return ubjson::parse(bytes, "t.ubj"); }

Json must_parse(const std::string& bytes) {
  Result<Json> r = parse(bytes);
  if (!r.ok()) {
    ADD_FAILURE() << r.status().to_string();
    return Json();
  }
  return std::move(*r);
}

// ---- the reader ----------------------------------------------------------------------

TEST(UbjsonReader, ScalarsBigEndian) {
  EXPECT_EQ(must_parse("Z"), Json(nullptr));
  EXPECT_EQ(must_parse("T"), Json(true));
  EXPECT_EQ(must_parse("F"), Json(false));
  EXPECT_EQ(must_parse(i8(-5)), Json(-5));
  EXPECT_EQ(must_parse("U\xC8"), Json(200));
  EXPECT_EQ(must_parse("I" + be(0xFF38, 2)), Json(-200));
  EXPECT_EQ(must_parse(i32(-70000)), Json(-70000));
  EXPECT_EQ(must_parse(i64(std::int64_t{1} << 40)), Json(std::int64_t{1} << 40));
  EXPECT_EQ(must_parse(f32(0.1F)).get<double>(), static_cast<double>(0.1F));
  EXPECT_EQ(must_parse(f64(0.1)).get<double>(), 0.1);
  EXPECT_EQ(must_parse("Ca"), Json("a"));
  EXPECT_EQ(must_parse(str("h\xC3\xA9llo")), Json("h\xC3\xA9llo"));
  EXPECT_EQ(must_parse("H" + key("12345678901234")), Json(12345678901234));
  EXPECT_EQ(must_parse("H" + key("1.5e3")).get<double>(), 1500.0);
  EXPECT_EQ(must_parse("N" + i8(3)), Json(3)) << "leading no-op skipped";
}

TEST(UbjsonReader, ContainersInAllThreeForms) {
  // Plain, counted and typed arrays of the same values.
  const Json want = Json::array({1, 2, 3});
  EXPECT_EQ(must_parse("[" + i8(1) + i8(2) + "N" + i8(3) + "]"), want);
  EXPECT_EQ(must_parse("[#" + i8(3) + i8(1) + i8(2) + i8(3)), want);
  EXPECT_EQ(must_parse("[$l#L" + be(3, 8) + be(1, 4) + be(2, 4) + be(3, 4)), want);
  EXPECT_EQ(must_parse("[$U#i" + be(3, 1) + "\x01\x02\x03"), want);
  EXPECT_EQ(must_parse("[$Z#i" + be(2, 1)), Json::array({nullptr, nullptr}));
  EXPECT_EQ(must_parse("[]"), Json::array());
  EXPECT_EQ(must_parse("[#i" + be(0, 1)), Json::array());
  // Objects keep their key order.
  const Json obj = must_parse("{" + key("b") + i8(1) + key("a") + "[]" + "}");
  ASSERT_TRUE(obj.is_object());
  EXPECT_EQ(obj.begin().key(), "b");
  EXPECT_EQ(obj.at("a"), Json::array());
  EXPECT_EQ(must_parse("{$d#i" + be(2, 1) + key("x") + be(0x3F800000, 4) + key("y") +
                       be(0x40000000, 4)),
            (Json{{"x", 1.0}, {"y", 2.0}}));
  EXPECT_EQ(must_parse("{#i" + be(1, 1) + key("k") + str("v")), (Json{{"k", "v"}}));
}

void expect_refused(const std::string& bytes, const std::string& words,
                    Code code = Code::kInvalidArgument) {
  Result<Json> r = parse(bytes);
  ASSERT_FALSE(r.ok()) << "accepted " << ::testing::PrintToString(bytes);
  EXPECT_EQ(r.status().code(), code) << r.status().to_string();
  EXPECT_NE(r.status().message().find(words), std::string::npos)
      << "message \"" << r.status().message() << "\" lacks \"" << words << "\"";
  EXPECT_NE(r.status().message().find("t.ubj"), std::string::npos) << r.status().message();
}

TEST(UbjsonReader, TruncatedAnywhere) {
  const std::string doc = "{" + key("learner") + "{" + key("a") + "[$d#i" + be(2, 1) +
                          be(0x3F800000, 4) + be(0x40000000, 4) + key("s") + str("text") +
                          key("n") + f64(1.5) + "}}";
  ASSERT_TRUE(parse(doc).ok());
  for (std::size_t n = 0; n < doc.size(); ++n) {
    Result<Json> r = parse(doc.substr(0, n));
    EXPECT_FALSE(r.ok()) << "prefix of " << n << " bytes accepted";
  }
  expect_refused(doc.substr(0, 20), "truncated");
  expect_refused("", "truncated");
}

TEST(UbjsonReader, HugeCountsAndLengthsAreRefusedBeforeAllocating) {
  // Counts past the bytes left, for payload types and for untyped elements.
  expect_refused("[$d#L" + be(std::uint64_t{1} << 60, 8), "needs more bytes");
  expect_refused("[#L" + be(std::uint64_t{1} << 60, 8), "needs more bytes");
  expect_refused("{#L" + be(std::uint64_t{1} << 40, 8), "needs more bytes");
  expect_refused("S" + i64(std::int64_t{1} << 50) + "abc", "truncated");
  expect_refused("S" + i64(-1), "negative length");
  expect_refused("[#" + i8(-3), "negative length");
  expect_refused("{" + i64(std::int64_t{1} << 62) + "k" + i8(1) + "}", "truncated");
  // Elements without payload cost only DOM memory: the budget stops them.
  expect_refused("[$Z#L" + be(std::uint64_t{1} << 62, 8), "too many values", Code::kTooLarge);
  expect_refused("[$T#L" + be(std::uint64_t{1} << 26, 8), "too many values", Code::kTooLarge);
  // A large typed float32 array (4 DOM bytes per byte) is within the budget; a file that
  // is nothing but bytes (16) is not, past the first MiB.
  std::string floats = "[$d#l" + be(1 << 18, 4) + std::string(std::size_t{4} << 18, '\x01');
  Result<Json> ok = parse(floats);
  ASSERT_TRUE(ok.ok()) << ok.status().to_string();
  EXPECT_EQ(ok->size(), std::size_t{1} << 18);
  expect_refused("[$U#l" + be(1 << 20, 4) + std::string(1 << 20, '\x01'), "too many values",
                 Code::kTooLarge);
  // Many one-byte nulls in a plain array: 16 DOM bytes each, refused past the budget.
  expect_refused("[" + std::string(std::size_t{1} << 21, 'Z') + "]", "too many values",
                 Code::kTooLarge);
}

TEST(UbjsonReader, DeepNestingIsRefused) {
  const std::size_t ok_depth = json::kMaxDepth;
  EXPECT_TRUE(parse(std::string(ok_depth, '[') + std::string(ok_depth, ']')).ok());
  expect_refused(std::string(ok_depth + 1, '[') + std::string(ok_depth + 1, ']'),
                 "nests deeper than", Code::kTooLarge);
  expect_refused(std::string(200000, '['), "nests deeper than", Code::kTooLarge);
  std::string objects;
  for (int k = 0; k < 100; ++k) objects += "{" + key("a");
  expect_refused(objects + "Z", "nests deeper than", Code::kTooLarge);
}

TEST(UbjsonReader, WrongTypesAndBadBytes) {
  expect_refused("X", "unknown type marker 'X'");
  expect_refused("\x01", "unknown type marker byte 0x01");
  expect_refused("{" + str("k") + i8(1) + "}", "expected an integer type");  // S before key
  expect_refused("{" + key("k") + "}", "unknown type marker '}'");
  expect_refused("[$[#" + i8(1) + "]", "not a value type");
  expect_refused("[$N#" + i8(1), "not a value type");
  expect_refused("[$d" + i8(1), "must give its count");
  expect_refused("[#" + i8(2) + "N" + i8(1) + i8(2), "no-op");
  expect_refused(str("\xFF\xFE"), "UTF-8");
  expect_refused(str("\xC0\xAF"), "UTF-8");         // overlong '/'
  expect_refused(str("\xED\xA0\x80"), "UTF-8");     // a surrogate
  expect_refused("C\xE9", "not ASCII");
  expect_refused("H" + key("12abc"), "not a number");
  expect_refused(i8(1) + i8(2), "bytes follow the document");
  expect_refused("{" + key("a") + i8(1) + key("a") + i8(2) + "}", "appears twice");
  // The path of the bad value is named.
  expect_refused("{" + key("learner") + "{" + key("trees") + "[" + i8(1) + "X]}}",
                 "(in learner.trees[1])");
}

// ---- the XGBoost loader --------------------------------------------------------------

// A stump x0 < 0.5 -> 10, else 20 (missing -> right), base_score 0.5, in XGBoost's UBJSON
// layout (typed arrays; parameters as strings), optionally wrapped as a pickle's handle.
std::string stump_ubj(bool serialised, const std::string& num_feature_value = str("2")) {
  const std::string tree =
      "{" + key("default_left") + "[$U#L" + be(3, 8) + std::string("\x00\x00\x00", 3) +
      key("id") + i32(0) + key("left_children") + "[$l#L" + be(3, 8) + be(1, 4) +
      be(0xFFFFFFFF, 4) + be(0xFFFFFFFF, 4) + key("right_children") + "[$l#L" + be(3, 8) +
      be(2, 4) + be(0xFFFFFFFF, 4) + be(0xFFFFFFFF, 4) + key("split_conditions") + "[$d#L" +
      be(3, 8) + f32(0.5F).substr(1) + f32(10.0F).substr(1) + f32(20.0F).substr(1) +
      key("split_indices") + "[$l#L" + be(3, 8) + be(0, 4) + be(0, 4) + be(0, 4) +
      key("split_type") + "[$U#L" + be(3, 8) + std::string("\x00\x00\x00", 3) +
      key("tree_param") + "{" + key("num_nodes") + str("3") + "}}";
  const std::string learner =
      "{" + key("feature_types") + "[#L" + be(0, 8) + key("gradient_booster") + "{" +
      key("model") + "{" + key("gbtree_model_param") + "{" + key("num_trees") + str("1") +
      "}" + key("tree_info") + "[#L" + be(1, 8) + i8(0) + key("trees") + "[#L" + be(1, 8) +
      tree + "}" + key("name") + str("gbtree") + "}" + key("learner_model_param") + "{" +
      key("base_score") + str("5E-1") + key("num_class") + str("0") + key("num_feature") +
      num_feature_value + "}" + key("objective") + "{" + key("name") +
      str("reg:squarederror") + "}}";
  const std::string model = "{" + key("learner") + learner + key("version") + "[$l#L" +
                            be(3, 8) + be(1, 4) + be(7, 4) + be(4, 4) + "}";
  if (!serialised) return model;
  return "{" + key("Config") + "{" + key("learner") + "{}}" + key("Model") + model + "}";
}

std::vector<double> predict(const Regressor& sut, const RowMatrixD& x) {
  return testing::predict_column(sut, x);
}

TEST(XGBoostUbjson, HandMadeModelAndItsSerialisedForm) {
  RowMatrixD x(3, 2);
  x << 0.25, 0, 0.5, 0, kNaN, 0;
  for (bool serialised : {false, true}) {
    Result<std::unique_ptr<Regressor>> r = load_xgboost_ubjson(stump_ubj(serialised), "m.ubj");
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    EXPECT_EQ((*r)->inputs(), 2);
    EXPECT_EQ(predict(**r, x), (std::vector<double>{10.5, 20.5, 20.5}));
  }
  // Parameters given as numbers rather than strings.
  Result<std::unique_ptr<Regressor>> r = load_xgboost_ubjson(stump_ubj(false, i64(2)), "m.ubj");
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ((*r)->inputs(), 2);
}

TEST(XGBoostUbjson, StageLoaderTakesUbj) {
  Result<Stage> s = load_stage("model.ubj", stump_ubj(false));
  EXPECT_TRUE(s.ok()) << s.status().to_string();
}

TEST(XGBoostUbjson, RefusalsNameTheFileAndField) {
  auto refused = [](const std::string& bytes, const std::string& words) {
    Result<std::unique_ptr<Regressor>> r = load_xgboost_ubjson(bytes, "m.ubj");
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find(words), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find("m.ubj"), std::string::npos) << r.status().message();
  };
  refused("", "does not start with '{'");
  refused("binf\x00\x00", "older binary model format");
  refused(R"({"learner": {}})", "looks like JSON text");
  refused("{" + key("Model") + "{}}", "learner: missing");
  refused(stump_ubj(false, str("x")), "num_feature");
  // A split on feature 0 of a model with num_feature 0 is refused by the tree checks.
  refused(stump_ubj(false, i64(0)), "num_feature");
  // Cut anywhere, the model is refused, never crashes.
  const std::string whole = stump_ubj(true);
  for (std::size_t n = 0; n < whole.size(); n += 7) {
    EXPECT_FALSE(load_xgboost_ubjson(whole.substr(0, n), "m.ubj").ok()) << n;
  }
}

// A model folder whose metadata.json names a .ubj loads like one naming a .json.
TEST(XGBoostUbjson, ModelFolderNamingAUbjFile) {
  ModelFolder folder;
  folder.origin = "folder/Xgb_1";
  folder.files["metadata.json"] = R"({"model_name": "Xgb_1", "model_class": "xgboost",
      "model_file": "model.ubj", "features": ["a", "b"], "output_type": "AbsPower"})";
  folder.files["model.ubj"] = stump_ubj(false);
  Result<std::unique_ptr<Model>> m = load_model(folder);
  ASSERT_TRUE(m.ok()) << m.status().to_string();
}

// ---- xgboost 1.7's own files ---------------------------------------------------------

struct Reference {
  fs::path dir;
  std::vector<std::string> cases;
};

// Runs the generator once per test binary; nullopt (the tests skip) when /usr/bin/python3
// lacks xgboost.
const std::optional<Reference>& reference() {
  static const std::optional<Reference> ref = []() -> std::optional<Reference> {
    if (!estimator::testing::command_output(
            "/usr/bin/python3 -c 'import numpy, xgboost' >/dev/null 2>&1")) {
      return std::nullopt;
    }
    Reference r;
    r.dir = fs::temp_directory_path() / ("xgboost_ubjson_" + std::to_string(getpid()));
    fs::create_directories(r.dir);
    const std::optional<std::string> out = estimator::testing::command_output(
        "/usr/bin/python3 " + estimator::testing::shell_quote(XGBOOST_UBJSON_REFERENCE) + " " +
        estimator::testing::shell_quote(r.dir.string()));
    if (!out) {
      ADD_FAILURE() << "tools/xgboost_ubjson_reference.py failed";
      return std::nullopt;
    }
    std::istringstream lines(*out);
    for (std::string line; std::getline(lines, line);) {
      if (!line.empty()) r.cases.push_back(line);
    }
    return r;
  }();
  return ref;
}

class XGBoostUbjsonReference : public ::testing::TestWithParam<const char*> {
 protected:
  static void TearDownTestSuite() {
    if (reference()) {
      std::error_code ec;
      fs::remove_all(reference()->dir, ec);
    }
  }
};

TEST_P(XGBoostUbjsonReference, UbjHandleAndJsonMatchTheLibrary) {
  if (!reference()) GTEST_SKIP() << "/usr/bin/python3 with xgboost and numpy is not installed";
  const std::string name = GetParam();
  const fs::path dir = reference()->dir;
  ASSERT_NE(std::find(reference()->cases.begin(), reference()->cases.end(), name),
            reference()->cases.end());

  const std::optional<std::string> rows_text = testing::read_file_bytes(dir / (name + ".rows.json"));
  ASSERT_TRUE(rows_text);
  const nlohmann::json doc = nlohmann::json::parse(*rows_text);
  const auto& r = doc.at("rows");
  RowMatrixD x(static_cast<Eigen::Index>(r.size()), static_cast<Eigen::Index>(r.at(0).size()));
  for (std::size_t i = 0; i < r.size(); ++i) {
    for (std::size_t j = 0; j < r[i].size(); ++j) {
      x(static_cast<Eigen::Index>(i), static_cast<Eigen::Index>(j)) =
          r[i][j].is_null() ? kNaN : r[i][j].get<double>();
    }
  }
  std::vector<double> expected;
  for (const auto& e : doc.at("expected")) expected.push_back(e.get<double>());
  ASSERT_EQ(expected.size(), static_cast<std::size_t>(x.rows()));
  EXPECT_GT(x.array().isNaN().count(), x.rows() / 4) << "rows must exercise missing values";

  std::vector<std::vector<double>> outputs;
  for (const char* ext : {".ubj", ".handle", ".json"}) {
    const std::string file = name + ext;
    const std::optional<std::string> bytes = testing::read_file_bytes(dir / file);
    ASSERT_TRUE(bytes) << file;
    Result<std::unique_ptr<Regressor>> m = std::string_view(ext) == ".json"
                                               ? load_xgboost_json(*bytes, file)
                                               : load_xgboost_ubjson(*bytes, file);
    ASSERT_TRUE(m.ok()) << m.status().to_string();
    EXPECT_EQ((*m)->inputs(), x.cols());
    const std::vector<double> got = predict(**m, x);
    double worst = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
      const double err = std::abs(got[i] - expected[i]) / std::max(std::abs(expected[i]), 1e-12);
      worst = std::max(worst, err);
      EXPECT_LE(err, 1e-6) << file << " row " << i << ": got " << got[i] << ", xgboost "
                           << expected[i];
    }
    std::cout << "[ measure  ] " << file << " vs xgboost 1.7 Booster.predict: max relative error "
              << worst << " over " << got.size() << " rows\n";
    outputs.push_back(got);
  }
  // The three files hold one model: the same numbers, bit for bit.
  EXPECT_EQ(outputs[0], outputs[1]);
  EXPECT_EQ(outputs[0], outputs[2]);
}

INSTANTIATE_TEST_SUITE_P(Generated, XGBoostUbjsonReference,
                         ::testing::Values("squared_d4", "logistic_d3", "dart_d3"));

}  // namespace
}  // namespace estimator::models
