// SPDX-License-Identifier: Apache-2.0
#include "clients/cpp/estimator_client.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <functional>
#include <optional>
#include <memory>
#include <thread>

#include "schema/wire.h"
#include "shm/client_ring.h"
#include "shm/reply_seal.h"
#include "shm/segment.h"

namespace estimator::client {

using shm::ReplyBytes;

// One attachment per daemon epoch. Replies hold their own copy of the bytes, never the
// attachment.
struct Attachment {
  std::unique_ptr<shm::ClientSegment> segment;
  std::unique_ptr<shm::ClientRing> ring;
};

namespace {

std::atomic<std::uint64_t> g_next_id{
    (static_cast<std::uint64_t>(getpid()) << 40) ^
    static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count())};

std::uint32_t thread_hint() {
  static thread_local const std::uint32_t hint =
      static_cast<std::uint32_t>(std::hash<std::thread::id>{}(std::this_thread::get_id()));
  return hint;
}

// Reads a number from the environment; false (and `out` untouched) when unset.
Result<bool> env_number(const char* var, int base, std::int64_t max, std::int64_t& out) {
  const char* text = std::getenv(var);
  if (text == nullptr || *text == '\0') return false;
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text, &end, base);
  if (errno != 0 || *end != '\0' || v < 0 || v > max) {
    return Status(Code::kInvalidArgument, std::string(var) + "='" + text + "' is not valid");
  }
  out = v;
  return true;
}

// Now plus `timeout`, cut to the longest deadline the daemon's lease cap allows for
// (shm::kMaxDeadlineNs).
std::uint64_t deadline_after(std::chrono::nanoseconds timeout) {
  return shm::monotonic_ns() +
         std::min<std::uint64_t>(static_cast<std::uint64_t>(std::max<std::int64_t>(0, timeout.count())),
                                 shm::kMaxDeadlineNs);
}

wire::RequestSpec spec_of(const Request& request) {
  const Selector& s = request.selector;
  return wire::estimate_spec({s.name, s.trainer, s.output_type, s.source, s.filter},
                             request.features, request.matrix, request.rows, request.cols,
                             request.node_power, request.system_values);
}

// Before the first chunk is answered, the model's component count and the size of its
// description are unknown: the first chunk is sized for these, generous for any Kepler
// model (a model with more is met by halving the chunk, see send_chunks).
constexpr std::size_t kGuessComponents = 16;
constexpr std::size_t kGuessTailBytes = 4096;

std::string row_range(std::uint32_t first, std::uint32_t count, std::uint32_t total) {
  return "rows " + std::to_string(first) + "-" + std::to_string(first + count - 1) + " of " +
         std::to_string(total);
}

// Whether two answers come from the same model: same description and components.
bool same_model(const Reply& a, const Reply& b) {
  const ModelUsed& x = a.model();
  const ModelUsed& y = b.model();
  if (x.name != y.name || x.trainer != y.trainer || x.model_class != y.model_class ||
      x.output_type != y.output_type || x.source != y.source || a.cols() != b.cols()) {
    return false;
  }
  for (std::uint32_t c = 0; c < a.cols(); ++c) {
    if (a.component(c) != b.component(c)) return false;
  }
  return true;
}

}  // namespace

Client::Client(ClientOptions options) : options_(std::move(options)) {
  if (options_.shm_name.empty()) options_.shm_name = shm::default_segment_name();
  std::int64_t v = 0;
  if (options_.daemon_uid < 0) {
    auto set = env_number("ESTIMATOR_DAEMON_UID", 10, UINT32_MAX - 1, v);
    if (!set.ok()) policy_error_ = set.status();
    options_.daemon_uid = set.ok() && set.value() ? v : geteuid();
  }
  if (options_.shm_mode < 0) {
    auto set = env_number("ESTIMATOR_SHM_MODE", 8, 07777, v);
    if (!set.ok()) policy_error_ = set.status();
    options_.shm_mode = set.ok() && set.value() ? static_cast<std::int32_t>(v) : 0660;
  }
}

Client::~Client() = default;

namespace {

bool usable(const Attachment& a) {
  // A clean stop or a restart marks the old segment, a truncation zeroes it; re-attach
  // without failing a call.
  return a.segment->view().header().state.load(std::memory_order_acquire) ==
             static_cast<std::uint32_t>(shm::ServerState::kServing) &&
         !a.segment->tripped();
}

}  // namespace

