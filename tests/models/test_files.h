// SPDX-License-Identifier: Apache-2.0
// Reading test inputs: a whole file, or one member of a zip through the project's own
// reader (models/zip_archive.h), so no test depends on an unzip program.
#pragma once

#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "models/zip_archive.h"
#include "tests/support/files.h"

namespace estimator::models::testing {

// The file's bytes; nullopt when it cannot be opened.
inline std::optional<std::string> read_file_bytes(const std::filesystem::path& p) {
  if (!std::ifstream(p)) return std::nullopt;
  return estimator::testing::read_file(p);
}

// A zip's members by name; nullopt when the archive is missing or unreadable.
inline std::optional<std::map<std::string, std::string>> zip_members(const std::filesystem::path& zip) {
  const std::optional<std::string> bytes = read_file_bytes(zip);
  if (!bytes) return std::nullopt;
  auto members = read_zip(*bytes, zip.string());
  if (!members.ok()) return std::nullopt;
  return std::move(members).value();
}

// One member; nullopt when the archive or the member is missing.
inline std::optional<std::string> zip_member(const std::filesystem::path& zip, const std::string& name) {
  auto members = zip_members(zip);
  if (!members) return std::nullopt;
  auto it = members->find(name);
  if (it == members->end()) return std::nullopt;
  return std::move(it->second);
}

}  // namespace estimator::models::testing
