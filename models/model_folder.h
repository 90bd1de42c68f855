// SPDX-License-Identifier: Apache-2.0
// One model folder as the loaders see it: its files by name with their contents in memory.
// Kept apart from the registry so that metadata, the pipeline and the format loaders can
// take a folder without depending on how models are selected.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace estimator::models {

// Built from a directory on disk, from the embedded defaults, or from a zip.
struct ModelFolder {
  std::string origin;                          // path or "embedded:<path>", for messages
  std::map<std::string, std::string> files;    // "metadata.json" -> contents, ...
  // Path components above the folder, e.g. {"rapl-sysfs", "AbsPower"}: supply source and
  // output type when metadata.json lacks them.
  std::vector<std::string> path_hints;
};

}  // namespace estimator::models