// A call's use of the client's attachment, from before it loads it until it is done; the
// last call to finish frees attachments retired meanwhile.
class Client::Use {
 public:
  explicit Use(Client& client) : client_(client) {
    client_.active_.fetch_add(1, std::memory_order_seq_cst);
  }
  ~Use() {
    if (client_.active_.fetch_sub(1, std::memory_order_seq_cst) == 1 &&
        client_.have_retired_.load(std::memory_order_relaxed)) {
      std::unique_lock lock(client_.mu_, std::try_to_lock);
      if (lock.owns_lock()) client_.reclaim_retired();
    }
  }
  Use(const Use&) = delete;
  Use& operator=(const Use&) = delete;

 private:
  Client& client_;
};

Result<Attachment*> Client::attachment() {
  if (!policy_error_.ok()) return policy_error_;
  // The common case: one load, no lock (seq_cst: see reclaim_retired).
  if (Attachment* a = current_.load(std::memory_order_seq_cst); a != nullptr && usable(*a)) {
    return a;
  }
  std::lock_guard lock(mu_);
  if (Attachment* a = current_.load(std::memory_order_seq_cst); a != nullptr) {
    if (usable(*a)) return a;  // another thread re-attached meanwhile
    current_.store(nullptr, std::memory_order_seq_cst);
    have_retired_.store(true, std::memory_order_relaxed);
  }
  auto seg = shm::ClientSegment::attach(
      options_.shm_name, {static_cast<uid_t>(options_.daemon_uid),
                          static_cast<mode_t>(options_.shm_mode)});
  if (!seg.ok()) return seg.status();
  auto a = std::make_unique<Attachment>();
  a->segment = std::move(seg).value();
  a->ring = std::make_unique<shm::ClientRing>(*a->segment);
  Attachment* raw = a.get();
  attachments_.push_back(std::move(a));
  current_.store(raw, std::memory_order_seq_cst);
  return raw;
}

void Client::forget(Attachment* stale) {
  std::lock_guard lock(mu_);
  Attachment* expected = stale;
  if (current_.compare_exchange_strong(expected, nullptr, std::memory_order_seq_cst)) {
    have_retired_.store(true, std::memory_order_relaxed);
  }
}

void Client::reclaim_retired() {
  // Every call announces itself (active_) before it loads current_, and a retired
  // attachment was swapped out of current_ before this runs: with no call in flight now,
  // none can still hold it, and later calls load only the current one.
  if (active_.load(std::memory_order_seq_cst) != 0) return;
  Attachment* keep = current_.load(std::memory_order_seq_cst);
  std::erase_if(attachments_, [keep](const std::unique_ptr<Attachment>& a) { return a.get() != keep; });
  have_retired_.store(false, std::memory_order_relaxed);
}

