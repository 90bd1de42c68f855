// SPDX-License-Identifier: Apache-2.0
// The Kepler-compatible unix-socket endpoint: what lets an unmodified Kepler (v0.6..v0.9,
// and the 2022 prototype) use the daemon in place of the Python estimator.
//
// Framing (one request per connection, as Kepler does it): the client connects, writes
// one JSON document and reads the reply; the server answers once the document is
// complete - found by tracking bracket depth outside strings, so no length prefix or
// delimiter is needed and a document split across many writes is never cut - or once the
// client half-closes, then closes. Unlike the Python server, nothing stalls behind a slow
// client: one event-loop thread (epoll) serves every connection with non-blocking
// sockets, and each connection has a deadline covering both reading and writing.
//
// Under abuse (docs/reliability.md): the bytes of unfinished requests held across all
// connections are capped (max_buffered_bytes; past it the largest unfinished request is
// refused, so a crowd of near-limit requests cannot take the daemon's memory), and at the
// connection cap or the process's file-descriptor limit the oldest connection still
// waiting for its request is closed to admit the new one (so idle connections cannot
// lock honest clients out; accepting never stops for longer than a short pause).
//
// The socket file: created with `mode` (chmod before listen, so no client can connect
// while it has the umask's mode); start() refuses when a live server answers on the path
// and replaces a stale socket file, but never removes anything that is not a socket;
// stop() removes the file unless another server has replaced it since.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "common/status.h"
#include "service/kepler_json.h"
#include "service/request_handler.h"

namespace estimator::service {

struct KeplerEndpointConfig {
  std::string path = "/tmp/estimator.sock";  // Kepler's path
  mode_t mode = 0660;
  std::size_t max_request_bytes = 4u << 20;  // a larger request gets an error reply
  std::chrono::milliseconds deadline{5000};  // per connection, from accept to the last byte
  std::size_t max_connections = 256;         // past it the oldest unfinished one is closed
  std::size_t max_buffered_bytes = 64u << 20;  // unfinished requests, all connections together
  kepler::JsonLimits json;
  kepler::ClientReadLimits client_reads;  // Kepler's read sizes; 0 = the client reads it all
  // Counts requests by model and status, as the ring's, and error replies by reason;
  // outlives the endpoint.
  Metrics* metrics = nullptr;
};

// Counters for logs and metrics; updated by the event-loop thread only.
struct KeplerEndpointStats {
  std::atomic<std::uint64_t> connections{0};
  std::atomic<std::uint64_t> requests{0};   // replies sent (successes and errors)
  std::atomic<std::uint64_t> errors{0};     // replies carrying an error msg
  std::atomic<std::uint64_t> oversized{0};  // requests over max_request_bytes
  std::atomic<std::uint64_t> timeouts{0};   // connections closed at their deadline
  std::atomic<std::uint64_t> evicted{0};    // closed unfinished to admit a connection or bytes
};

class KeplerEndpoint {
 public:
  // Binds the socket and starts the event-loop thread; evaluation uses `registry` (the
  // daemon's, so reloads apply here too).
  static Result<std::unique_ptr<KeplerEndpoint>> start(const KeplerEndpointConfig& config,
                                                       std::shared_ptr<RegistryHolder> registry);
  // Stops the thread, closes every connection and removes the socket file.
  ~KeplerEndpoint();
  KeplerEndpoint(const KeplerEndpoint&) = delete;
  KeplerEndpoint& operator=(const KeplerEndpoint&) = delete;

  // Safe from any thread, idempotent; returns once the event loop has exited.
  void stop();
  const KeplerEndpointStats& stats() const { return stats_; }
  const std::string& path() const { return config_.path; }

 private:
  struct Loop;
  KeplerEndpoint(KeplerEndpointConfig config, std::shared_ptr<RegistryHolder> registry);

  KeplerEndpointConfig config_;
  std::shared_ptr<RegistryHolder> registry_;
  KeplerEndpointStats stats_;
  std::unique_ptr<Loop> loop_;
  std::thread thread_;
  std::atomic<bool> stopped_{false};
};

}  // namespace estimator::service
