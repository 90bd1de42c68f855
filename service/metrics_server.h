// SPDX-License-Identifier: Apache-2.0
// A minimal HTTP/1.1 server for Prometheus scrapes and Kubernetes probes: GET /metrics
// answers the text the renderer returns; GET /healthz and /readyz answer 200 "ok" when the
// health check finds nothing wrong and 503 "not ready: <reason>" otherwise; GET /livez
// answers 200 while this server's thread runs; other paths 404, methods other than GET and
// HEAD 405. One connection = one request (the reply says Connection: close).
//
// One thread multiplexes every connection with poll() over non-blocking sockets, so a
// slow or silent peer cannot stall another scrape, and nothing here ever waits on the
// daemon's request path (rendering only reads atomics and briefly takes the metrics
// lock). Each connection has a size limit on its request head and a deadline; past either
// it gets an error status (or is closed) and the loop moves on. At the connection cap (or
// the descriptor limit) the oldest connection that has not sent its request is closed to
// admit a new one, so idle connections cannot starve scrapes.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

namespace estimator::service {

struct MetricsServerOptions {
  // HOST:PORT. HOST: an IPv4 or IPv6 literal ([::1] with brackets), a name resolved
  // once at start, or empty / "*" for every address. PORT 0 = any free port.
  std::string address;
  std::size_t max_request_bytes = 8192;     // request line + headers
  std::chrono::milliseconds deadline{5000};  // whole life of a connection
  std::size_t max_connections = 32;          // past it the oldest idle one is closed
};

// Splits "HOST:PORT" ("[v6]:PORT" for IPv6) into host and port, with clear errors.
Result<std::pair<std::string, std::uint16_t>> split_host_port(std::string_view address);

class MetricsServer {
 public:
  // Called on the server's thread for each GET /metrics: the body to send.
  using Renderer = std::function<std::string()>;
  // Called on the server's thread for each GET /healthz or /readyz: empty when ready,
  // else why not (one line, sent in the 503 body). May be null: always ready.
  using HealthCheck = std::function<std::string()>;

  // Binds and listens (errors, e.g. a port in use, are returned here, not later), then
  // serves on its own thread until destroyed.
  static Result<std::unique_ptr<MetricsServer>> start(const MetricsServerOptions& options,
                                                      Renderer render,
                                                      HealthCheck health = nullptr);
  ~MetricsServer();  // wakes and joins the thread, closes every socket
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // The address actually bound, e.g. "127.0.0.1:9102" or "[::]:40123" (port 0 resolved).
  const std::string& bound_address() const { return bound_; }
  std::uint16_t port() const { return port_; }

 private:
  struct Impl;
  explicit MetricsServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  std::string bound_;
  std::uint16_t port_ = 0;
};

}  // namespace estimator::service
