// SPDX-License-Identifier: Apache-2.0
// The C++ client of the estimator daemon.
//
//   estimator::client::Client client;                        // default segment name
//   std::string_view features[] = {"bpf_cpu_time_ms", "bpf_page_cache_hit"};
//   float rows[] = {1200.f, 3.f,   80.f, 0.f};               // 2 workloads x 2 features
//   auto reply = client.estimate({.features = features, .matrix = rows, .rows = 2, .cols = 2});
//   if (!reply) { log(reply.status().to_string()); return; }
//   for (uint32_t r = 0; r < reply->rows(); ++r) use(reply->power(r, 0));
//
// The request is encoded privately and copied into a slot of the daemon's shared-memory
// ring; the reply is copied out of the slot and returned only if its seal shows it
// answers this very request (shm/reply_seal.h). A Client may be used from many threads
// at once, without a lock between them: a call reads the current attachment with one
// atomic load (a mutex is taken only to attach or re-attach). With estimate(request,
// reply, timeout), which reuses the Reply's storage, a thread's calls allocate nothing
// once the first has sized its encoder and the Reply (docs/clients.md). It attaches lazily,
// and re-attaches by itself when the daemon restarts (a new epoch): calls in between fail
// with kUnavailable ("estimator unavailable") within their deadline, never hang.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "common/views.h"

namespace estimator::client {

struct ClientOptions {
  std::string shm_name = {};  // empty: the daemon's default, "estimator-<user>"
  // Who must own the segment: a segment of another user is a squatter's, whose answers
  // would be its numbers. -1: $ESTIMATOR_DAEMON_UID, else this process's uid.
  std::int64_t daemon_uid = -1;
  // The widest mode the segment may have (the daemon's --shm-mode). -1: $ESTIMATOR_SHM_MODE
  // (octal), else 0660: the owner and its group, never every user.
  std::int32_t shm_mode = -1;
  std::chrono::microseconds spin{50};            // spin this long before sleeping
  std::chrono::milliseconds timeout{1000};       // deadline of calls that give none
                                                 // (any deadline is cut to 10 s)
};

// Which model; empty fields mean "any" (then the smallest-error model that fits wins).
struct Selector {
  std::string_view name = {};
  std::string_view trainer = {};
  std::string_view output_type = {};  // AbsPower or DynPower
  std::string_view source = {};       // rapl-sysfs (intel_rapl), acpi, ...
  std::string_view filter = {};       // Kepler's "mae:0.5;mape:10"
};

struct Request {
  Selector selector = {};
  std::span<const std::string_view> features = {};  // one name per column
  const float* matrix = nullptr;               // rows x cols, row-major
  std::uint32_t rows = 0;
  std::uint32_t cols = 0;
  std::span<const NodePower> node_power = {};       // measured node power, when known
  std::span<const SystemValue> system_values = {};  // e.g. cpu_architecture
};

// The model that answered.
struct ModelUsed {
  std::string_view name;
  std::string_view trainer;
  std::string_view model_class;
  std::string_view output_type;
  std::string_view source;
  double mae = 0;   // NaN when not published
  double mape = 0;
  double core_ratio = 1.0;
};

struct Attachment;
class Client;

// A successful answer: the client's own copy of the daemon's response, verified there.
// Any client with access to the segment can write into any slot, so a response is copied
// out before it is verified and read (one read of a verified offset in the slot could
// already be another's); the slot is free again as soon as the bytes are copied.
class Reply {
 public:
  // An empty reply, to be filled (and refilled) by Client::estimate(request, reply, ...).
  Reply() = default;
  Reply(Reply&&) noexcept = default;
  Reply& operator=(Reply&&) noexcept = default;
  Reply(const Reply&) = delete;
  Reply& operator=(const Reply&) = delete;
  ~Reply() = default;

  std::uint32_t rows() const { return rows_; }
  std::uint32_t cols() const { return cols_; }  // = number of components
  std::string_view component(std::uint32_t c) const;
  float power(std::uint32_t row, std::uint32_t col) const { return powers_[std::size_t{row} * cols_ + col]; }
  std::span<const float> powers() const { return {powers_, std::size_t{rows_} * cols_}; }
  const ModelUsed& model() const { return model_; }
  std::uint64_t request_id() const { return request_id_; }

 private:
  friend class Client;

