// SPDX-License-Identifier: Apache-2.0
#include "models/embedded_defaults.h"

#include <map>
#include <string>
#include <string_view>

#include "models/embedded_files.h"

namespace estimator::models {

std::vector<ModelFolder> embedded_model_folders() {
  // Group files by directory; only directories with a metadata.json are model folders.
  std::map<std::string, ModelFolder> by_dir;
  for (const detail::EmbeddedFile& f : detail::embedded_files()) {
    const std::string_view path(f.path);
    const std::size_t slash = path.rfind('/');
    const std::string dir(slash == std::string_view::npos ? std::string_view()
                                                          : path.substr(0, slash));
    const std::string name(slash == std::string_view::npos ? path : path.substr(slash + 1));
    ModelFolder& folder = by_dir[dir];
    folder.files.emplace(name, std::string(reinterpret_cast<const char*>(f.data), f.size));
  }

  std::vector<ModelFolder> folders;
  for (auto& [dir, folder] : by_dir) {
    if (!folder.files.contains("metadata.json")) continue;
    folder.origin = "embedded:" + dir;
    std::string_view rest(dir);
    while (!rest.empty()) {
      const std::size_t slash = rest.find('/');
      folder.path_hints.emplace_back(rest.substr(0, slash));
      if (slash == std::string_view::npos) break;
      rest.remove_prefix(slash + 1);
    }
    folders.push_back(std::move(folder));
  }
  return folders;
}

}  // namespace estimator::models
