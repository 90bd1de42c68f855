// SPDX-License-Identifier: Apache-2.0
// `estimator models`: what a model directory holds, as the daemon would load it: every
// model accepted (name, class, kind, features, error figures, origin), every file refused
// with the reason, and which model the selection would pick for a feature list, and which
// better-ranked models it would pass over and why.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

namespace estimator::service {

// The `{}` initializers let callers name only what they set (designated initializers)
// under -Wmissing-field-initializers.
struct ModelsOptions {
  std::string model_dir{};              // empty: the embedded defaults
  std::vector<std::string> features{};  // the columns a request would carry
  std::string output_type{};
  std::string source{};
  std::string name{};
  std::string filter{};                 // Kepler's "mae:0.5;mape:10"
  std::string error_key = "mae";
  std::string node_type{};
  // A scrape of a running estimatord's /metrics (a file, or "-" for stdin): adds the
  // errors measured on its node (estimator_model_measured_error) beside the published ones.
  std::string measured_from{};
};

// Prints the listing on `out`; returns the process exit code (0; 2 when the directory or
// the scrape cannot be read).
int run_models(const ModelsOptions& options, std::FILE* out = stdout);

}  // namespace estimator::service
