// SPDX-License-Identifier: Apache-2.0
// The ways the benchmark carries a request to a server process and the answer back, and
// the machine limits it measures beside them:
//   ring      - the real daemon core (service::Daemon) in a child, real client::Clients here,
//               in one of the RingRegimes below, with 1 or more client threads;
//   socket    - a unix stream socket with a 4-byte length prefix, the same FlatBuffers bytes
//               and the same service::RequestHandler in the child (the peer to beat):
//               blocking reads, or busy-polling ones (non-blocking recv in a loop for the
//               spin budget, then blocking), the like-for-like peer of the spinning ring;
//   json      - Kepler's v0.9 JSON over the daemon's Kepler endpoint, one connection per
//               request as Kepler's client makes them (the protocol being replaced);
//   floor     - a raw shared-memory ping-pong of same-sized bytes, no schema (the limit);
//               variant "work": the same ping-pong carrying the ring's work (encoding,
//               seal, the daemon's handler, decoding), without the ring's protocol;
//   cacheline - a ping-pong of one flag on one shared cache line, no payload (spinning);
//   futex     - a ping-pong of one shared word through FUTEX_WAIT/FUTEX_WAKE (sleeping);
//   memcpy    - one in-process copy of the request's bytes (no second process at all).
// Each mode owns its server process: destroying the mode stops and reaps it.
#pragma once

#include <sys/types.h>

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
  // The server process, whose CPU time the periodic lanes report; -1 when none.
  virtual pid_t server_pid() const { return -1; }
};

// A daemon core in a child process, shared by the ring lanes (client counts) calling it.
class RingDaemon;

// How the ring's two sides wait for each other.
enum class RingRegime {
  kDefault,  // as shipped: daemon and clients spin 50 us, then sleep
  kSpin,     // both sides spin --spin-us (1 ms): back-to-back requests are served hot
  kSleep,    // neither spins: every request rings the doorbell, every answer a semaphore
  kPredict,  // as shipped plus the daemon's predictive wake-up (--predictive-wake)
  // The daemon as shipped (50 us spin), clients that block at once: the threads lanes,
  // where spinning clients would take the CPUs the dispatch threads evaluate on.
  kThreads,
};
const char* regime_variant(RingRegime regime);
// The daemon child's pid (for its CPU time), -1 when it has none.
pid_t ring_daemon_pid(const RingDaemon& daemon);

// Each starts its server process and connects to it; `cases` must outlive the mode. Call
// before any thread is started in this process (they fork).
//
// `threads`: the daemon's dispatch threads (--threads).
Result<std::shared_ptr<RingDaemon>> start_ring_daemon(
    std::shared_ptr<const models::Registry> registry, const ModeOptions& options,
    RingRegime regime, unsigned threads = 1);
// `clients` client::Clients on the daemon's segment; with more than one, each run's round
// trips are split among as many threads of this process, one client each, running at
// once: latency per request, throughput of them all. `shared`: the threads share one
// client::Client instead.
Result<std::unique_ptr<Mode>> ring_clients(std::shared_ptr<RingDaemon> daemon,
                                           const std::vector<Case>& cases, unsigned clients,
                                           bool shared = false);

// `poll`: both ends busy-poll for options.spin before a blocking read.
Result<std::unique_ptr<Mode>> start_socket(const std::vector<Case>& cases,
                                           std::shared_ptr<const models::Registry> registry,
                                           const ModeOptions& options, bool poll);
// `codec_timed`: Kepler's encoding of the request and decoding of the reply are timed too
// (variant "kepler"); otherwise only the connection and the endpoint are ("endpoint").
Result<std::unique_ptr<Mode>> start_json(const std::vector<Case>& cases,
                                         std::shared_ptr<const models::Registry> registry,
                                         const ModeOptions& options, bool codec_timed);
// `registry` set: variant "work", whose child answers with a handler on it.
Result<std::unique_ptr<Mode>> start_floor(const std::vector<Case>& cases,
                                          std::shared_ptr<const models::Registry> registry,
                                          const ModeOptions& options);
Result<std::unique_ptr<Mode>> start_cacheline(const ModeOptions& options);
Result<std::unique_ptr<Mode>> start_futex(const ModeOptions& options);
std::unique_ptr<Mode> start_memcpy(const std::vector<Case>& cases);

inline std::int64_t elapsed_ns(Clock::time_point t0, Clock::time_point t1) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count();
}

}  // namespace estimator::bench
