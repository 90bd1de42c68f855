#include "service/csv.h"

#include <charconv>
#include <cstdio>
#include <istream>
#include <ostream>

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

bool parse_float(const std::string& s, float& v) {
  if (s.empty()) return false;
  const char* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, v);
  return ec == std::errc() && p == end;
}

}  // namespace

Result<FeatureTable> read_feature_csv(std::istream& in) {
  std::string line;
  if (!std::getline(in, line)) return Status(Code::kInvalidArgument, "CSV is empty");
  const std::vector<std::string> header = split(line);
  for (const auto& h : header) {
    if (h.empty()) return Status(Code::kInvalidArgument, "CSV header has an empty column name");
  }
  std::vector<std::vector<std::string>> cells;
  for (std::size_t n = 2; std::getline(in, line); ++n) {
    if (trim(line).empty()) continue;
    auto row = split(line);
    if (row.size() != header.size()) {
      return Status(Code::kInvalidArgument, "CSV line " + std::to_string(n) + " has " +
                                                std::to_string(row.size()) + " cells, header has " +
                                                std::to_string(header.size()));
    }
    cells.push_back(std::move(row));
  }
  FeatureTable t;
  t.rows = cells.size();
  std::vector<bool> numeric(header.size(), true);
  for (std::size_t c = 0; c < header.size(); ++c) {
    float v = 0;
    for (const auto& row : cells) {
      if (!parse_float(row[c], v)) {
        numeric[c] = false;
        break;
      }
    }
    if (numeric[c]) {
      t.features.push_back(header[c]);
    } else {
      for (const auto& row : cells) {
        if (row[c] != cells.front()[c]) {
          return Status(Code::kInvalidArgument,
                        "column '" + header[c] + "' is not numeric and varies between rows; "
                        "a system feature must have one value per request");
        }
      }
      t.system_values.emplace_back(header[c], cells.front()[c]);
    }
  }
  t.values.reserve(t.rows * t.features.size());
  for (const auto& row : cells) {
    for (std::size_t c = 0; c < header.size(); ++c) {
      float v = 0;
      if (numeric[c] && parse_float(row[c], v)) t.values.push_back(v);
    }
  }
  return t;
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
