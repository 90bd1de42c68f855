// SPDX-License-Identifier: Apache-2.0
// Turns one request (bytes from a slot or a socket) into one response (bytes), choosing
// and evaluating a model. Owns every buffer it needs, allocated once; after the first
// request of a given feature list and selector, handling allocates nothing.
//
// Not thread-safe: each dispatch thread has its own handler.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <unordered_set>
#include <vector>

#include "models/registry.h"
#include "schema/wire.h"

namespace estimator::service {

class MeasuredSelection;
class Metrics;
class RequestCell;

// Told of each new request shape (once per handler: a plan-cache miss) with the model the
// selection chose, null when none fits; the model fetcher uses it to ask the model server
// for a better model in the background. Runs on a dispatch thread: must not block.
using ShapeObserver = std::function<void(const wire::ParsedRequest&, const models::Model*)>;

// Where handlers get the current registry (swapped atomically on reload), the operator's
// selection policy (fixed for the daemon's life) and the shape observer, if any.
class RegistryHolder {
 public:
  explicit RegistryHolder(std::shared_ptr<const models::Registry> r,
                          models::SelectionPolicy policy = {})
      : current_(std::move(r)), policy_(std::move(policy)) {}
  std::shared_ptr<const models::Registry> get() const { return current_.load(); }
  void set(std::shared_ptr<const models::Registry> r) {
    current_.store(std::move(r));
    generation_.fetch_add(1, std::memory_order_release);
    std::lock_guard lock(reported_mu_);
    reported_.clear();  // the new models may choose differently: report again
  }
  // Changes after every set(): a handler compares it (one plain load) instead of loading
  // the shared_ptr (a lock and two reference-count updates in libstdc++ 12) per request.
  std::uint64_t generation() const { return generation_.load(std::memory_order_acquire); }
  const models::SelectionPolicy& policy() const { return policy_; }

  // May be set or cleared while handlers run (loaded once per plan-cache miss).
  void set_shape_observer(std::shared_ptr<const ShapeObserver> o) { observer_.store(std::move(o)); }
  std::shared_ptr<const ShapeObserver> shape_observer() const { return observer_.load(); }

  // Measured selection (service/measured_selection.h), shared by every handler; null or
  // disabled: models are chosen by published error only. Loaded once per plan-cache miss.
  void set_measured_selection(std::shared_ptr<MeasuredSelection> s) { selection_.store(std::move(s)); }
  std::shared_ptr<MeasuredSelection> measured_selection() const { return selection_.load(); }

  // True the first time a request shape (the plan cache's hash of it) is reported since
  // the last set(): each dispatch thread plans every shape itself, and a fallback to a
  // worse model is logged once. Locks; for plan-cache misses only.
  bool first_report(std::uint64_t shape) const;

 private:
  std::atomic<std::shared_ptr<const models::Registry>> current_;
  std::atomic<std::uint64_t> generation_{0};
  const models::SelectionPolicy policy_;
  std::atomic<std::shared_ptr<const ShapeObserver>> observer_;
  std::atomic<std::shared_ptr<MeasuredSelection>> selection_;
  mutable std::mutex reported_mu_;
  mutable std::unordered_set<std::uint64_t> reported_;
};

class RequestHandler {
 public:
  // `metrics` (optional, must outlive the handler) counts every request by model and
  // status, and answers from a fallback model, and times them; null = no clock reads, no
  // counting. A shape answered by a worse model than the best of its kind because the
  // request lacks that one's features is logged at info, once (RegistryHolder::first_report).
  RequestHandler(const RegistryHolder& registry, std::size_t request_capacity,
                 std::size_t response_capacity, Metrics* metrics = nullptr);
  ~RequestHandler();
  RequestHandler(const RequestHandler&) = delete;
  RequestHandler& operator=(const RequestHandler&) = delete;

  // The response to `request`; valid until the next call. Never fails: errors become an
  // error response naming what was wrong.
  std::span<const std::uint8_t> handle(std::span<const std::uint8_t> request);

  // Runs `request` through the handler as handle() would, but counts nothing, feeds
  // nothing to measured selection and keeps no reply: it brings the code and data of that
  // request's path back into the caches before the next one like it is expected.
  void warm(std::span<const std::uint8_t> request);

  // Outcome of the last handle(), for logs and metrics.
  Code last_code() const { return last_code_; }

 private:
  struct CachedPlan;
  struct Shadow;
  const CachedPlan* find_plan(const wire::ParsedRequest& req, Status& error);
  // Shadow evaluation of one interval (measured_selection.h): the reply from the model
  // measured selection chooses, or an empty span to answer the usual way.
  std::span<const std::uint8_t> estimate_measured(const wire::ParsedRequest& req, Shadow& shadow,
                                                  const CachedPlan& cp);
  std::unique_ptr<Shadow> make_shadow(const wire::ParsedRequest& req, const models::Model& chosen);
  std::span<const std::uint8_t> estimate(const wire::ParsedRequest& req);
  std::span<const std::uint8_t> handle_request(std::span<const std::uint8_t> request);

  const RegistryHolder& registry_;
  std::shared_ptr<const models::Registry> current_;  // pinned while the cache refers to it
  std::uint64_t generation_ = ~std::uint64_t{0};      // of current_ (none yet)
  wire::RequestReader reader_;
  wire::ResponseBuilder builder_;
  std::vector<std::unique_ptr<CachedPlan>> cache_;
  const CachedPlan* last_ = nullptr;  // the plan found last (in cache_)
  double node_cores_;
  wire::ResponseTail ping_tail_;
  Code last_code_ = Code::kOk;
  Metrics* metrics_;
  RequestCell* last_cell_ = nullptr;  // the chosen model's cell; null = not counted yet
  bool last_was_ping_ = false;
  bool warming_ = false;  // in warm(): no side effects beyond the caches
};

}  // namespace estimator::service
