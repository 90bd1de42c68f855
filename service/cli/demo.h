// SPDX-License-Identifier: Apache-2.0
// `estimator demo`: the main job of a first run. Starts estimatord on a private segment
// with the embedded default models, plays an exporter with a few dozen pods whose usage
// varies over time, and prints per-pod power and the round-trip latency percentiles.
#pragma once

#include <string>

namespace estimator::service {

struct DemoOptions {
  int pods = 32;
  int intervals = 5;
  int interval_ms = 1000;
  std::string daemon_path;  // empty: estimatord beside the estimator binary
};

int run_demo(const DemoOptions& options, const char* argv0);

}  // namespace estimator::service
