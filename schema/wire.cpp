// SPDX-License-Identifier: Apache-2.0
#include "schema/wire.h"

#include <array>
#include <cmath>
#include <cstring>

#include "schema/schema_version.h"

namespace estimator::wire {
namespace {

constexpr const char* kIdentifier = "EST1";

// A flatbuffers::Allocator over a caller-owned buffer. FlatBuffers has no failure path
// for allocation, so growth past the buffer is served from the heap and flagged: the
// caller turns the flag into kTooLarge instead of crashing.
class FixedAllocator final : public flatbuffers::Allocator {
 public:
  explicit FixedAllocator(std::span<std::uint8_t> area) : area_(area) {}
  std::uint8_t* allocate(std::size_t size) override {
    if (!handed_out_ && size <= area_.size()) {
      handed_out_ = true;
      return area_.data() + (area_.size() - size);  // keep the tail aligned with the end
    }
    overflowed_ = true;
    return new std::uint8_t[size];
  }
  void deallocate(std::uint8_t* p, std::size_t) override {
    if (p >= area_.data() && p < area_.data() + area_.size()) {
      handed_out_ = false;
      return;
    }
    delete[] p;
  }
  bool overflowed() const { return overflowed_; }
  void reset() { overflowed_ = false; }

 private:
  std::span<std::uint8_t> area_;
  bool handed_out_ = false;
  bool overflowed_ = false;
};

// Usable builder size for an area: aligned down so the builder's first (and only)
// allocation is the whole area.
std::size_t usable(std::size_t n) { return n & ~std::size_t{63}; }

std::size_t string_bound(std::string_view s) { return s.size() + 1 + 4 + 8; }

// What a response needs besides its powers and tail: root table, vtable, scalars.
constexpr std::size_t kResponseOverheadBytes = 256;

}  // namespace

std::size_t request_size_bound(const RequestSpec& spec) {
  std::size_t n = 256;  // root table, vtables, selector table, alignment
  n += string_bound(spec.model_name) + string_bound(spec.trainer) +
       string_bound(spec.output_type) + string_bound(spec.source) + string_bound(spec.filter);
  n += 8 + 4 * spec.feature_names.size();
  for (std::string_view f : spec.feature_names) n += string_bound(f);
  n += 8 + 4 * std::size_t{spec.rows} * spec.cols;
  for (const NodePower& p : spec.node_power) {
    n += 48 + string_bound(p.component) + 8 + 4 * p.watts.size() + 8 + 4 * p.idle_watts.size();
  }
  for (const SystemValue& v : spec.system_values) {
    n += 32 + string_bound(v.name) + string_bound(v.value);
  }
  return n;
}

std::size_t request_rows_fitting(const RequestSpec& spec, std::size_t capacity) {
  if (spec.feature_names.size() > kMaxFeatures || spec.node_power.size() > kMaxNodePower ||
      spec.system_values.size() > kMaxSystemValues) {
    return 0;  // build_request refuses these whatever the rows
  }
  RequestSpec shape = spec;
  shape.rows = 0;
  const std::size_t fixed = request_size_bound(shape);
  // The area RequestEncoder::encode hands build_request (whole 8-byte words), as it uses it.
  const std::size_t cap = usable(capacity / 8 * 8);
  if (fixed > cap) return 0;
  // request_size_bound grows by one float per value.
  if (spec.cols == 0) return SIZE_MAX;
  return (cap - fixed) / (sizeof(float) * spec.cols);
}

Result<std::span<std::uint8_t>> build_request(const RequestSpec& spec,
                                              std::span<std::uint8_t> area) {
  const std::size_t bound = request_size_bound(spec);
  const std::size_t cap = usable(area.size());
  if (bound > cap) {
    return Status(Code::kTooLarge, "request of about " + std::to_string(bound) +
                                       " bytes exceeds the slot's " + std::to_string(cap) +
                                       " bytes (raise --slot-bytes or send fewer rows)");
  }
  FixedAllocator alloc(area.subspan(area.size() - cap));
  flatbuffers::FlatBufferBuilder b(cap, &alloc, false, 64);
  b.DedupVtables(false);

  // The matrix first: it ends up at the end of the buffer, after everything else.
  float* m = nullptr;
  const auto matrix = b.CreateUninitializedVector<float>(std::size_t{spec.rows} * spec.cols, &m);
  if (spec.rows * spec.cols != 0) {
    std::memcpy(m, spec.matrix, sizeof(float) * spec.rows * spec.cols);
  }
  flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<flatbuffers::String>>> names;
  {
    // Offsets are zeroed on construction: kMaxFeatures of them would cost more than the
    // strings of a usual request, so those beyond 32 go to the heap (the client's).
    std::array<flatbuffers::Offset<flatbuffers::String>, 32> few;
    std::vector<flatbuffers::Offset<flatbuffers::String>> many;
    const std::size_t nf = std::min(spec.feature_names.size(), kMaxFeatures);
    if (nf > few.size()) many.resize(nf);
    flatbuffers::Offset<flatbuffers::String>* tmp = nf > few.size() ? many.data() : few.data();
    for (std::size_t i = 0; i < nf; ++i) {
      tmp[i] = b.CreateString(spec.feature_names[i].data(), spec.feature_names[i].size());
    }
    names = b.CreateVector(tmp, nf);
  }
  flatbuffers::Offset<fb::NodePower> powers[kMaxNodePower];
  const std::size_t np = std::min(spec.node_power.size(), kMaxNodePower);
  for (std::size_t i = 0; i < np; ++i) {
    const NodePower& p = spec.node_power[i];
    const auto comp = b.CreateString(p.component.data(), p.component.size());
    const auto w = b.CreateVector(p.watts.data(), p.watts.size());
    const auto idle = b.CreateVector(p.idle_watts.data(), p.idle_watts.size());
    powers[i] = fb::CreateNodePower(b, comp, w, idle);
  }
  flatbuffers::Offset<fb::SystemValue> sys[kMaxSystemValues];
  const std::size_t ns = std::min(spec.system_values.size(), kMaxSystemValues);
  for (std::size_t i = 0; i < ns; ++i) {
    const SystemValue& v = spec.system_values[i];
    sys[i] = fb::CreateSystemValue(b, b.CreateString(v.name.data(), v.name.size()),
                                   b.CreateString(v.value.data(), v.value.size()));
  }
  // Empty selector fields are left out: absent reads as empty, and costs nothing.
  auto optional_string = [&b](std::string_view v) {
    return v.empty() ? flatbuffers::Offset<flatbuffers::String>() : b.CreateString(v.data(), v.size());
  };
  const auto selector =
      fb::CreateModelSelector(b, optional_string(spec.model_name), optional_string(spec.trainer),
                              optional_string(spec.output_type), optional_string(spec.source),
                              optional_string(spec.filter));
  const auto root = fb::CreateRequest(b, schema::kSchemaVersion, spec.request_id, spec.kind,
                                      selector, names, spec.rows, spec.cols, matrix,
                                      np ? b.CreateVector(powers, np) : 0,
                                      ns ? b.CreateVector(sys, ns) : 0);
  b.Finish(root, kIdentifier);
  if (alloc.overflowed()) {
    return Status(Code::kTooLarge, "request exceeds the slot's " + std::to_string(cap) + " bytes");
  }
  if (spec.feature_names.size() > kMaxFeatures || spec.node_power.size() > kMaxNodePower ||
      spec.system_values.size() > kMaxSystemValues) {
    return Status(Code::kTooLarge, "too many features, node powers or system values");
  }
  // The builder's buffer ends at the end of the area; it is not freed with the builder.
  return std::span<std::uint8_t>(b.GetBufferPointer(), b.GetSize());
}

Result<std::span<const std::uint8_t>> RequestEncoder::encode(const RequestSpec& spec,
                                                             std::size_t capacity) {
  if (!same_shape(spec) || bytes_.size() > capacity) {
    if (area_.size() != capacity / 8) area_.assign(capacity / 8, 0);
    const std::span<std::uint8_t> area(reinterpret_cast<std::uint8_t*>(area_.data()),
                                       area_.size() * 8);
    auto built = build_request(spec, area);
    if (!built.ok()) {
      valid_ = false;
      return built.status();
    }
    bytes_ = built.value();
    remember(spec);
    return std::span<const std::uint8_t>(bytes_);
  }
  const std::size_t matrix_bytes = sizeof(float) * spec.rows * spec.cols;
  if (matrix_bytes != 0) std::memcpy(bytes_.data() + matrix_offset_, spec.matrix, matrix_bytes);
  flatbuffers::WriteScalar(bytes_.data() + id_offset_, spec.request_id);
  return std::span<const std::uint8_t>(bytes_);
}

bool RequestEncoder::same_shape(const RequestSpec& spec) const {
  // An id of 0 would be left out of a fresh build: build it (and forget the last one).
  if (!valid_ || spec.request_id == 0 || spec.kind != kind_ || spec.rows != rows_ ||
      spec.cols != cols_ || !spec.node_power.empty() || !spec.system_values.empty() ||
      spec.feature_names.size() != features_.size() || spec.model_name != selector_[0] ||
      spec.trainer != selector_[1] || spec.output_type != selector_[2] ||
      spec.source != selector_[3] || spec.filter != selector_[4]) {
    return false;
  }
  for (std::size_t i = 0; i < features_.size(); ++i) {
    if (spec.feature_names[i] != features_[i]) return false;
  }
  return true;
}

void RequestEncoder::remember(const RequestSpec& spec) {
  valid_ = false;
  if (!spec.node_power.empty() || !spec.system_values.empty()) return;
  const fb::Request* r = fb::GetRequest(bytes_.data());
  // The generated table derives privately from flatbuffers::Table, which finds fields.
  // A request id of 0 is a default FlatBuffers leaves out: no field to write over.
  const std::uint8_t* id = reinterpret_cast<const flatbuffers::Table*>(r)->GetAddressOf(
      fb::Request::VT_REQUEST_ID);
  if (id == nullptr) return;
  id_offset_ = static_cast<std::size_t>(id - bytes_.data());
  if (id_offset_ + sizeof(std::uint64_t) > bytes_.size()) return;
  matrix_offset_ = bytes_.size();
  if (r->matrix() != nullptr) {
    matrix_offset_ = static_cast<std::size_t>(
        reinterpret_cast<const std::uint8_t*>(r->matrix()->data()) - bytes_.data());
  }
  kind_ = spec.kind;
  rows_ = spec.rows;
  cols_ = spec.cols;
  const std::string_view selector[5] = {spec.model_name, spec.trainer, spec.output_type,
                                        spec.source, spec.filter};
  for (std::size_t i = 0; i < 5; ++i) selector_[i].assign(selector[i]);
  features_.assign(spec.feature_names.begin(), spec.feature_names.end());
  valid_ = true;
}

RequestReader::RequestReader(std::size_t max_bytes) : max_bytes_(max_bytes) {
  features_.reserve(kMaxFeatures);
  node_power_.reserve(kMaxNodePower);
  system_values_.reserve(kMaxSystemValues);
}

Status RequestReader::read(std::span<const std::uint8_t> bytes, ParsedRequest& out) {
  out = ParsedRequest{};
  const std::uint8_t* base = bytes.data();
  const std::size_t len = bytes.size();
  if (len < 8 || len > max_bytes_ || reinterpret_cast<std::uintptr_t>(base) % 8 != 0) {
    return Status(Code::kInvalidArgument, "request length " + std::to_string(len) +
                                              " outside 8.." + std::to_string(max_bytes_) +
                                              " or misaligned");
  }
  flatbuffers::Verifier v(base, len);
  if (!fb::VerifyRequestBuffer(v)) {
    return Status(Code::kInvalidArgument, "request is not a valid estimator.fb.Request");
  }
  const fb::Request* r = fb::GetRequest(base);
  out.request_id = r->request_id();
  out.schema_version = r->schema_version();
  out.kind = r->kind();
  if (out.schema_version != schema::kSchemaVersion) {
    return Status(Code::kIncompatible, "request schema version " +
                                           std::to_string(out.schema_version) +
                                           ", daemon speaks " +
                                           std::to_string(schema::kSchemaVersion));
  }
  if (const fb::ModelSelector* s = r->selector(); s != nullptr) {
    out.model_name = view_of(s->name());
    out.trainer = view_of(s->trainer());
    out.output_type = view_of(s->output_type());
    out.source = view_of(s->source());
    out.filter = view_of(s->filter());
  }
  out.rows = r->rows();
  out.cols = r->cols();
  std::size_t values = 0;
  if (const auto* m = r->matrix(); m != nullptr) {
    out.matrix = m->data();
    values = m->size();
  }
  if (std::uint64_t{out.rows} * out.cols != values) {
    return Status(Code::kInvalidArgument,
                  "rows x cols = " + std::to_string(out.rows) + " x " +
                      std::to_string(out.cols) + " but the matrix holds " +
                      std::to_string(values) + " values");
  }
  features_.clear();
  if (const auto* names = r->feature_names(); names != nullptr) {
    if (names->size() > kMaxFeatures) {
      return Status(Code::kTooLarge, "more than " + std::to_string(kMaxFeatures) + " features");
    }
    for (const auto* n : *names) features_.push_back(view_of(n));
  }
  out.feature_names = features_;
  if (out.kind == fb::RequestKind::Estimate && features_.size() != out.cols) {
    return Status(Code::kInvalidArgument, std::to_string(features_.size()) +
                                              " feature names for " +
                                              std::to_string(out.cols) + " columns");
  }
  node_power_.clear();
  if (const auto* np = r->node_power(); np != nullptr) {
    if (np->size() > kMaxNodePower) {
      return Status(Code::kTooLarge, "more than " + std::to_string(kMaxNodePower) +
                                         " node power entries");
    }
    for (const fb::NodePower* p : *np) {
      NodePower e;
      e.component = view_of(p->component());
      if (const auto* w = p->watts(); w != nullptr) e.watts = {w->data(), w->size()};
      if (const auto* w = p->idle_watts(); w != nullptr) e.idle_watts = {w->data(), w->size()};
      node_power_.push_back(e);
    }
  }
  out.node_power = node_power_;
  system_values_.clear();
  if (const auto* sv = r->system_values(); sv != nullptr) {
    if (sv->size() > kMaxSystemValues) {
      return Status(Code::kTooLarge, "more than " + std::to_string(kMaxSystemValues) +
                                         " system values");
    }
    for (const fb::SystemValue* s : *sv) {
      system_values_.push_back({view_of(s->name()), view_of(s->value())});
    }
  }
  out.system_values = system_values_;
  return Status::Ok();
}

ResponseTail make_response_tail(const ModelDescription& model,
                                std::span<const std::string> components) {
  flatbuffers::FlatBufferBuilder b(1024);
  b.DedupVtables(false);
  std::vector<flatbuffers::Offset<flatbuffers::String>> comps;
  for (const std::string& c : components) comps.push_back(b.CreateString(c));
  const auto comp_vec = b.CreateVector(comps);
  const auto info = fb::CreateModelInfo(
      b, b.CreateString(model.name.data(), model.name.size()),
      b.CreateString(model.trainer.data(), model.trainer.size()),
      b.CreateString(model.model_class.data(), model.model_class.size()),
      b.CreateString(model.output_type.data(), model.output_type.size()),
      b.CreateString(model.source.data(), model.source.size()), model.mae, model.mape,
      model.core_ratio);
  // Pad to 8 so that, pushed first into an empty builder, every object keeps its
  // alignment and its offset from the end of the buffer.
  b.Align(8);
  ResponseTail tail;
  tail.bytes.assign(b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize());
  tail.components = comp_vec.o;
  tail.model = info.o;
  return tail;
}

struct ResponseBuilder::Impl {
  explicit Impl(std::size_t capacity)
      : buffer(usable(capacity)), alloc(buffer), builder(buffer.size(), &alloc, false, 64) {}
  std::vector<std::uint8_t> buffer;
  FixedAllocator alloc;
  flatbuffers::FlatBufferBuilder builder;
  flatbuffers::Offset<flatbuffers::Vector<float>> powers;
  const ResponseTail* tail = nullptr;
  std::uint32_t rows = 0;
  std::uint32_t cols = 0;

