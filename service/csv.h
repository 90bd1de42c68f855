// The CSV the `estimator` CLI reads and writes: a header of feature names, one row per
// workload. A column whose values are not numbers is a system feature (for example
// cpu_architecture); it must hold one value for the whole file, since a request carries
// system values per node, not per row.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

#include "common/status.h"

namespace estimator::service {

struct FeatureTable {
  std::vector<std::string> features;           // numeric columns, in file order
  std::vector<float> values;                   // rows x features.size(), row-major
  std::size_t rows = 0;
  std::vector<std::pair<std::string, std::string>> system_values;  // name, value
};

Result<FeatureTable> read_feature_csv(std::istream& in);

// Writes a header of component names and one row per workload, each value with enough
// digits to read back the same float.
void write_power_csv(std::ostream& out, const std::vector<std::string>& components,
                     const float* powers, std::size_t rows);

}  // namespace estimator::service
