// The three ways the benchmark carries a request to a server process and the answer back:
//   ring   - the real daemon core (service::Daemon) in a child, the real client::Client here;
//   socket - a unix stream socket with a 4-byte length prefix, the same FlatBuffers bytes
//            and the same service::RequestHandler in the child (the peer to beat);
//   floor  - a raw shared-memory ping-pong of same-sized bytes, no schema (the limit).
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
  // round trips never sleep, so every mode is measured hot.
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

// Each starts its server process and connects to it; `cases` must outlive the mode. Call
// before any thread is started in this process (they fork).
Result<std::unique_ptr<Mode>> start_ring(const std::vector<Case>& cases,
                                         std::shared_ptr<const models::Registry> registry,
                                         const ModeOptions& options);
Result<std::unique_ptr<Mode>> start_socket(const std::vector<Case>& cases,
                                           std::shared_ptr<const models::Registry> registry,
                                           const ModeOptions& options);
Result<std::unique_ptr<Mode>> start_floor(const std::vector<Case>& cases,
                                          const ModeOptions& options);

inline std::int64_t elapsed_ns(Clock::time_point t0, Clock::time_point t1) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count();
}

}  // namespace estimator::bench
