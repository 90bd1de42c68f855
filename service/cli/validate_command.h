// SPDX-License-Identifier: Apache-2.0
// `estimator validate`: which model is right for this node, judged by power measured on
// it rather than by the error published for the machine a model was trained on.
//
// The CSV holds node-level rows, one per interval: feature columns as for `estimator
// predict`, and measured power columns in watts. A column is a measurement when its name
// is given with --measured, or, without --measured, when it is one of the component names
// in kMeasuredColumns (package, core, uncore, dram, platform, gpu, other). Every model of
// the requested output type (default AbsPower: measured node power includes idle) and
// source whose features the CSV has is evaluated on every row; for each component it
// predicts that the CSV measures: mean absolute error, mean absolute percentage error
// (over rows whose measurement is above zero) and maximum absolute error. Models rank by
// the mean of their components' MAE, smallest first (ties by name, then origin).
#pragma once

#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "models/registry.h"
#include "service/cli/csv.h"

namespace estimator::service {

inline constexpr std::string_view kMeasuredColumns[] = {"package", "core",  "uncore", "dram",
                                                        "platform", "gpu", "other"};

struct ValidateOptions {
  std::string model_dir{};                   // empty: the embedded defaults
  std::string csv_path{};                    // '-' = stdin
  std::vector<std::string> measured{};       // measured columns; empty: kMeasuredColumns found
  std::string output_type = "AbsPower";      // empty: any
  std::string source{};                      // empty: any
  std::vector<std::string> system_values{};  // NAME=VALUE for every row
  std::string table_path{};                  // --output: the ranking as CSV
  std::string plot_path{};                   // --plot: PNG of the best three
};

// A CSV split into features and measurements.
struct MeasuredTable {
  FeatureTable features;                  // the feature columns only
  std::vector<std::string> components;    // measured columns, in file order
  std::vector<std::vector<double>> watts; // per component, one value per row
};

// Moves the measured columns out of `table`. kInvalidArgument when a --measured name is
// not a column, or when no column is a measurement.
Result<MeasuredTable> split_measured(FeatureTable table, const std::vector<std::string>& measured);

struct ComponentError {
  std::string component;
  double mae = 0;
  double mape = 0;       // percent; NaN when no measurement is above zero
  double max_error = 0;
  std::vector<double> predicted;  // one per row
};

struct ModelScore {
  const models::Model* model = nullptr;
  std::vector<ComponentError> components;  // the measured ones it predicts, in CSV order
  double score = 0;                        // mean of components' mae
};

struct SkippedModel {
  const models::Model* model = nullptr;
  std::string reason;
};

struct Validation {
  std::vector<ModelScore> ranked;  // best first
  std::vector<SkippedModel> skipped;
};

// Evaluates every model of `registry` of the given kind (empty = any) on the table.
// kInternal when a model fails to evaluate rows it planned for.
Result<Validation> validate_models(const models::Registry& registry, const MeasuredTable& table,
                                   std::string_view output_type, std::string_view source);

// Prints the ranking on `out` and writes the table and plot the options ask for; returns
// the exit code: 0, 2 for bad input (options, CSV, a model directory that cannot be read,
// no model fits), 1 when an output file cannot be written.
int run_validate(const ValidateOptions& options, std::FILE* out = stdout);

}  // namespace estimator::service
