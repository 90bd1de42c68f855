// SPDX-License-Identifier: Apache-2.0
// Encoding and decoding of requests and responses (schema/estimator.fbs), shared by the
// client, the daemon and the socket baseline, so all of them speak exactly the same bytes.
//
// Who trusts whom: the daemon trusts no byte of a request (RequestReader); the client
// verifies the daemon's response before reading it (read_response). Both read only
// private copies; what binds a reply to its request in the ring is shm/reply_seal.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "common/views.h"
#include "schema/estimator_generated.h"

namespace estimator::wire {

// Limits on the per-request lists; the matrix itself is limited only by the slot size.
inline constexpr std::size_t kMaxFeatures = 1024;
inline constexpr std::size_t kMaxNodePower = 16;
inline constexpr std::size_t kMaxSystemValues = 32;

// ---- requests ------------------------------------------------------------------------

// What picks the model: the selector fields of a request, as each client names them.
struct Selection {
  std::string_view model_name;
  std::string_view trainer;
  std::string_view output_type;
  std::string_view source;
  std::string_view filter;  // Kepler's "mae:0.5;mape:10"
};

struct RequestSpec : Selection {
  std::uint64_t request_id = 0;
  fb::RequestKind kind = fb::RequestKind::Estimate;
  std::span<const std::string_view> feature_names;  // one per column
  const float* matrix = nullptr;                    // rows x cols, row-major
  std::uint32_t rows = 0;
  std::uint32_t cols = 0;
  std::span<const NodePower> node_power;
  std::span<const SystemValue> system_values;
};

// The estimate request of `selection` over a rows x cols matrix (request_id left 0): the
// one mapping from a client's own request type (the C++ client's Request, the Kepler
// adapter's KeplerRequest) to the wire, so the clients cannot drift apart.
inline RequestSpec estimate_spec(const Selection& selection,
                                 std::span<const std::string_view> feature_names,
                                 const float* matrix, std::uint32_t rows, std::uint32_t cols,
                                 std::span<const NodePower> node_power,
                                 std::span<const SystemValue> system_values) {
  RequestSpec spec;
  static_cast<Selection&>(spec) = selection;
  spec.feature_names = feature_names;
  spec.matrix = matrix;
  spec.rows = rows;
  spec.cols = cols;
  spec.node_power = node_power;
  spec.system_values = system_values;
  return spec;
}

// An upper bound of the encoded size of `spec`, to refuse a request that cannot fit a
// slot before building it.
std::size_t request_size_bound(const RequestSpec& spec);

// The most rows of `spec`'s shape (its own row count ignored) whose request
// RequestEncoder::encode can build within `capacity` bytes; 0 when not even one row fits.
// A client splits a matrix larger than a slot into requests of this many rows.
std::size_t request_rows_fitting(const RequestSpec& spec, std::size_t capacity);

// Builds the request into `area` (FlatBuffers builds back to front: the finished buffer
// ends at the end of `area`). Returns the encoded bytes within `area`, or kTooLarge.
Result<std::span<std::uint8_t>> build_request(const RequestSpec& spec, std::span<std::uint8_t> area);

// build_request into memory of its own, with a memory of the last request it built: a
// request of the same shape (kind, selector, feature names, rows and cols; no node power
// or system values) is that request's bytes with the new request id and matrix values
// written over the old. A client sends the same shape again and again, and patching
// costs a fraction of building (bench/stages.cpp: RingClientEncode). The bytes are the
// client's private encoding: what it digests and copies into a slot (the daemon
// verifies every request whichever way it was made).
class RequestEncoder {
 public:
  // The encoded request, valid until the next call; kTooLarge beyond `capacity` bytes.
  Result<std::span<const std::uint8_t>> encode(const RequestSpec& spec, std::size_t capacity);

 private:
  bool same_shape(const RequestSpec& spec) const;
  void remember(const RequestSpec& spec);

