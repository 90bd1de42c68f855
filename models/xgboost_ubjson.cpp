// SPDX-License-Identifier: Apache-2.0
#include "models/xgboost_ubjson.h"

#include <string>

#include "models/json_fields.h"
#include "models/ubjson.h"
#include "models/xgboost_model.h"

namespace estimator::models {

Result<std::unique_ptr<Regressor>> load_xgboost_ubjson(std::string_view bytes,
                                                       std::string_view file) {
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
  if (json::optional_member(*doc, "learner") == nullptr) {
    if (const json::Json* model = json::optional_member(*doc, "Model")) {
      // Paths in messages are relative to the Model member.
      return load_xgboost_document(*model, std::string(file) + ": Model");
    }
  }
  return load_xgboost_document(*doc, file);
}

}  // namespace estimator::models
