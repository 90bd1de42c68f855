// SPDX-License-Identifier: Apache-2.0
// The registry: the set of loaded models and how one is chosen for a request.
//
// A Registry is immutable once built; the service swaps whole registries (shared_ptr)
// when the model directory changes, so requests in flight keep the one they started on.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "models/model.h"
#include "models/model_folder.h"

namespace estimator::models {

// What a request asks for; empty strings mean "any". The default member initializers let
// callers name only what they set (Selector{.output_type = "AbsPower"}) without
// -Wmissing-field-initializers.
struct Selector {
  std::string_view name{};
  std::string_view trainer{};
  std::string_view output_type{};
  std::string_view source{};
  // Kepler's filter, "mae:0.5;mape:10": keep models whose figure (ModelInfo::figures) is
  // at most the value, or at least for abs_max_corr (a correlation: higher is better). A
  // model that does not publish a filtered figure fails the filter, as in Kepler.
  std::string_view filter{};
};

// How the daemon ranks the models that can serve a request (operator settings, the same
// for every request).
struct SelectionPolicy {
  std::string error_key = "mae";  // the figure whose smallest value wins
  std::string node_type{};        // models of this node_type first, when any can serve
};

// One term of a filter.
struct FilterTerm {
  std::string key;
  double limit = 0;
  bool at_least = false;  // abs_max_corr
};
// Parses "mae:0.5;mape:10" (spaces around terms allowed, empty terms ignored); an empty
// filter gives no terms. kInvalidArgument names the bad term.
Result<std::vector<FilterTerm>> parse_filter(std::string_view filter);

// A model that ranks before the one select() chose, of the requested kind and not dropped
// by the request's filter, that could not serve the request: the answer comes from a
// worse model because the request lacks what this one needs.
struct PassedOver {
  const Model* model;
  std::string missing;            // features the request lacks, joined by ", "; may be empty
  bool lacks_node_power = false;  // needs measured node power the request does not carry
};

// "needs features missing from the request: a, b" (and/or measured node power).
std::string describe_needs(const PassedOver& p);

// A model that could not be loaded and why (listed by `estimator models`, logged).
struct Refusal {
  std::string origin;
  Status reason;
};

class Registry {
 public:
  // Loads each folder; a folder that fails to load is recorded in refused(), not fatal.
  static std::shared_ptr<const Registry> build(std::span<const ModelFolder> folders);

  // As build(folders); `earlier` (what scan_directory could not read) is logged and
  // heads refused(), so that listings show every file that is not being served.
  static std::shared_ptr<const Registry> build(std::span<const ModelFolder> folders,
                                               std::vector<Refusal> earlier);

  // Every folder holding metadata.json under `dir`, recursively, in path order, with the
  // regular files directly inside it. Hidden entries (".name", as Kubernetes' "..data"
  // of a mounted ConfigMap) are skipped, directory symlinks are not followed, and file
  // symlinks are read only when they resolve inside `dir`. A file that cannot be read
  // (too large, a symlink leaving `dir`, an I/O error) is skipped and logged; the folder
  // is still returned. path_hints = the folder's path from `dir`, `dir`'s own name first.
  static Result<std::vector<ModelFolder>> scan_directory(const std::filesystem::path& dir);

  // As above, but the skipped files are appended to `refused` (for build(), which logs
  // them) instead of being logged here.
  static Result<std::vector<ModelFolder>> scan_directory(const std::filesystem::path& dir,
                                                         std::vector<Refusal>& refused);

  // Files larger than this are not read by scan_directory.
  static constexpr std::uintmax_t kMaxFileBytes = 64U << 20U;

  // Chooses the model for a request with these feature columns:
  // - a name (or trainer) picks among models of that name (trainer), narrowed by output
  //   type and source when given; if it cannot serve the columns the error names the
  //   missing features (kMissingFeatures); an unknown name is kNotFound;
  // - otherwise, among models matching output type and source whose features are all
  //   present (and whose node-power needs are met) and that pass the filter, models of the
  //   policy's node type come first, then the smallest policy.error_key figure (unknown
  //   ranks last; ties broken by name for determinism). The filter applies to named
  //   models too.
  // Output type and source compare in canonical form (canonical_output_type,
  // canonical_source). A model that does not state one is chosen for a request that names
  // it only by name or trainer, never by ranking. Remaining ties (the same name from two
  // folders) go to the smaller origin.
  // `passed_over` (optional) receives the better-ranked models that could not serve (see
  // PassedOver), best first; empty when the best model answers. Allocates either way:
  // callers select once per request shape.
  Result<const Model*> select(const Selector& selector,
                              std::span<const std::string_view> features,
                              bool has_node_power, const SelectionPolicy& policy,
                              std::vector<PassedOver>* passed_over = nullptr) const;
  Result<const Model*> select(const Selector& selector,
                              std::span<const std::string_view> features,
                              bool has_node_power) const {
    return select(selector, features, has_node_power, SelectionPolicy{});
  }

  // Every model that could serve a request naming no model or trainer, as select()
  // judges them (kind, features, node-power needs, filter), best-ranked first: the
  // candidates measured selection compares. Empty when the filter is malformed.
  // Allocates: callers rank once per request shape.
  std::vector<const Model*> ranked(const Selector& selector,
                                   std::span<const std::string_view> features,
                                   bool has_node_power, const SelectionPolicy& policy) const;

  std::span<const std::unique_ptr<Model>> models() const { return models_; }
  std::span<const Refusal> refused() const { return refused_; }

 private:
  std::vector<std::unique_ptr<Model>> models_;
  std::vector<Refusal> refused_;
};

// Builds one model from a folder (dispatches on metadata.json's model_class and the
// model file's content). Never throws.
Result<std::unique_ptr<Model>> load_model(const ModelFolder& folder);

}  // namespace estimator::models
