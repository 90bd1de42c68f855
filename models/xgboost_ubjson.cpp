// SPDX-License-Identifier: Apache-2.0
#include "models/xgboost_ubjson.h"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>

#include "models/json_fields.h"
#include "models/ubjson.h"
#include "models/xgboost_model.h"

namespace estimator::models {

namespace {

using json::Json;

// A count as XGBoost writes it: a number, or its decimal text (attributes and most
// parameters are strings). Empty when it is neither, or negative.
std::optional<std::int64_t> count_value(const Json& v) {
  if (v.is_number_unsigned()) {
    const auto n = v.get<std::uint64_t>();
    if (n > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) return std::nullopt;
    return static_cast<std::int64_t>(n);
  }
  if (v.is_number_integer()) {
    const auto n = v.get<std::int64_t>();
    return n < 0 ? std::nullopt : std::optional(n);
  }
  if (!v.is_string()) return std::nullopt;
  const std::string& t = v.get_ref<const std::string&>();
  std::int64_t n = 0;
  const auto [ptr, ec] = std::from_chars(t.data(), t.data() + t.size(), n);
  if (ec != std::errc() || ptr != t.data() + t.size() || n < 0) return std::nullopt;
  return n;
}

// Keeps the first `n` entries of array member `key` of `obj`, when it is an array longer
// than that.
void truncate_array(Json& obj, const char* key, std::size_t n) {
  if (!obj.is_object()) return;
  const auto it = obj.find(key);
  if (it != obj.end() && it->is_array() && it->size() > n) {
    it->get_ref<Json::array_t&>().resize(n);
  }
}

// As XGBRegressor.predict (xgboost's scikit-learn wrapper): a booster trained with early
// stopping records learner.attributes.best_iteration, and the wrapper predicts with the
// trees of boosting rounds 0..best_iteration only. Drops the later trees from `learner`
// (with their tree_info and dart weight_drop entries, and num_trees) before it is loaded,
// and the attribute with them: what is left is the model the wrapper predicts with.
// Anything missing or malformed besides best_iteration is left to the loader to report.
Status keep_best_iteration(Json& learner, const json::Where& where) {
  if (json::optional_member(learner, "attributes") == nullptr) return Status::Ok();
  Json& attrs = learner["attributes"];
  const Json* best = json::optional_member(attrs, "best_iteration");
  if (best == nullptr) return Status::Ok();
  const std::optional<std::int64_t> iteration = count_value(*best);
  if (!iteration) {
    return json::invalid(where / "learner" / "attributes" / "best_iteration",
                         "expected a non-negative integer, got " + best->dump());
  }
  attrs.erase("best_iteration");
  Json* booster = learner.is_object() && learner.contains("gradient_booster")
                      ? &learner["gradient_booster"]
                      : nullptr;
  if (booster == nullptr || !booster->is_object()) return Status::Ok();
  // dart wraps a gbtree.
  Json* gbtree = booster->contains("gbtree") ? &(*booster)["gbtree"] : booster;
  if (!gbtree->is_object() || !gbtree->contains("model")) return Status::Ok();
  Json& model = (*gbtree)["model"];
  if (!model.is_object()) return Status::Ok();
  const Json* trees = json::optional_member(model, "trees");
  if (trees == nullptr || !trees->is_array()) return Status::Ok();
  // Every round has at least one tree: a best_iteration past the last keeps them all.
  const std::size_t count = trees->size();
  if (static_cast<std::uint64_t>(*iteration) >= count) return Status::Ok();
  const auto rounds = static_cast<std::size_t>(*iteration) + 1;
  // Trees per round: xgboost 2.x lists where each round starts (iteration_indptr); 1.x has
  // num_parallel_tree of them (one output group: the loader refuses more).
  std::size_t keep = 0;
  const Json* indptr = json::optional_member(model, "iteration_indptr");
  if (indptr != nullptr && indptr->is_array()) {
    if (rounds >= indptr->size()) return Status::Ok();
    const std::optional<std::int64_t> end = count_value((*indptr)[rounds]);
    if (!end || static_cast<std::uint64_t>(*end) >= count) return Status::Ok();
    keep = static_cast<std::size_t>(*end);
    truncate_array(model, "iteration_indptr", rounds + 1);
  } else {
    std::int64_t parallel = 1;
    if (const Json* param = json::optional_member(model, "gbtree_model_param")) {
      if (const Json* p = json::optional_member(*param, "num_parallel_tree")) {
        parallel = count_value(*p).value_or(1);
      }
    }
    if (parallel < 1 || static_cast<std::uint64_t>(parallel) >= count) return Status::Ok();
    keep = std::min(count, rounds * static_cast<std::size_t>(parallel));  // both < count
  }
  truncate_array(model, "trees", keep);
  truncate_array(model, "tree_info", keep);
  if (gbtree != booster) truncate_array(*booster, "weight_drop", keep);
  if (model.contains("gbtree_model_param") && model["gbtree_model_param"].is_object()) {
    Json& param = model["gbtree_model_param"];
    if (param.contains("num_trees")) {
      param["num_trees"] = param["num_trees"].is_string() ? Json(std::to_string(keep)) : Json(keep);
    }
  }
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<Regressor>> load_xgboost_ubjson(std::string_view bytes,
                                                       std::string_view file,
                                                       BestIteration best_iteration) {
  // Pickles of xgboost < 1.6 hold the old binary format, and a .json renamed .ubj is
  // text: say so rather than report a bad marker at byte 0.
  if (bytes.empty() || bytes.front() != '{') {
    return Status(Code::kInvalidArgument,
                  std::string(file) +
                      ": not a UBJSON XGBoost model (it does not start with '{'; XGBoost's "
                      "older binary model format is not supported: save the model as .json "
                      "or .ubj with xgboost >= 1.6)");
  }
  if (bytes.size() > 1 && (bytes[1] == '"' || bytes[1] == '\n' || bytes[1] == ' ')) {
    return Status(Code::kInvalidArgument,
                  std::string(file) + ": looks like JSON text, not UBJSON: name it .json");
  }
  Result<json::Json> doc = ubjson::parse(bytes, file);
  if (!doc.ok()) return doc.status();
  // Paths in messages are relative to the Model member of the serialised form.
  json::Json* model = &*doc;
  std::string where(file);
  if (json::optional_member(*doc, "learner") == nullptr && doc->is_object() &&
      json::optional_member(*doc, "Model") != nullptr) {
    model = &(*doc)["Model"];
    where += ": Model";
  }
  if (best_iteration == BestIteration::kHonour && model->is_object() &&
      model->contains("learner")) {
    if (Status s = keep_best_iteration((*model)["learner"], json::Where{where, ""}); !s.ok()) {
      return s;
    }
  }
  return load_xgboost_document(*model, where);
}

}  // namespace estimator::models
