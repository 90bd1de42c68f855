// SPDX-License-Identifier: Apache-2.0
// The model interface every format implements, and the views it computes over.
//
// A model is immutable once loaded and may be used from several threads at once.
// Evaluation is split in two so the request path never allocates:
//   plan()    maps the request's columns to the model's features (allocates; the caller
//             caches the plan per feature list), refusing with kMissingFeatures and the
//             names of what is missing;
//   predict() evaluates rows with a plan into a caller-provided output (no allocation).
#pragma once

#include <Eigen/Core>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "common/views.h"

namespace estimator::models {

using RowMatrixF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
// rows = workloads, cols = the request's feature columns (in the request's order).
using ConstMatrixView = Eigen::Map<const RowMatrixF>;
// rows = workloads, cols = the model's components (in ModelInfo::components order).
using MatrixView = Eigen::Map<RowMatrixF>;

using estimator::NodePower;
using estimator::SystemValue;

struct ModelInput {
  ConstMatrixView x{nullptr, 0, 0};
  std::span<const SystemValue> system_values;
  std::span<const NodePower> node_power;
};

inline constexpr double kUnknown = std::numeric_limits<double>::quiet_NaN();

// What metadata.json (or the model file) says about a model. Strings are canonical:
// output_type "AbsPower"/"DynPower", source with aliases resolved (see canonical_source).
struct ModelInfo {
  std::string name;          // model_name
  std::string trainer;       // e.g. SGDRegressorTrainer; derived from the name when absent
  std::string model_class;   // weight, ratio, scikit, xgboost, keras, curvefit
  std::string output_type;   // AbsPower or DynPower; empty when not stated
  std::string source;        // energy source; empty when not stated
  std::string node_type;     // as published; empty when not stated
  std::vector<std::string> features;    // numerical features, in the model's order
  std::vector<std::string> components;  // output columns, e.g. package, core, uncore, dram
  double mae = kUnknown;
  double mape = kUnknown;
  // Every published figure of metadata.json by key (mae, mape, mse, mae_val, abs_max_corr,
  // package_mae, ...): the numbers Kepler's filter and error key name. Negative values
  // (-1 = undefined) are left out.
  std::map<std::string, double, std::less<>> figures;
  double machine_cores = 0;  // cores of the training machine (machine_spec), 0 = unknown
  bool needs_node_power = false;  // ratio models split measured node power
  std::string origin;        // where it was loaded from, for logs and listings

  // figures[key], or kUnknown.
  double figure(std::string_view key) const {
    const auto it = figures.find(key);
    return it == figures.end() ? kUnknown : it->second;
  }
};

// Opaque per-model column mapping produced by Model::plan(). A plan is used by one thread
// at a time (each dispatch thread caches its own), so it may hold predict()'s scratch
// memory: that is how multi-stage models evaluate without allocating per request.
class Plan {
 public:
  virtual ~Plan() = default;
};

class Model {
 public:
  explicit Model(ModelInfo info) : info_(std::move(info)) {}
  virtual ~Model() = default;
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelInfo& info() const { return info_; }

  // Maps request columns (by name; extra columns ignored) to the model's features.
  // Fails with kMissingFeatures naming every feature the request lacks.
  virtual Result<std::unique_ptr<const Plan>> plan(
      std::span<const std::string_view> request_features) const = 0;

  // Evaluates every row of in.x into out (in.x.rows() x info().components.size()).
  // Negative predictions are clamped to 0. Must not allocate. `plan` must come from
  // this model's plan() for the same feature list as in.x's columns.
  virtual Status predict(const Plan& plan, const ModelInput& in, MatrixView out) const = 0;

  // The features this model would miss for a request with these columns, joined by
  // ", "; empty when plan() would succeed. The default checks info().features; a model
  // with alternatives (the ratio model's fallback usage column) overrides it. Lets the
  // registry rank candidates without building plans.
  virtual std::string missing_from(std::span<const std::string_view> request_features) const;

 protected:
  // The checks predict() starts with: `typed_plan` (the plan cast to the model's own plan
  // type) is not null, it was made for in.x's columns, and out is rows x components.
  Status check_predict_args(const Plan* typed_plan, Eigen::Index plan_columns,
                            const ModelInput& in, const MatrixView& out) const;

 private:
  ModelInfo info_;
};

// Resolves energy-source aliases: intel_rapl, rapl, rapl-msr -> rapl-sysfs; redfish,
// hmc -> acpi.
std::string canonical_source(std::string_view source);

// Resolves output-type names of older model servers: a name containing "Abs"
// (AbsModelWeight, AbsComponentPower, ...) -> AbsPower, "Dyn" -> DynPower; others unchanged.
std::string canonical_output_type(std::string_view output_type);

// Returns the names in `wanted` that are absent from `have`, joined by ", "; empty if
// all are present.
std::string missing_features(std::span<const std::string> wanted,
                             std::span<const std::string_view> have);

}  // namespace estimator::models
