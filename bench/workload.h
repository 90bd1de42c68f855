// The request matrix every mode sends: rows in {1, 10, 100, 500} x 10 feature columns for
// the embedded linear model (rapl-sysfs AbsPower SGDRegressorTrainer_0), which reads two of
// the columns; the other eight travel and are ignored, as in a real exporter's request.
//
// Each case is encoded once here and answered once by a local RequestHandler, so the
// floor mode can ping-pong exactly the bytes the ring and the socket carry, and so a
// workload the model refuses fails before anything is timed.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "models/registry.h"
#include "schema/wire.h"

namespace estimator::bench {

inline constexpr std::array<std::uint32_t, 4> kRowCounts{1, 10, 100, 500};  // the default
inline constexpr std::uint32_t kMaxRows = 5000;  // fits the default slot areas
inline constexpr std::uint32_t kFeatureCount = 10;
inline constexpr std::string_view kOutputType = "AbsPower";
inline constexpr std::string_view kSource = "rapl-sysfs";
inline constexpr std::string_view kExpectedModel = "SGDRegressorTrainer_0";

// The ten column names, in column order.
std::span<const std::string_view> feature_names();

// Request and response area sizes: the daemon's defaults (shm::SegmentConfig), so that the
// socket baseline's handler is sized like the daemon's.
std::size_t request_capacity();
std::size_t response_capacity();

struct Case {
  std::uint32_t rows = 0;
  std::uint32_t cols = 0;
  std::vector<float> matrix;           // rows x cols, row-major, deterministic
  std::vector<std::uint8_t> request;   // the encoded request (8-byte aligned storage)
  std::vector<std::uint8_t> response;  // the encoded answer of the daemon's handler
  std::uint32_t components = 0;        // power columns of the answer
};

// The encoding parameters of `c` (selector, names, matrix) with the given request id.
wire::RequestSpec request_spec(const Case& c, std::uint64_t request_id);

// Builds a case per row count and has a local handler answer it; fails if the model
// does not.
Result<std::vector<Case>> make_cases(std::shared_ptr<const models::Registry> registry,
                                     std::span<const std::uint32_t> row_counts);

// Ok when a reply answers `c`: the rows sent, the expected model, a power column per
// component, every power finite. Cheap enough to run on every reply.
Status check_reply(const Case& c, std::uint32_t rows, std::uint32_t cols, const float* powers,
                   std::string_view model);

}  // namespace estimator::bench
