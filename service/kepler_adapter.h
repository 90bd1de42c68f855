// SPDX-License-Identifier: Apache-2.0
// Answers one Kepler JSON request through the daemon's own request path, so that the
// socket endpoint and the shared-memory ring give identical answers: the parsed request
// becomes a wire::RequestSpec, is encoded into a private buffer, handled by a
// RequestHandler exactly as a slot would be, and the response is written back as the JSON
// reply of the request's generation (kepler_json.h).
//
// Request mapping: metrics/values -> features and matrix; output_type, source,
// trainer_name, model_name, filter -> the selector; system_features/system_values ->
// system values; the 2022 dram_power, gpu_power and other_power -> node power of the
// components "core", "dram", "gpu" and "other" (what the ratio model splits), as the
// clients' GetPower does: the 2022 reply's per-row total (estimator::total_power) then
// splits exactly the measured core + dram + gpu + other among the rows.
//
// Not thread-safe: one adapter per serving thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "service/kepler_json.h"
#include "service/request_handler.h"

namespace estimator::service {

class KeplerAdapter {
 public:
  // `metrics` (optional) is handed to the RequestHandler: socket requests are counted and
  // timed as the ring's are. A reply longer than `reads` allows for the request's form is
  // replaced by a kTooLarge error naming the limit: the client would get it cut.
  explicit KeplerAdapter(const RegistryHolder& registry, kepler::JsonLimits limits = {},
                         Metrics* metrics = nullptr, kepler::ClientReadLimits reads = {});
  ~KeplerAdapter();
  KeplerAdapter(const KeplerAdapter&) = delete;
  KeplerAdapter& operator=(const KeplerAdapter&) = delete;

  // The JSON reply to `request`; valid until the next call. Never fails: an error is the
  // error reply (kepler::write_error) with the message in "msg".
  std::string_view answer(std::string_view request);

  // Outcome of the last answer(), for logs and counters.
  Code last_code() const { return last_code_; }
  std::string_view last_error() const { return last_error_; }

 private:
  void fail(const Status& status);
  // (Re)creates the handler when a request needs larger buffers than it has.
  void ensure_capacity(std::size_t request_bytes, std::size_t response_bytes);

  const RegistryHolder& registry_;
  Metrics* metrics_;
  kepler::ClientReadLimits reads_;
  kepler::KeplerJsonReader reader_;
  kepler::KeplerRequest request_;
  std::unique_ptr<RequestHandler> handler_;
  std::size_t request_capacity_ = 0;
  std::size_t response_capacity_ = 0;
  std::vector<std::uint64_t> wire_;  // the encoded request; 8-byte aligned as a slot area
  std::vector<NodePower> node_power_;
  std::vector<SystemValue> system_values_;
  std::vector<std::string_view> components_;
  std::string reply_;
  std::string last_error_;
  Code last_code_ = Code::kOk;
};

}  // namespace estimator::service
