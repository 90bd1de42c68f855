// SPDX-License-Identifier: Apache-2.0
// The CSV the `estimator` CLI reads and writes: a header of feature names, one row per
// workload.
//
// Reading is strict and says where: every column is a numeric feature, and a cell that is
// not a finite float (text, empty, hex, out of float range) is an error naming its line,
// column and value. Only a column whose header is one of Kepler's system feature names
// (kSystemFeatureColumns) holds text, one value for the whole file, since a request carries
// system values per node, not per row. Any other system feature is given explicitly
// (add_system_values, `--system NAME=VALUE`). A text cell never turns a feature column into
// a system feature: the request would then fail far away, as "features missing".
#pragma once

#include <iosfwd>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace estimator::service {

// Kepler's system metadata features (SystemMetaDataFeatureNames in Kepler v0.9).
inline constexpr std::string_view kSystemFeatureColumns[] = {"cpu_architecture"};

struct FeatureTable {
  std::vector<std::string> features;           // numeric columns, in file order
  std::vector<float> values;                   // rows x features.size(), row-major
  std::size_t rows = 0;
  std::vector<std::pair<std::string, std::string>> system_values;  // name, value
};

// A UTF-8 byte order mark before the header is skipped. Duplicate column names are an error.
Result<FeatureTable> read_feature_csv(std::istream& in);
// The same from a file, or from stdin for "-"; an unreadable path or a directory is an error
// (whose message leaves naming the path to the caller, as for the CSV's own errors).
Result<FeatureTable> read_feature_csv_file(const std::string& path);

// Adds system values given as "NAME=VALUE"; a name already in the table (a column or an
// earlier value) is an error.
Status add_system_values(FeatureTable& table, const std::vector<std::string>& assignments);

// Writes a header of component names and one row per workload, each value with enough
// digits to read back the same float.
void write_power_csv(std::ostream& out, const std::vector<std::string>& components,
                     const float* powers, std::size_t rows);

}  // namespace estimator::service
