// SPDX-License-Identifier: Apache-2.0
// Reading a model zip (kepler-model-db's <Trainer>_<n>.zip, a Keras 3 .keras file) into
// memory, treating the archive as hostile: entries with an absolute path, a ".." component
// or a symlink mode are refused (nothing is ever written to disk, but a name that tries to
// climb out of the folder says the archive is not what it claims), and sizes are capped
// whatever the headers claim, so a zip bomb stops at the cap.
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <string_view>

#include "common/status.h"

namespace estimator::models {

struct ZipLimits {
  std::size_t max_entries = 1024;
  std::size_t max_entry_bytes = 64u << 20;   // per member, uncompressed
  std::size_t max_total_bytes = 256u << 20;  // all members, uncompressed
};

// Member name -> contents; directory entries are skipped. `origin` names the archive in
// messages.
Result<std::map<std::string, std::string>> read_zip(std::string_view bytes, std::string_view origin,
                                                    const ZipLimits& limits = {});

}  // namespace estimator::models