  bool valid_ = false;
  std::vector<std::uint64_t> area_;   // 8-byte aligned; the last request ends at its end
  std::span<std::uint8_t> bytes_;     // the last request as built, within area_
  std::size_t id_offset_ = 0;         // of its request id within bytes_
  std::size_t matrix_offset_ = 0;     // of its matrix values within bytes_
  fb::RequestKind kind_ = fb::RequestKind::Estimate;
  std::uint32_t rows_ = 0;
  std::uint32_t cols_ = 0;
  std::string selector_[5];  // model name, trainer, output type, source, filter
  std::vector<std::string> features_;
};

// A decoded request. Strings, lists and the matrix point into the bytes read.
struct ParsedRequest {
  std::uint16_t schema_version = 0;
  std::uint64_t request_id = 0;
  fb::RequestKind kind = fb::RequestKind::Estimate;
  std::string_view model_name;
  std::string_view trainer;
  std::string_view output_type;
  std::string_view source;
  std::string_view filter;
  std::span<const std::string_view> feature_names;
  const float* matrix = nullptr;
  std::uint32_t rows = 0;
  std::uint32_t cols = 0;
  std::span<const NodePower> node_power;
  std::span<const SystemValue> system_values;
};

// Decodes requests, verified, without allocating per request. The bytes are hostile but
// must be private to the caller while it reads them (the daemon's copy of a slot, a
// socket's buffer): verifying bytes a peer can still rewrite would prove nothing.
class RequestReader {
 public:
  explicit RequestReader(std::size_t max_bytes);  // longer requests are refused
  // `bytes` must be 8-byte aligned. The result points into `bytes` and stays valid until
  // the next call. A request id is filled in whenever it could be read, even on failure.
  Status read(std::span<const std::uint8_t> bytes, ParsedRequest& out);

 private:
  std::size_t max_bytes_;
  std::vector<std::string_view> features_;
  std::vector<NodePower> node_power_;
  std::vector<SystemValue> system_values_;
};

// ---- responses -----------------------------------------------------------------------

// The model that answered, as reported to the client.
struct ModelDescription {
  std::string_view name;
  std::string_view trainer;
  std::string_view model_class;
  std::string_view output_type;
  std::string_view source;
  double mae = 0;
  double mape = 0;
  double core_ratio = 1.0;
};

// The part of a successful response that is the same for every request served by one
// model: its description and component names, encoded once (when a plan is cached) and
// copied as bytes into each response instead of being re-encoded.
struct ResponseTail {
  std::vector<std::uint8_t> bytes;
  flatbuffers::uoffset_t components = 0;  // offsets from the end of the buffer
  flatbuffers::uoffset_t model = 0;
};
ResponseTail make_response_tail(const ModelDescription& model,
                                std::span<const std::string> components);

// The most rows of `cols` powers a response of `capacity` bytes carries besides
// `tail_bytes` of the rest (model description, component names): what
// ResponseBuilder::begin accepts. 0 when not even one row fits.
std::size_t response_rows_fitting(std::size_t capacity, std::size_t cols, std::size_t tail_bytes);

// Builds responses in a private buffer allocated once (a builder must read back what it
// wrote, which a peer could rewrite in shared memory), to be copied out by the caller.
class ResponseBuilder {
 public:
  explicit ResponseBuilder(std::size_t capacity);
  ~ResponseBuilder();
  ResponseBuilder(const ResponseBuilder&) = delete;
  ResponseBuilder& operator=(const ResponseBuilder&) = delete;

  // Starts a response with `tail` and reserves rows x cols floats for the powers; the
  // caller fills them, then calls finish(). kTooLarge when they cannot fit.
  Result<float*> begin(std::uint32_t rows, std::uint32_t cols, const ResponseTail& tail);
  std::span<const std::uint8_t> finish(std::uint64_t request_id);
  // A response carrying only a status (any begin() is discarded).
  std::span<const std::uint8_t> error(std::uint64_t request_id, const Status& status);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A verified response, read in place.
struct ParsedResponse {
  std::uint64_t request_id = 0;
  Code status = Code::kOk;
  std::string_view message;
  const fb::ModelInfo* model = nullptr;  // may be null on errors
  const flatbuffers::Vector<flatbuffers::Offset<flatbuffers::String>>* components = nullptr;
  const float* powers = nullptr;
  std::uint32_t rows = 0;
  std::uint32_t cols = 0;
};
Result<ParsedResponse> read_response(std::span<const std::uint8_t> bytes);

inline std::string_view view_of(const flatbuffers::String* s) {
  return s == nullptr ? std::string_view{} : std::string_view(s->data(), s->size());
}

}  // namespace estimator::wire