  std::unique_ptr<std::uint8_t[]> bytes_;  // the response; every view below points into it
  std::size_t size_ = 0;                   // of the response in bytes_
  std::size_t capacity_ = 0;               // of bytes_, kept for the next call
  // The powers of all chunks of a request sent in several (powers_ points here then; the
  // model and components stay those of the first chunk's response, in bytes_).
  std::unique_ptr<float[]> joined_;
  std::uint64_t request_id_ = 0;
  std::uint32_t rows_ = 0;
  std::uint32_t cols_ = 0;
  const float* powers_ = nullptr;
  const void* components_ = nullptr;  // flatbuffers vector of strings, in bytes_
  ModelUsed model_;
};

class Client {
 public:
  explicit Client(ClientOptions options = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Estimates the power of every row. The deadline covers claiming a slot, the daemon's
  // work and the wait for the answer; of every request when the rows do not fit one slot
  // and are sent in several, in order, all answered by one model (docs/clients.md, "More
  // rows than one slot holds"; request_id() is then the first request's). A request that
  // fits one slot is sent as it is, at no extra cost.
  Result<Reply> estimate(const Request& request, std::chrono::nanoseconds timeout);
  Result<Reply> estimate(const Request& request) { return estimate(request, options_.timeout); }
  // The same into `reply`, whose storage is reused: no allocation once it has held a
  // reply of this daemon's slot size (a request sent in several parts still allocates).
  // On error `reply` is left empty.
  Status estimate(const Request& request, Reply& reply, std::chrono::nanoseconds timeout);

  // Ok when a daemon answers within the timeout.
  Status ping(std::chrono::nanoseconds timeout);

  // Kepler's 2022 GetPower (clients/cpp/get_power.cpp): one total power in watts per row
  // of `values` (rows x feature_names.size(), row-major), the total being
  // estimator::total_power of the row's components. An empty model name selects the
  // smallest-error model that fits. The measured powers (one value per CPU package, empty
  // when not measured) become the request's node power for components core, dram, gpu
  // and other, which the ratio model splits among the rows. Returns a new vector rather
  // than filling the caller's: the row count is the only size the caller must know, and
  // the one allocation is small next to the round trip.
  Result<std::vector<double>> get_power(std::string_view model_name,
                                        std::span<const std::string_view> feature_names,
                                        std::span<const float> values,
                                        std::span<const float> core_power = {},
                                        std::span<const float> dram_power = {},
                                        std::span<const float> gpu_power = {},
                                        std::span<const float> other_power = {}) {
    return get_power(model_name, feature_names, values, core_power, dram_power, gpu_power,
                     other_power, options_.timeout);
  }
  Result<std::vector<double>> get_power(std::string_view model_name,
                                        std::span<const std::string_view> feature_names,
                                        std::span<const float> values,
                                        std::span<const float> core_power,
                                        std::span<const float> dram_power,
                                        std::span<const float> gpu_power,
                                        std::span<const float> other_power,
                                        std::chrono::nanoseconds timeout);

  const std::string& shm_name() const { return options_.shm_name; }

  // Replies this client refused because their seal did not answer its request (another
  // process wrote into the slot), and slots lost while waiting; each was retried while
  // the call's deadline allowed, else the call failed with kIntegrity.
  std::uint64_t rejected_replies() const { return rejected_replies_.load(std::memory_order_relaxed); }

 private:
  class Use;
  // The current attachment, attaching (under mu_) when there is none or it went stale.
  // The caller must hold a use (active_) from before the call until it no longer reads it.
  Result<Attachment*> attachment();
  void forget(Attachment* stale);
  // Frees retired attachments once no call can still read them (under mu_).
  void reclaim_retired();
  Status call(const Request& request, bool ping, std::uint64_t deadline,
              std::chrono::nanoseconds timeout, Reply& out);
  Result<Reply> estimate_in_chunks(const Request& request, const Status& too_large,
                                   std::uint64_t deadline, std::chrono::nanoseconds timeout);
  Result<Reply> send_chunks(const Request& request, std::uint32_t request_rows,
                            std::uint32_t response_capacity, std::uint64_t deadline,
                            std::chrono::nanoseconds timeout, bool& model_changed);

  ClientOptions options_;
  Status policy_error_;  // an unreadable ESTIMATOR_DAEMON_UID / ESTIMATOR_SHM_MODE
  // The attachment calls use: read with one load by every call, replaced only under mu_.
  // A replaced one is retired, not freed, until a moment when no call is in flight
  // (active_ == 0), so a call that loaded it before the swap never reads freed memory.
  std::atomic<Attachment*> current_{nullptr};
  std::atomic<std::uint32_t> active_{0};  // calls in flight
  std::atomic<bool> have_retired_{false};
  std::mutex mu_;                          // attaching, retiring, freeing; not the calls
  std::vector<std::unique_ptr<Attachment>> attachments_;  // current and retired, under mu_
  std::atomic<std::uint64_t> rejected_replies_{0};
};

}  // namespace estimator::client
