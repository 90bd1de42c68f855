// SPDX-License-Identifier: Apache-2.0
// The model formats the conformance suite (conformance_test.cpp) runs over: one Format per
// model kind, each a folder of files as the registry loads them (load_model), its request
// columns and how it meets the documented edge cases. Adding a format is one line in
// kFormats (conformance_test.cpp), built with the helpers below.
#pragma once

#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "models/model.h"
#include "models/model_folder.h"

namespace estimator::models::conformance {

// What predict() does with NaN or +-infinity in a column the model evaluates
// (docs/models.md, "NaN and infinity"):
enum class NonFinite {
  kRefused,   // the request fails with kInvalidValue (arithmetic carries it to the output)
  kAnswered,  // every output stays finite: trees send NaN down a branch (XGBoost's
              // default_left, scikit-learn's "else" side) and compare infinities as
              // numbers; saturating functions (sigmoid, rbf kernel) reach their limit
  kBySign,    // infinities only: one sign saturates (exp(-inf) = 0) and is answered,
              // the other overflows and is refused
};

struct Format {
  std::string name;                      // the test-name suffix
  std::function<ModelFolder()> folder;   // the files load_model reads
  std::vector<std::string> features;     // the model's features, in its order
  NonFinite nan = NonFinite::kRefused;        // NaN in its first feature
  NonFinite infinity = NonFinite::kRefused;   // +-infinity in its first feature
  // Valid inputs are drawn from [low, high]; the clamp sweep from [clamp_low, clamp_high].
  float low = 0, high = 100;
  float clamp_low = -100, clamp_high = 1000;
  // A ratio model splits the measured node power over the batch by usage share: a row's
  // answer depends on the other rows by definition, so only the order of rows may not
  // matter (row i's answer follows row i when the batch is permuted).
  bool rows_independent = true;
  // The clamp sweep reaches raw predictions below 0 (so outputs of exactly 0 must occur).
  bool sweep_goes_negative = false;
};

// Test names and failure messages show the format's name, not its bytes.
inline void PrintTo(const Format& f, std::ostream* os) { *os << f.name; }

inline std::string read_fixture(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline std::string json_list(const std::vector<std::string>& names) {
  std::string out = "[";
  for (const std::string& n : names) out += (out.size() > 1 ? ", \"" : "\"") + n + "\"";
  return out + "]";
}

inline std::vector<std::string> numbered(const std::string& prefix, int n) {
  std::vector<std::string> v;
  for (int i = 0; i < n; ++i) v.push_back(prefix + std::to_string(i));
  return v;
}

// A folder of metadata.json plus the given files.
inline ModelFolder folder_of(const std::string& name, const std::string& metadata,
                             std::map<std::string, std::string> files) {
  ModelFolder f;
  f.origin = "conformance/" + name;
  f.files = std::move(files);
  f.files["metadata.json"] = metadata;
  return f;
}

// A 2022-layout folder: one model file over `features`, after `fe_files` (fixture file
// names too), components named when the file gives several outputs.
inline std::function<ModelFolder()> single_file(std::string dir, std::string file,
                                                std::vector<std::string> features,
                                                std::vector<std::string> fe_files = {},
                                                std::vector<std::string> components = {}) {
  return [=] {
    std::map<std::string, std::string> files;
    files[file] = read_fixture(dir + "/" + file);
    for (const std::string& fe : fe_files) files[fe] = read_fixture(dir + "/" + fe);
    std::string md = R"({"model_name": "C_)" + file + R"(", "model_file": ")" + file +
                     R"(", "features": )" + json_list(features) +
                     R"(, "fe_files": )" + json_list(fe_files);
    if (!components.empty()) md += R"(, "components": )" + json_list(components);
    return folder_of(file, md + "}", std::move(files));
  };
}

// A folder whose model file is the JSON document `doc` (weights, ratio, a component map).
inline std::function<ModelFolder()> json_model(std::string name, std::string metadata_extra,
                                               std::string doc,
                                               std::map<std::string, std::string> more = {}) {
  return [=] {
    std::map<std::string, std::string> files = more;
    files["m.json"] = doc;
    return folder_of(name,
                     R"({"model_name": ")" + name + R"(", "model_file": "m.json")" +
                         metadata_extra + "}",
                     std::move(files));
  };
}

}  // namespace estimator::models::conformance