  void reset() {
    builder.Clear();
    alloc.reset();
    powers = 0;
    tail = nullptr;
    rows = cols = 0;
  }
};

std::size_t response_rows_fitting(std::size_t capacity, std::size_t cols, std::size_t tail_bytes) {
  if (tail_bytes + kResponseOverheadBytes > capacity) return 0;
  if (cols == 0) return SIZE_MAX;
  return (capacity - tail_bytes - kResponseOverheadBytes) / (sizeof(float) * cols);
}

ResponseBuilder::ResponseBuilder(std::size_t capacity) : impl_(std::make_unique<Impl>(capacity)) {
  impl_->builder.DedupVtables(false);
}
ResponseBuilder::~ResponseBuilder() = default;

Result<float*> ResponseBuilder::begin(std::uint32_t rows, std::uint32_t cols,
                                      const ResponseTail& tail) {
  impl_->reset();
  if (tail.bytes.size() + kResponseOverheadBytes > impl_->buffer.size() ||
      rows > response_rows_fitting(impl_->buffer.size(), cols, tail.bytes.size())) {
    return Status(Code::kTooLarge, "a reply of " + std::to_string(rows) + " x " +
                                       std::to_string(cols) + " powers exceeds the slot's " +
                                       std::to_string(impl_->buffer.size()) + " bytes");
  }
  auto& b = impl_->builder;
  b.PushBytes(tail.bytes.data(), tail.bytes.size());
  b.TrackMinAlign(8);
  float* p = nullptr;
  impl_->powers = b.CreateUninitializedVector<float>(std::size_t{rows} * cols, &p);
  impl_->tail = &tail;
  impl_->rows = rows;
  impl_->cols = cols;
  return p;
}

std::span<const std::uint8_t> ResponseBuilder::finish(std::uint64_t request_id) {
  auto& b = impl_->builder;
  const ResponseTail& tail = *impl_->tail;
  const auto root = fb::CreateResponse(
      b, schema::kSchemaVersion, request_id, fb::StatusCode::Ok, 0,
      flatbuffers::Offset<fb::ModelInfo>(tail.model),
      flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<flatbuffers::String>>>(tail.components),
      impl_->rows, impl_->cols, impl_->powers);
  b.Finish(root);
  if (impl_->alloc.overflowed()) {
    return error(request_id, Status(Code::kTooLarge, "reply exceeds the slot"));
  }
  return {b.GetBufferPointer(), b.GetSize()};
}

std::span<const std::uint8_t> ResponseBuilder::error(std::uint64_t request_id,
                                                     const Status& status) {
  impl_->reset();
  auto& b = impl_->builder;
  // Bounded so an error never outgrows the slot, whatever the message.
  const std::string_view msg(status.message().data(), std::min<std::size_t>(status.message().size(), 1024));
  const auto root = fb::CreateResponse(b, schema::kSchemaVersion, request_id,
                                       static_cast<fb::StatusCode>(status.code()),
                                       b.CreateString(msg.data(), msg.size()));
  b.Finish(root);
  return {b.GetBufferPointer(), b.GetSize()};
}

Result<ParsedResponse> read_response(std::span<const std::uint8_t> bytes) {
  flatbuffers::Verifier v(bytes.data(), bytes.size());
  if (!v.VerifyBuffer<fb::Response>(nullptr)) {
    return Status(Code::kInternal, "daemon sent an invalid response");
  }
  const auto* r = flatbuffers::GetRoot<fb::Response>(bytes.data());
  ParsedResponse out;
  out.request_id = r->request_id();
  out.status = static_cast<Code>(r->status());
  out.message = view_of(r->message());
  out.model = r->model();
  out.components = r->components();
  out.rows = r->rows();
  out.cols = r->cols();
  if (const auto* p = r->powers(); p != nullptr) {
    if (std::uint64_t{out.rows} * out.cols != p->size()) {
      return Status(Code::kInternal, "daemon sent a response whose shape disagrees");
    }
    out.powers = p->data();
  } else if (out.rows * out.cols != 0) {
    return Status(Code::kInternal, "daemon sent a response without powers");
  }
  if (out.status == Code::kOk && out.components != nullptr && out.components->size() != out.cols) {
    return Status(Code::kInternal, "daemon sent a response whose components disagree");
  }
  return out;
}

}  // namespace estimator::wire
