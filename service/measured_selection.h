// SPDX-License-Identifier: Apache-2.0
// Choosing models by the error measured on this node (the daemon's online selection).
//
// When an AbsPower request that names no model or trainer carries measured node power
// and one node-level row (one interval), the request handler evaluates every candidate
// model that fits the request's features (at most kMaxCandidates, best published first)
// on that row, and hands the predictions and the measurement to record(). Each model
// keeps, per component, an exponentially weighted mean absolute error (watts) and mean
// absolute percentage error over a window of about `window` intervals. Once a candidate
// has `min_intervals` intervals of evidence, the candidate with the smallest measured
// error (the mean of its components' weighted MAE) answers instead of the published
// choice; a model already chosen by measurement is replaced only by one whose error is
// below kSwitchRatio of its own, so that two near-equal models do not alternate.
//
// State is per model (name, source, output type: it survives model reloads, as metrics
// cells do) and per selection group (source and output type as the request names them,
// and the candidates compared);
// both are created when a request shape is first planned and are never freed, bounded by
// the models ever loaded. The per-request part takes one mutex for a few arithmetic
// operations per candidate and component (no allocation), shared by every dispatch thread
// and the Kepler socket: contention is one short critical section per interval per node,
// far below what per-thread accumulation merged later would save. A switch is logged
// (with both models' measured and published errors) and counted; that allocates, once per
// switch.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "common/views.h"
#include "models/model.h"

namespace estimator::service {

struct MeasuredSelectionConfig {
  bool enabled = true;              // false: --selection published (nothing evaluated)
  double window = 30;               // intervals; weight of a new interval = 2 / (window + 1)
  std::uint32_t min_intervals = 10; // evidence a model needs before it can be chosen
};

class MeasuredSelection {
 public:
  // Candidates evaluated per request, and components tracked per model (more are ignored).
  static constexpr std::size_t kMaxCandidates = 8;
  static constexpr std::size_t kMaxComponents = 8;
  // A model chosen by measurement yields only to one whose error is below this fraction of
  // its own.
  static constexpr double kSwitchRatio = 0.95;

  struct ModelStats;
  struct Group;

  explicit MeasuredSelection(MeasuredSelectionConfig config);
  ~MeasuredSelection();
  MeasuredSelection(const MeasuredSelection&) = delete;
  MeasuredSelection& operator=(const MeasuredSelection&) = delete;

  const MeasuredSelectionConfig& config() const { return config_; }

  // For plan-cache misses (lock, may allocate); the pointers live as long as this object.
  ModelStats* stats_for(const models::Model& model);
  // A group is the source and output type as requests name them and the candidates
  // compared (request shapes with other features may have other candidates: each set
  // keeps its own choice, so that shapes sent in turn do not flip one choice back and
  // forth).
  Group* group_for(std::string_view source, std::string_view output_type,
                   std::span<const models::Model* const> candidates);

  // One candidate's prediction for the interval: one value per model component, in
  // ModelInfo::components order; null when its evaluation failed.
  struct Observation {
    ModelStats* stats;
    const float* predicted;
  };

  // Updates every candidate's error with the measured node power of the interval (the
  // sum over packages of each component; a component whose watts are not all finite and
  // non-negative is ignored) and returns the index of the candidate that should answer:
  // 0 (the published choice) until some candidate has enough evidence. No allocation
  // unless the choice changes. Thread-safe.
  std::size_t record(Group& group, std::span<const Observation> candidates,
                     std::span<const NodePower> measured);

  // Prometheus text of the measured errors, intervals, current choices and switches
  // (estimator_model_measured_error{model,source,output_type,component,kind} and the
  // others in docs/configuration.md). Thread-safe.
  void render(std::string& out) const;

  // The measured figures of a model, for tests and listings: mean weighted MAE over its
  // components (NaN when never measured) and intervals seen.
  struct Figures {
    double mae;
    double mape;
    std::uint64_t intervals;
  };
  Figures figures(std::string_view model, std::string_view source, std::string_view output_type) const;

 private:
  MeasuredSelectionConfig config_;
  double alpha_;
  mutable std::mutex mu_;
  using Key = std::tuple<std::string, std::string, std::string>;
  std::map<Key, std::unique_ptr<ModelStats>> models_;
  std::map<Key, std::unique_ptr<Group>> groups_;  // source, output type, candidates
};

}  // namespace estimator::service
