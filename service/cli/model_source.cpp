// SPDX-License-Identifier: Apache-2.0
#include "service/cli/model_source.h"

#include <cstdio>
#include <utility>
#include <vector>

#include "models/embedded_defaults.h"

namespace estimator::service {

std::shared_ptr<const models::Registry> load_registry(const std::string& model_dir) {
  if (model_dir.empty()) return models::Registry::build(models::embedded_model_folders());
  std::vector<models::Refusal> refused;
  Result<std::vector<models::ModelFolder>> folders =
      models::Registry::scan_directory(model_dir, refused);
  if (!folders.ok()) {
    std::fprintf(stderr, "estimator: %s\n", folders.status().to_string().c_str());
    return nullptr;
  }
  return models::Registry::build(*folders, std::move(refused));
}

}  // namespace estimator::service
