// SPDX-License-Identifier: Apache-2.0
#include "service/cli/csv.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>

namespace estimator::service {
namespace {

std::string trim(std::string s) {
  const auto b = s.find_first_not_of(" \t\r");
  const auto e = s.find_last_not_of(" \t\r");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

std::vector<std::string> split(const std::string& line) {
  std::vector<std::string> out;
  std::string cell;
  bool quoted = false;
  for (char c : line) {
    if (c == '"') {
      quoted = !quoted;
    } else if (c == ',' && !quoted) {
      out.push_back(trim(cell));
      cell.clear();
    } else {
      cell += c;
    }
  }
  out.push_back(trim(cell));
  return out;
}

bool is_system_column(std::string_view name) {
  return std::find(std::begin(kSystemFeatureColumns), std::end(kSystemFeatureColumns), name) !=
         std::end(kSystemFeatureColumns);
}

// Empty when `s` is a finite float, else what is wrong with it.
std::string parse_float(const std::string& s, float& v) {
  if (s.empty()) return "empty cell";
  // from_chars takes no '+', which spreadsheets write.
  const char* begin = s.data() + (s.size() > 1 && s[0] == '+' && s[1] != '-' ? 1 : 0);
  const char* end = s.data() + s.size();
  const auto [p, ec] = std::from_chars(begin, end, v);
  if (ec == std::errc::result_out_of_range) return "'" + s + "' is out of the float range";
  if (ec != std::errc() || p != end) return "'" + s + "' is not a number";
  if (!std::isfinite(v)) return "'" + s + "' is not a finite number";
  return {};
}

}  // namespace

Result<FeatureTable> read_feature_csv(std::istream& in) {
  std::string line;
  if (!std::getline(in, line)) return Status(Code::kInvalidArgument, "CSV is empty");
  if (line.starts_with("\xEF\xBB\xBF")) line.erase(0, 3);  // UTF-8 BOM (spreadsheet exports)
  const std::vector<std::string> header = split(line);
  for (std::size_t c = 0; c < header.size(); ++c) {
    if (header[c].empty()) {
      return Status(Code::kInvalidArgument,
                    "CSV header: column " + std::to_string(c + 1) + " has no name");
    }
    for (std::size_t d = 0; d < c; ++d) {
      if (header[d] == header[c]) {
        return Status(Code::kInvalidArgument, "CSV header: column name '" + header[c] +
                                                  "' appears twice (columns " +
                                                  std::to_string(d + 1) + " and " +
                                                  std::to_string(c + 1) + ")");
      }
    }
  }
  FeatureTable t;
  std::vector<bool> system(header.size());
  for (std::size_t c = 0; c < header.size(); ++c) {
    system[c] = is_system_column(header[c]);
    if (!system[c]) t.features.push_back(header[c]);
  }
  std::vector<std::string> system_first(header.size());  // the value of the first row
  for (std::size_t n = 2; std::getline(in, line); ++n) {
    if (trim(line).empty()) continue;
    const auto row = split(line);
    const auto where = [&](std::size_t c) {
      return "line " + std::to_string(n) + ", column " + std::to_string(c + 1) + " '" +
             header[c] + "': ";
    };
    if (row.size() != header.size()) {
      return Status(Code::kInvalidArgument, "CSV line " + std::to_string(n) + " has " +
                                                std::to_string(row.size()) + " cells, header has " +
                                                std::to_string(header.size()));
    }
    for (std::size_t c = 0; c < header.size(); ++c) {
      if (system[c]) {
        if (row[c].empty()) return Status(Code::kInvalidArgument, where(c) + "empty cell");
        if (t.rows == 0) {
          system_first[c] = row[c];
        } else if (row[c] != system_first[c]) {
          return Status(Code::kInvalidArgument,
                        where(c) + "'" + row[c] + "' differs from '" + system_first[c] +
                            "' above; a system feature has one value per request");
        }
        continue;
      }
      float v = 0;
      if (std::string error = parse_float(row[c], v); !error.empty()) {
        return Status(Code::kInvalidArgument, where(c) + error);
      }
      t.values.push_back(v);
    }
    ++t.rows;
  }
  for (std::size_t c = 0; c < header.size(); ++c) {
    if (system[c] && t.rows != 0) t.system_values.emplace_back(header[c], system_first[c]);
  }
  return t;
}

Result<FeatureTable> read_feature_csv_file(const std::string& path) {
  if (path == "-") return read_feature_csv(std::cin);
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return Status(Code::kInvalidArgument, "is a directory, not a CSV file");
  }
  std::ifstream file(path);
  if (!file) return Status(Code::kNotFound, std::string("cannot open: ") + std::strerror(errno));
  return read_feature_csv(file);
}

Status add_system_values(FeatureTable& table, const std::vector<std::string>& assignments) {
  for (const std::string& a : assignments) {
    const std::size_t eq = a.find('=');
    if (eq == 0 || eq == std::string::npos || eq + 1 == a.size()) {
      return Status(Code::kInvalidArgument, "system value '" + a + "' is not NAME=VALUE");
    }
    std::string name = a.substr(0, eq);
    const bool taken =
        std::find(table.features.begin(), table.features.end(), name) != table.features.end() ||
        std::any_of(table.system_values.begin(), table.system_values.end(),
                    [&](const auto& kv) { return kv.first == name; });
    if (taken) {
      return Status(Code::kInvalidArgument, "system value '" + name + "' is given twice");
    }
    table.system_values.emplace_back(std::move(name), a.substr(eq + 1));
  }
  return Status::Ok();
}

void write_power_csv(std::ostream& out, const std::vector<std::string>& components,
                     const float* powers, std::size_t rows) {
  for (std::size_t c = 0; c < components.size(); ++c) {
    out << (c ? "," : "") << components[c];
  }
  out << '\n';
  char buf[32];
  for (std::size_t r = 0; r < rows; ++r) {
    for (std::size_t c = 0; c < components.size(); ++c) {
      std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(powers[r * components.size() + c]));
      out << (c ? "," : "") << buf;
    }
    out << '\n';
  }
}

}  // namespace estimator::service