Status Client::call(const Request& request, bool ping, std::uint64_t deadline,
                    std::chrono::nanoseconds timeout, Reply& out) {
  out.size_ = 0;
  out.joined_.reset();
  out.request_id_ = 0;
  out.rows_ = out.cols_ = 0;
  out.powers_ = nullptr;
  out.components_ = nullptr;
  out.model_ = {};
  if (!ping && (request.features.size() != request.cols ||
                (request.matrix == nullptr && request.rows * request.cols != 0))) {
    return Status(Code::kInvalidArgument, std::to_string(request.features.size()) +
                                              " feature names for " +
                                              std::to_string(request.cols) + " columns");
  }
  const Use use(*this);
  auto att = attachment();
  if (!att.ok()) return att.status();
  Attachment* a = att.value();
  shm::ClientRing& ring = *a->ring;

  wire::RequestSpec spec = spec_of(request);
  spec.request_id = g_next_id.fetch_add(1, std::memory_order_relaxed);
  spec.kind = ping ? fb::RequestKind::Ping : fb::RequestKind::Estimate;
  // Encoded privately (one encoder per thread: calls may run at once; a thread sending
  // the same shape again patches its last request instead of rebuilding it), and only
  // copied into a slot: the digest a reply must echo is of these bytes, whatever a peer
  // writes into the slot.
  static thread_local wire::RequestEncoder encoder;
  auto built = encoder.encode(spec, ring.view().request_capacity());
  if (!built.ok()) return built.status();
  const std::span<const std::uint8_t> bytes = built.value();
  const auto spin = static_cast<std::uint64_t>(std::chrono::nanoseconds(options_.spin).count());
  // The reply's storage, sized once for any reply of this daemon and reused after.
  if (const std::uint32_t cap = ring.view().response_capacity(); out.capacity_ < cap) {
    out.bytes_ = std::make_unique_for_overwrite<std::uint8_t[]>(cap);
    out.capacity_ = cap;
  }

  // A reply that fails its seal was written by another process: never returned, and the
  // request is sent again in a fresh claim while the deadline allows.
  Status rejected;
  std::uint32_t received = 0;
  for (;;) {
    auto claimed = ring.claim(deadline, deadline + shm::kLeaseGraceNs, thread_hint());
    if (!claimed.ok()) {
      if (claimed.status().code() == Code::kUnavailable) forget(a);
      return rejected.ok() ? claimed.status() : rejected;
    }
    const shm::Claim claim = claimed.value();
    const std::uint64_t nonce = shm::next_nonce();
    if (Status s = ring.publish(claim, bytes, nonce); !s.ok()) {
      ring.abandon(claim);
      return s;
    }
    // Digested while the daemon works, not before publishing: it is of `bytes`, which
    // stay ours, and only receive_into() needs it.
    const std::uint64_t request_digest = shm::digest(bytes, nonce);
    const shm::WaitOutcome waited = ring.wait_answer(claim, deadline, spin);
    if (waited == shm::WaitOutcome::kDeadline) {
      ring.abandon(claim);
      if (!rejected.ok()) return rejected;
      return Status(Code::kDeadlineExceeded, "no answer within " +
                                                 std::to_string(timeout.count() / 1000000) + " ms");
    }
    if (waited == shm::WaitOutcome::kServerGone) {
      ring.abandon(claim);
      forget(a);
      return Status(Code::kUnavailable, "estimator unavailable: the daemon stopped or died");
    }
    if (waited == shm::WaitOutcome::kAnswered) {
      auto got = ring.receive_into(claim, nonce, request_digest, {out.bytes_.get(), out.capacity_});
      ring.release(claim);
      if (got.ok()) {
        received = got.value();
        break;
      }
      rejected = got.status();
    } else {  // kLost: the slot was taken from us; nothing will answer there
      ring.abandon(claim);
      rejected = Status(Code::kIntegrity, "slot " + std::to_string(claim.slot) +
                                              " was reclaimed or rewritten while waiting");
    }
    rejected_replies_.fetch_add(1, std::memory_order_relaxed);
    if (shm::monotonic_ns() >= deadline) return rejected;
  }
  auto parsed = wire::read_response({out.bytes_.get(), received});
  if (!parsed.ok()) return parsed.status();
  const wire::ParsedResponse& r = parsed.value();
  if (r.request_id != spec.request_id) {
    return Status(Code::kInternal, "answer to request " + std::to_string(r.request_id) +
                                       " received for request " + std::to_string(spec.request_id));
  }
  if (r.status != Code::kOk) return Status(r.status, std::string(r.message));
  if (!ping && r.rows != request.rows) {
    return Status(Code::kInternal, "answer has " + std::to_string(r.rows) + " rows for " +
                                       std::to_string(request.rows));
  }
  out.size_ = received;
  out.request_id_ = r.request_id;
  out.rows_ = r.rows;
  out.cols_ = r.cols;
  out.powers_ = r.powers;
  out.components_ = r.components;
  if (r.model != nullptr) {
    out.model_ = {wire::view_of(r.model->name()),        wire::view_of(r.model->trainer()),
                  wire::view_of(r.model->model_class()), wire::view_of(r.model->output_type()),
                  wire::view_of(r.model->source()),      r.model->mae(),
                  r.model->mape(),                       r.model->core_ratio()};
  }
  return Status::Ok();
}

Result<Reply> Client::estimate(const Request& request, std::chrono::nanoseconds timeout) {
  const std::uint64_t deadline = deadline_after(timeout);
  // A request that fits one slot goes as it is; one too large for it (found while encoding
  // it, before any slot is claimed, or by the daemon for its reply) is split.
  Reply reply;
  const Status s = call(request, false, deadline, timeout, reply);
  if (s.ok()) return reply;
  if (s.code() != Code::kTooLarge) return s;
  return estimate_in_chunks(request, s, deadline, timeout);
}

Status Client::estimate(const Request& request, Reply& reply, std::chrono::nanoseconds timeout) {
  const std::uint64_t deadline = deadline_after(timeout);
  const Status s = call(request, false, deadline, timeout, reply);
  if (s.ok() || s.code() != Code::kTooLarge) return s;
  auto joined = estimate_in_chunks(request, s, deadline, timeout);
  if (!joined.ok()) return joined.status();
  reply = std::move(joined).value();
  return Status::Ok();
}

