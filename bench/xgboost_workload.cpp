// SPDX-License-Identifier: Apache-2.0
// Generation of the benchmark's XGBoost model (see xgboost_workload.h).
#include "bench/xgboost_workload.h"

#include <charconv>
#include <string_view>

#include "bench/workload.h"

namespace estimator::bench {
namespace {

std::uint64_t next(std::uint64_t& state) {  // splitmix64
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

double unit(std::uint64_t& state) { return static_cast<double>(next(state) >> 11) * 0x1.0p-53; }

// Shortest text that reads back as the same float: the loader compares in float32.
void append_float(std::string& out, float v) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

template <typename F>
void append_array(std::string& out, std::string_view key, std::uint32_t n, F&& element) {
  out += '"';
  out += key;
  out += "\":[";
  for (std::uint32_t i = 0; i < n; ++i) {
    if (i != 0) out += ',';
    element(i);
  }
  out += ']';
}

}  // namespace

std::string xgboost_model_name(std::uint32_t cols) {
  return "XgboostFitTrainer_bench" + std::to_string(cols);
}

std::string xgboost_document(std::uint32_t cols) {
  // A full tree in breadth-first order: node i's children are 2i+1 and 2i+2; the last
  // 2^depth nodes are leaves.
  constexpr std::uint32_t kNodes = (1U << (kXGBoostDepth + 1)) - 1;
  constexpr std::uint32_t kInner = (1U << kXGBoostDepth) - 1;
  std::uint64_t state = 0x5EED + cols;
  std::string doc;
  doc.reserve(std::size_t{kXGBoostTrees} * kNodes * 24);
  doc += R"({"learner":{"attributes":{},"feature_names":[],"feature_types":[],)";
  doc += R"("gradient_booster":{"model":{"gbtree_model_param":{"num_parallel_tree":"1",)";
  doc += "\"num_trees\":\"" + std::to_string(kXGBoostTrees) + "\"},";
  append_array(doc, "tree_info", kXGBoostTrees, [&](std::uint32_t) { doc += '0'; });
  doc += ',';
  doc += "\"trees\":[";
  for (std::uint32_t t = 0; t < kXGBoostTrees; ++t) {
    if (t != 0) doc += ',';
    std::uint32_t feature[kNodes];
    float condition[kNodes];
    bool left_default[kNodes];
    for (std::uint32_t i = 0; i < kNodes; ++i) {
      if (i < kInner) {
        feature[i] = static_cast<std::uint32_t>(next(state) % cols);
        condition[i] = static_cast<float>(unit(state) * feature_scale(feature[i]));
      } else {
        feature[i] = 0;
        condition[i] = static_cast<float>(unit(state) * 6.0 - 2.0);  // the leaf's value
      }
      left_default[i] = (next(state) & 1) != 0;
    }
    doc += "{\"id\":" + std::to_string(t) + ',';
    append_array(doc, "left_children", kNodes, [&](std::uint32_t i) {
      doc += i < kInner ? std::to_string(2 * i + 1) : std::string("-1");
    });
    doc += ',';
    append_array(doc, "right_children", kNodes, [&](std::uint32_t i) {
      doc += i < kInner ? std::to_string(2 * i + 2) : std::string("-1");
    });
    doc += ',';
    append_array(doc, "split_indices", kNodes,
                 [&](std::uint32_t i) { doc += std::to_string(feature[i]); });
    doc += ',';
    append_array(doc, "split_conditions", kNodes,
                 [&](std::uint32_t i) { append_float(doc, condition[i]); });
    doc += ',';
    append_array(doc, "default_left", kNodes,
                 [&](std::uint32_t i) { doc += left_default[i] ? '1' : '0'; });
    doc += ",\"split_type\":[],\"categories\":[],\"tree_param\":{\"num_deleted\":\"0\","
           "\"num_feature\":\"" + std::to_string(cols) + "\",\"num_nodes\":\"" +
           std::to_string(kNodes) + "\",\"size_leaf_vector\":\"0\"}}";
  }
  doc += "]},\"name\":\"gbtree\"},";
  doc += "\"learner_model_param\":{\"base_score\":\"1E2\",\"num_class\":\"0\",";
  doc += "\"num_feature\":\"" + std::to_string(cols) + "\",\"num_target\":\"1\"},";
  doc += R"("objective":{"name":"reg:squarederror","reg_loss_param":{"scale_pos_weight":"1"}}},)";
  doc += R"("version":[1,7,4]})";
  return doc;
}

models::ModelFolder xgboost_folder(std::uint32_t cols) {
  const std::string name = xgboost_model_name(cols);
  std::string features = "[";
  for (const std::string_view f : feature_names(cols)) {
    if (features.size() > 1) features += ',';
    features += '"';
    features += f;
    features += '"';
  }
  features += ']';
  models::ModelFolder folder;
  folder.origin = "bench:" + name;
  folder.path_hints = {std::string(kSource), std::string(kOutputType)};
  folder.files["metadata.json"] =
      "{\"model_name\":\"" + name + "\",\"trainer\":\"XgboostFitTrainer\",\"model_class\":"
      "\"xgboost\",\"model_file\":\"" + name + ".json\",\"features\":" + features +
      ",\"output_type\":\"" + std::string(kOutputType) + "\",\"source\":\"" +
      std::string(kSource) + "\",\"mae\":1000,\"mape\":100}";
  folder.files[name + ".json"] =
      "{\"package\":{\"model_file\":\"package.json\",\"features\":" + features + "}}";
  folder.files["package.json"] = xgboost_document(cols);
  return folder;
}

}  // namespace estimator::bench
