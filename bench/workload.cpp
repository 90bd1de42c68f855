// SPDX-License-Identifier: Apache-2.0
// The benchmark's request matrices and reply checks (see workload.h).
#include "bench/workload.h"

#include <algorithm>
#include <bit>
#include <string>

#include "bench/xgboost_workload.h"
#include "service/request_handler.h"
#include "shm/segment.h"

namespace estimator::bench {
namespace {

// The two the linear model reads, then counters and rates Kepler exporters also send
// (and, past the tenth, names of older or GPU-equipped exporters).
constexpr std::array<std::string_view, kMaxFeatures> kNames{
    "bpf_cpu_time_ms",       "bpf_page_cache_hit", "cpu_cycles",       "cpu_instructions",
    "cache_miss",            "bpf_net_tx_irq",     "bpf_net_rx_irq",   "bpf_block_irq",
    "task_clock_ms",         "cpu_ref_cycles",     "gpu_compute_util", "gpu_mem_util",
    "cgroupfs_cpu_usage_us", "cgroupfs_memory_usage_bytes",           "bpf_cpu_time_us",
    "cpu_instr",             "curr_cpu_cycles",    "curr_cache_miss",  "curr_cpu_instr",
    "curr_bpf_cpu_time_us"};

// Upper bounds of plausible per-interval values of each column.
constexpr std::array<double, kMaxFeatures> kScale{
    2000.0, 5e4, 4e9, 8e9, 1e7, 1e4, 1e4, 1e3, 2000.0, 4e9,
    100.0,  100.0, 2e6, 8e9, 2e6, 8e9, 4e9, 1e7, 8e9, 2e6};

static_assert(__STDCPP_DEFAULT_NEW_ALIGNMENT__ >= 8,
              "requests are read from vector storage and must be 8-byte aligned");

// splitmix64: a fixed seed gives the same matrix on every run and machine.
std::uint64_t next(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

std::vector<float> make_matrix(std::uint32_t rows, std::uint32_t cols) {
  std::uint64_t state = 0xE57 + rows * 31ULL + cols;
  std::vector<float> m(std::size_t{rows} * cols);
  for (std::size_t i = 0; i < m.size(); ++i) {
    const double unit = static_cast<double>(next(state) >> 11) * 0x1.0p-53;  // [0, 1)
    m[i] = static_cast<float>(unit * kScale[i % cols]);
  }
  return m;
}

// Every power finite: no exponent field of all ones (inf or NaN). An integer max of the
// masked bits in fixed blocks of 8 lanes vectorizes at -O2, unlike std::isfinite in a
// loop with an early exit, so checking every reply costs little.
bool all_finite(const float* p, std::size_t n) {
  constexpr std::uint32_t kExponent = 0x7F800000U;
  std::array<std::uint32_t, 8> lanes{};
  std::size_t i = 0;
  for (; i + lanes.size() <= n; i += lanes.size()) {
    for (std::size_t k = 0; k < lanes.size(); ++k) {
      lanes[k] = std::max(lanes[k], std::bit_cast<std::uint32_t>(p[i + k]) & kExponent);
    }
  }
  std::uint32_t worst = 0;
  for (; i < n; ++i) worst = std::max(worst, std::bit_cast<std::uint32_t>(p[i]) & kExponent);
  for (const std::uint32_t l : lanes) worst = std::max(worst, l);
  return worst != kExponent;
}

}  // namespace

std::string_view model_kind_name(ModelKind kind) {
  return kind == ModelKind::kXGBoost ? "xgboost" : "linear";
}

std::span<const std::string_view> feature_names(std::uint32_t cols) {
  return std::span<const std::string_view>(kNames).first(std::min<std::size_t>(cols, kMaxFeatures));
}

double feature_scale(std::uint32_t col) { return kScale[col % kMaxFeatures]; }

std::size_t request_capacity() { return shm::SegmentConfig{}.request_capacity; }
std::size_t response_capacity() { return shm::SegmentConfig{}.response_capacity; }

wire::RequestSpec request_spec(const Case& c, std::uint64_t request_id) {
  wire::RequestSpec spec;
  spec.request_id = request_id;
  spec.output_type = kOutputType;
  spec.source = kSource;
  if (c.by_name) spec.model_name = c.model_name;
  spec.feature_names = feature_names(c.cols);
  spec.matrix = c.matrix.data();
  spec.rows = c.rows;
  spec.cols = c.cols;
  return spec;
}

Result<std::vector<Case>> make_cases(std::shared_ptr<const models::Registry> registry,
                                     std::span<const CaseSpec> specs) {
  service::RegistryHolder holder(std::move(registry));
  service::RequestHandler handler(holder, request_capacity(), response_capacity());
  std::vector<std::uint8_t> area(request_capacity());
  std::vector<Case> cases;
  for (const CaseSpec& spec : specs) {
    if (spec.rows < 1 || spec.rows > kMaxRows || spec.cols < 2 || spec.cols > kMaxFeatures) {
      return Status(Code::kInvalidArgument,
                    "case of " + std::to_string(spec.rows) + " rows x " +
                        std::to_string(spec.cols) + " features is out of range (rows 1.." +
                        std::to_string(kMaxRows) + ", features 2.." +
                        std::to_string(kMaxFeatures) + ")");
    }
    Case c;
    c.rows = spec.rows;
    c.cols = spec.cols;
    c.model = spec.model;
    c.by_name = spec.model == ModelKind::kXGBoost;
    c.model_name = c.by_name ? xgboost_model_name(spec.cols) : std::string(kLinearModel);
    c.matrix = make_matrix(spec.rows, spec.cols);
    auto built = wire::build_request(request_spec(c, 1), area);
    if (!built.ok()) {
      return Status(built.status().code(), "case " + std::to_string(c.rows) + "x" +
                                               std::to_string(c.cols) + ": " +
                                               built.status().message());
    }
    c.request.assign(built->begin(), built->end());
    const auto answer = handler.handle(c.request);
    c.response.assign(answer.begin(), answer.end());
    auto parsed = wire::read_response(c.response);
    if (!parsed.ok()) return parsed.status();
    if (parsed->status != Code::kOk) {
      return Status(parsed->status, "the model refuses the workload: " +
                                        std::string(parsed->message));
    }
    c.components = parsed->cols;
    if (parsed->components != nullptr) {
      for (const auto* name : *parsed->components) {
        c.component_names.emplace_back(wire::view_of(name));
      }
    }
    c.powers.assign(parsed->powers, parsed->powers + std::size_t{parsed->rows} * parsed->cols);
    const std::string_view model =
        parsed->model != nullptr ? wire::view_of(parsed->model->name()) : std::string_view{};
    if (Status s = check_reply(c, parsed->rows, parsed->cols, parsed->powers, model); !s.ok()) {
      return s;
    }
    cases.push_back(std::move(c));
  }
  return cases;
}

Status check_reply(const Case& c, std::uint32_t rows, std::uint32_t cols, const float* powers,
                   std::string_view model) {
  if (rows != c.rows) {
    return Status(Code::kInternal, "reply has " + std::to_string(rows) + " rows for " +
                                       std::to_string(c.rows));
  }
  if (cols == 0 || (c.components != 0 && cols != c.components)) {
    return Status(Code::kInternal, "reply has " + std::to_string(cols) + " power columns");
  }
  if (model != c.model_name) {
    return Status(Code::kInternal, "answered by model '" + std::string(model) + "', expected " +
                                       c.model_name);
  }
  if (powers == nullptr || !all_finite(powers, std::size_t{rows} * cols)) {
    return Status(Code::kInvalidValue, "reply holds a non-finite power");
  }
  return Status::Ok();
}

}  // namespace estimator::bench