Result<Reply> Client::estimate_in_chunks(const Request& request, const Status& too_large,
                                         std::uint64_t deadline, std::chrono::nanoseconds timeout) {
  // The ratio model shares measured node power among the rows of one request: every chunk
  // would get all of it.
  if (!request.node_power.empty()) {
    return Status(Code::kTooLarge, too_large.message() +
                                       " (a request with node power is not split: its power is"
                                       " shared among all its rows)");
  }
  const Use use(*this);
  auto att = attachment();
  if (!att.ok()) return att.status();
  const shm::SegmentView& view = att.value()->ring->view();
  const std::size_t fit = wire::request_rows_fitting(spec_of(request), view.request_capacity());
  if (fit == 0) {
    return Status(Code::kTooLarge,
                  "one row of " + std::to_string(request.cols) +
                      " features alone does not fit a request (slots of " +
                      std::to_string(view.request_capacity()) + " bytes, at most " +
                      std::to_string(wire::kMaxFeatures) +
                      " features): send fewer features, or raise the daemon's --slot-bytes");
  }
  if (request.rows <= 1) return too_large;  // it was the reply of one row: nothing to split
  const auto request_rows = static_cast<std::uint32_t>(std::min<std::size_t>(fit, request.rows));
  // A model reload between two chunks would mix two models' answers: the rows are sent
  // again once, within the same deadline; a second reload fails the call.
  bool model_changed = false;
  Result<Reply> joined = send_chunks(request, request_rows, view.response_capacity(), deadline,
                                     timeout, model_changed);
  if (!model_changed) return joined;
  model_changed = false;
  return send_chunks(request, request_rows, view.response_capacity(), deadline, timeout,
                     model_changed);
}

Result<Reply> Client::send_chunks(const Request& request, std::uint32_t request_rows,
                                  std::uint32_t response_capacity, std::uint64_t deadline,
                                  std::chrono::nanoseconds timeout, bool& model_changed) {
  auto rows_for_reply = [&](std::size_t components, std::size_t tail) {
    const std::size_t n = wire::response_rows_fitting(response_capacity, components, tail);
    return static_cast<std::uint32_t>(std::clamp<std::size_t>(n, 1, request_rows));
  };
  std::uint32_t chunk = rows_for_reply(kGuessComponents, kGuessTailBytes);
  std::optional<Reply> first;
  Request part = request;
  for (std::uint32_t row = 0; row < request.rows;) {
    const std::uint32_t n = std::min(chunk, request.rows - row);
    part.matrix = request.matrix + std::size_t{row} * request.cols;
    part.rows = n;
    Reply got;
    if (const Status s = call(part, false, deadline, timeout, got); !s.ok()) {
      // A reply larger than assumed (more components, a longer description) or slots
      // shrunk by a restarted daemon: halve the chunk and send it again.
      if (s.code() == Code::kTooLarge && n > 1) {
        chunk = n / 2;
        continue;
      }
      return Status(s.code(), row_range(row, n, request.rows) + ": " + s.message());
    }
    const std::uint32_t components = got.cols();
    if (!first) {
      first.emplace(std::move(got));
      first->joined_ = std::make_unique_for_overwrite<float[]>(std::size_t{request.rows} * components);
      std::ranges::copy(first->powers(), first->joined_.get());
      // Every answer of this model carries what the first one carries besides its powers:
      // the rest are sized for it.
      if (components > 0) {
        chunk = rows_for_reply(components, first->size_ - sizeof(float) * n * components);
      }
      row += n;
      continue;
    }
    if (!same_model(*first, got)) {
      model_changed = true;
      return Status(Code::kUnavailable,
                    row_range(row, n, request.rows) + " were answered by model " +
                        std::string(got.model().name) + " (" + std::string(got.model().source) +
                        "), the rows before by " + std::string(first->model().name) + " (" +
                        std::string(first->model().source) +
                        "): the daemon reloaded its models between the requests");
    }
    std::ranges::copy(got.powers(), first->joined_.get() + std::size_t{row} * components);
    row += n;
  }
  first->rows_ = request.rows;
  first->powers_ = first->joined_.get();
  return std::move(*first);
}

Status Client::ping(std::chrono::nanoseconds timeout) {
  Reply reply;
  return call(Request{}, true, deadline_after(timeout), timeout, reply);
}

std::string_view Reply::component(std::uint32_t c) const {
  const auto* v =
      static_cast<const flatbuffers::Vector<flatbuffers::Offset<flatbuffers::String>>*>(components_);
  if (v == nullptr || c >= v->size()) return {};
  return wire::view_of(v->Get(c));
}

}  // namespace estimator::client
