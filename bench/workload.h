// SPDX-License-Identifier: Apache-2.0
// The requests every mode sends: rows x features float matrices for one of two models,
//   linear  - the embedded rapl-sysfs AbsPower SGDRegressorTrainer_0, which reads two of
//             the columns; the others travel and are ignored, as in a real exporter's
//             request (selected as Kepler does: output type and source, smallest error);
//   xgboost - a generated XGBoost model of 100 trees over every column of the case
//             (bench/xgboost_workload.h), selected by name.
//
// Each case is encoded once here and answered once by a local RequestHandler, so the
// floor mode can ping-pong exactly the bytes the ring and the socket carry, every mode
// can compare its answers with that one, and a workload a model refuses fails before
// anything is timed.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "models/registry.h"
#include "schema/wire.h"

namespace estimator::bench {

inline constexpr std::uint32_t kMaxRows = 5000;  // 10 features fit the default slot areas
inline constexpr std::uint32_t kMaxFeatures = 20;
inline constexpr std::uint32_t kPrimaryFeatures = 10;
inline constexpr std::string_view kOutputType = "AbsPower";
inline constexpr std::string_view kSource = "rapl-sysfs";
inline constexpr std::string_view kLinearModel = "SGDRegressorTrainer_0";

enum class ModelKind : std::uint8_t { kLinear, kXGBoost };
std::string_view model_kind_name(ModelKind kind);  // "linear", "xgboost"

// The first `cols` of the twenty column names, in column order (2 <= cols <= 20: the
// linear model reads the first two).
std::span<const std::string_view> feature_names(std::uint32_t cols);

// Upper bound of plausible per-interval values of column `col` (values are drawn in
// [0, bound)); the generated trees split inside these ranges.
double feature_scale(std::uint32_t col);

// Request and response area sizes: the daemon's defaults (shm::SegmentConfig), so that the
// socket baseline's handler is sized like the daemon's.
std::size_t request_capacity();
std::size_t response_capacity();

struct CaseSpec {
  std::uint32_t rows = 0;
  std::uint32_t cols = kPrimaryFeatures;
  ModelKind model = ModelKind::kLinear;
  bool operator==(const CaseSpec&) const = default;
};

struct Case {
  std::uint32_t rows = 0;
  std::uint32_t cols = 0;
  ModelKind model = ModelKind::kLinear;
  std::string model_name;              // the model that must answer
  bool by_name = false;                // the request names it (otherwise: selection)
  std::vector<float> matrix;           // rows x cols, row-major, deterministic
  std::vector<std::uint8_t> request;   // the encoded request (8-byte aligned storage)
  std::vector<std::uint8_t> response;  // the encoded answer of the daemon's handler
  std::uint32_t components = 0;        // power columns of the answer
  std::vector<std::string> component_names;
  std::vector<float> powers;           // rows x components: the local handler's answer
};

// The encoding parameters of `c` (selector, names, matrix) with the given request id.
wire::RequestSpec request_spec(const Case& c, std::uint64_t request_id);

// Builds a case per spec and has a local handler answer it; fails if a model does not.
// `registry` must hold the XGBoost models of xgboost_folders() for xgboost specs.
Result<std::vector<Case>> make_cases(std::shared_ptr<const models::Registry> registry,
                                     std::span<const CaseSpec> specs);

// Ok when a reply answers `c`: the rows sent, the expected model, a power column per
// component, every power finite. Cheap enough to run on every reply.
Status check_reply(const Case& c, std::uint32_t rows, std::uint32_t cols, const float* powers,
                   std::string_view model);

}  // namespace estimator::bench
