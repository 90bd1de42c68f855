// SPDX-License-Identifier: Apache-2.0
// estimator-bench --resources: what the real daemon costs the node, measured on the
// estimatord binary (not the daemon core in a fork, as the latency modes do):
//   - resident memory (VmRSS of /proc/<pid>/status) once it serves, with the embedded
//     default models, and with 50 generated weight models in a --model-dir besides;
//   - CPU time used while idle (utime + stime of /proc/<pid>/stat over --idle-s seconds);
//   - start-up time: from spawning the process until a client::Client ping is answered;
//   - the stripped binary's size (a copy stripped with `strip`), and the image's size:
//     deploy/collect-runtime.sh collected into a temporary directory (the files a
//     container image of the daemon holds), or "no image" when the script is absent;
// each printed with the target and whether this run meets it.
#pragma once

#include <string>

namespace estimator::bench {

struct ResourceOptions {
  std::string estimatord = ESTIMATORD_PATH;          // the daemon binary
  double idle_s = 60;                                // idle CPU is measured over this
  std::string collect_script = ESTIMATOR_COLLECT_SCRIPT;  // deploy/collect-runtime.sh
};

// Prints the figures and the targets; 0 when every figure could be measured.
int run_resources(const ResourceOptions& options);

}  // namespace estimator::bench
