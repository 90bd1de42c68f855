// Turns one request (bytes from a slot or a socket) into one response (bytes), choosing
// and evaluating a model. Owns every buffer it needs, allocated once; after the first
// request of a given feature list and selector, handling allocates nothing.
//
// Not thread-safe: each dispatch thread has its own handler.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "models/registry.h"
#include "schema/wire.h"

namespace estimator::service {

// Where handlers get the current registry; swapped atomically on reload.
class RegistryHolder {
 public:
  explicit RegistryHolder(std::shared_ptr<const models::Registry> r) : current_(std::move(r)) {}
  std::shared_ptr<const models::Registry> get() const { return current_.load(); }
  void set(std::shared_ptr<const models::Registry> r) { current_.store(std::move(r)); }

 private:
  std::atomic<std::shared_ptr<const models::Registry>> current_;
};

class RequestHandler {
 public:
  RequestHandler(const RegistryHolder& registry, std::size_t request_capacity,
                 std::size_t response_capacity);
  ~RequestHandler();
  RequestHandler(const RequestHandler&) = delete;
  RequestHandler& operator=(const RequestHandler&) = delete;

  // The response to `request`; valid until the next call. Never fails: errors become an
  // error response naming what was wrong.
  std::span<const std::uint8_t> handle(std::span<const std::uint8_t> request);

  // Outcome of the last handle(), for logs and metrics.
  Code last_code() const { return last_code_; }

 private:
  struct CachedPlan;
  const CachedPlan* find_plan(const wire::ParsedRequest& req, Status& error);
  std::span<const std::uint8_t> estimate(const wire::ParsedRequest& req);

  const RegistryHolder& registry_;
  std::shared_ptr<const models::Registry> current_;  // pinned while the cache refers to it
  wire::RequestReader reader_;
  wire::ResponseBuilder builder_;
  std::vector<std::unique_ptr<CachedPlan>> cache_;
  double node_cores_;
  wire::ResponseTail ping_tail_;
  Code last_code_ = Code::kOk;
};

}  // namespace estimator::service
