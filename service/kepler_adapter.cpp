// SPDX-License-Identifier: Apache-2.0
#include "service/kepler_adapter.h"

#include <algorithm>
#include <bit>
#include <cstring>

#include "schema/wire.h"

namespace estimator::service {
namespace {

// Buffers start at this size, which a request of Kepler's ~500 rows fits, and grow (to
// the next power of two) only when a larger request arrives.
constexpr std::size_t kInitialCapacity = 64 << 10;
// Bytes of a response besides the powers (model description, component names), and the
// most components a model is assumed to have when sizing the response buffer; a model
// with more gets a clear kTooLarge from the handler rather than a crash.
constexpr std::size_t kResponseOverhead = 16 << 10;
constexpr std::size_t kMaxComponents = 16;

std::size_t grown(std::size_t need) {
  return std::bit_ceil(std::max(need, kInitialCapacity));
}

}  // namespace

KeplerAdapter::KeplerAdapter(const RegistryHolder& registry, kepler::JsonLimits limits,
                             Metrics* metrics, kepler::ClientReadLimits reads)
    : registry_(registry), metrics_(metrics), reads_(reads), reader_(limits) {
  ensure_capacity(kInitialCapacity, kInitialCapacity);
  node_power_.reserve(4);
  system_values_.reserve(limits.max_system_values);
  components_.reserve(kMaxComponents);
  reply_.reserve(4096);
}

KeplerAdapter::~KeplerAdapter() = default;

void KeplerAdapter::ensure_capacity(std::size_t request_bytes, std::size_t response_bytes) {
  if (handler_ != nullptr && request_bytes <= request_capacity_ &&
      response_bytes <= response_capacity_) {
    return;
  }
  // A new handler loses its plan cache; that happens once per larger size, not per request.
  request_capacity_ = std::max(request_capacity_, grown(request_bytes));
  response_capacity_ = std::max(response_capacity_, grown(response_bytes));
  handler_ = std::make_unique<RequestHandler>(registry_, request_capacity_, response_capacity_,
                                              metrics_);
  wire_.assign(request_capacity_ / sizeof(std::uint64_t), 0);
}

void KeplerAdapter::fail(const Status& status) {
  last_code_ = status.code();
  last_error_ = status.message();
  kepler::write_error(status.message(), reply_);
}

std::string_view KeplerAdapter::answer(std::string_view request) {
  if (Status s = reader_.parse(request, request_); !s.ok()) {
    fail(s);
    return reply_;
  }
  const kepler::KeplerRequest& k = request_;

  node_power_.clear();
  if (!k.core_power.empty()) {
    node_power_.push_back({"core", k.core_power, {}});
  }
  if (!k.dram_power.empty()) node_power_.push_back({"dram", k.dram_power, {}});
  if (!k.gpu_power.empty()) node_power_.push_back({"gpu", k.gpu_power, {}});
  if (!k.other_power.empty()) node_power_.push_back({"other", k.other_power, {}});
  system_values_.clear();
  for (std::size_t i = 0; i < k.system_features.size(); ++i) {
    system_values_.push_back({k.system_features[i], k.system_values[i]});
  }

  const wire::RequestSpec spec = wire::estimate_spec(
      {k.model_name, k.trainer_name, k.output_type, k.source, k.filter}, k.metrics,
      k.values.data(), k.rows, k.cols, node_power_, system_values_);

  ensure_capacity(wire::request_size_bound(spec) + 64,
                  std::size_t{k.rows} * kMaxComponents * sizeof(float) + kResponseOverhead);
  auto built = wire::build_request(
      spec, {reinterpret_cast<std::uint8_t*>(wire_.data()), wire_.size() * sizeof(std::uint64_t)});
  if (!built.ok()) {
    fail(built.status());
    return reply_;
  }
  // The buffer ends where the area ends, so it starts wherever its size puts it; the
  // handler reads 8-byte aligned requests (as slot areas are), so move it down to one.
  std::span<std::uint8_t> bytes = built.value();
  if (const auto misalign = reinterpret_cast<std::uintptr_t>(bytes.data()) % 8; misalign != 0) {
    std::uint8_t* aligned = bytes.data() - misalign;
    std::memmove(aligned, bytes.data(), bytes.size());
    bytes = {aligned, bytes.size()};
  }
  auto response = wire::read_response(handler_->handle(bytes));
  if (!response.ok()) {
    fail(Status(Code::kInternal,
                "unreadable response from the request handler: " + response.status().message()));
    return reply_;
  }
  const wire::ParsedResponse& r = response.value();
  if (r.status != Code::kOk) {
    fail(Status(r.status, std::string(r.message)));
    return reply_;
  }
  components_.clear();
  if (r.components != nullptr) {
    for (const auto* c : *r.components) components_.push_back(wire::view_of(c));
  }
  if (components_.size() != r.cols || r.rows != k.rows) {
    fail(Status(Code::kInternal, "response of " + std::to_string(r.rows) + " x " +
                                     std::to_string(r.cols) + " powers for " +
                                     std::to_string(k.rows) + " rows and " +
                                     std::to_string(components_.size()) + " components"));
    return reply_;
  }
  const double core_ratio = r.model != nullptr ? r.model->core_ratio() : 1.0;
  if (Status s = kepler::write_reply(k.form, components_,
                                     {r.powers, std::size_t{r.rows} * r.cols}, r.rows,
                                     core_ratio, reply_);
      !s.ok()) {
    last_code_ = s.code();
    last_error_ = s.message();
    return reply_;
  }
  if (const std::size_t limit = reads_.of(k.form); limit != 0 && reply_.size() > limit) {
    const bool v09 = k.form == kepler::Form::kV09;
    fail(Status(Code::kTooLarge,
                "the reply to " + std::to_string(k.rows) + " rows is " +
                    std::to_string(reply_.size()) + " bytes, more than the " +
                    std::to_string(limit) + " bytes a " +
                    (v09 ? "Kepler v0.6..v0.9" : "2022 (Kepler v0.3)") +
                    " client reads at once (estimatord " +
                    (v09 ? "--socket-v09-read-bytes" : "--socket-2022-read-bytes") +
                    "): send fewer rows per request"));
    return reply_;
  }
  last_code_ = Code::kOk;
  last_error_.clear();
  return reply_;
}

}  // namespace estimator::service
