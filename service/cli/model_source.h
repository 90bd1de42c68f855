// SPDX-License-Identifier: Apache-2.0
// The models an offline subcommand (`models`, `validate`) works on: a model directory
// scanned and loaded as the daemon does it, or the embedded defaults.
#pragma once

#include <memory>
#include <string>

#include "models/registry.h"

namespace estimator::service {

// The registry of `model_dir` (empty: the embedded defaults), with the files the scan
// could not read among its refused(). Null when the directory itself cannot be scanned,
// said on stderr: an input the subcommand cannot use (kExitUsage).
std::shared_ptr<const models::Registry> load_registry(const std::string& model_dir);

}  // namespace estimator::service
