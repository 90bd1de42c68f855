// SPDX-License-Identifier: Apache-2.0
// The ways the benchmark carries a request to a server process and the answer back, and
// the machine limits it measures beside them:
//   ring      - the real daemon core (service::Daemon) in a child, real client::Clients here,
//               hot (both sides spin) or sleeping (neither spins: both block on their
//               semaphores), with 1 or more client threads;
//   socket    - a unix stream socket with a 4-byte length prefix, the same FlatBuffers bytes
//               and the same service::RequestHandler in the child (the peer to beat);
//   json      - Kepler's v0.9 JSON over the daemon's Kepler endpoint, one connection per
//               request as Kepler's client makes them (the protocol being replaced);
//   floor     - a raw shared-memory ping-pong of same-sized bytes, no schema (the limit);
//   cacheline - a ping-pong of one flag on one shared cache line, no payload (spinning);
//   futex     - a ping-pong of one shared word through FUTEX_WAIT/FUTEX_WAKE (sleeping);
//   memcpy    - one in-process copy of the request's bytes (no second process at all).
// Each mode owns its server process: destroying the mode stops and reaps it.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "bench/stats.h"
#include "bench/workload.h"
#include "common/status.h"
#include "models/registry.h"

namespace estimator::bench {

using Clock = std::chrono::steady_clock;

struct ModeOptions {
  // How long each side spins for its peer before sleeping; long enough that back-to-back
  // round trips never sleep, so the hot modes are measured hot.
  std::chrono::microseconds spin{1000};
  // A server that does not answer within this fails the run instead of hanging it.
  std::chrono::milliseconds timeout{2000};
};

class Mode {
 public:
  virtual ~Mode() = default;
  // Up to `count` back-to-back round trips of `cases[index]`, fewer if `deadline` passes
  // first (a time budget keeps a run on a loaded machine bounded); when `out` is given,
  // each one's latency is added to it (otherwise: warm-up). Every reply is checked; the
  // first bad one or failed round trip ends the loop with its Status.
  virtual Status run(std::size_t index, std::size_t count, Clock::time_point deadline,
                     Samples* out) = 0;
};

// A daemon core in a child process, shared by the ring lanes (client counts) calling it.
class RingDaemon;

// Each starts its server process and connects to it; `cases` must outlive the mode. Call
// before any thread is started in this process (they fork).
//
// `sleeping`: the daemon spins 0 and its clients spin 0, so every request wakes the daemon
// through its doorbell and every answer wakes the client through the slot's semaphore.
Result<std::shared_ptr<RingDaemon>> start_ring_daemon(
    std::shared_ptr<const models::Registry> registry, const ModeOptions& options,
    bool sleeping);
// `clients` client::Clients on the daemon's segment; with more than one, each run's round
// trips are split among as many threads of this process, one client each, running at
// once: latency per request, throughput of them all.
Result<std::unique_ptr<Mode>> ring_clients(std::shared_ptr<RingDaemon> daemon,
                                           const std::vector<Case>& cases, unsigned clients);

Result<std::unique_ptr<Mode>> start_socket(const std::vector<Case>& cases,
                                           std::shared_ptr<const models::Registry> registry,
                                           const ModeOptions& options);
// `codec_timed`: Kepler's encoding of the request and decoding of the reply are timed too
// (variant "kepler"); otherwise only the connection and the endpoint are ("endpoint").
Result<std::unique_ptr<Mode>> start_json(const std::vector<Case>& cases,
                                         std::shared_ptr<const models::Registry> registry,
                                         const ModeOptions& options, bool codec_timed);
Result<std::unique_ptr<Mode>> start_floor(const std::vector<Case>& cases,
                                          const ModeOptions& options);
Result<std::unique_ptr<Mode>> start_cacheline(const ModeOptions& options);
Result<std::unique_ptr<Mode>> start_futex(const ModeOptions& options);
std::unique_ptr<Mode> start_memcpy(const std::vector<Case>& cases);

inline std::int64_t elapsed_ns(Clock::time_point t0, Clock::time_point t1) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count();
}

}  // namespace estimator::bench
