// SPDX-License-Identifier: Apache-2.0
// The estimator daemon's serving core: the segment, the dispatch thread(s) that answer
// slots, and the housekeeping thread that beats the heartbeat, reclaims the slots of
// dead clients and lays out a new segment when the old one was truncated, deleted or
// replaced. estimatord's main() only parses options and waits for a signal.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "service/request_handler.h"
#include "shm/segment.h"
#include "shm/server_ring.h"

namespace estimator::service {

struct DaemonConfig {
  shm::SegmentConfig segment;
  std::uint64_t spin_ns = 50'000;  // spin this long for the next request before sleeping
  // Wake up just before each periodic client's next request (shm/arrival_predictor.h).
  // Off by default until it is shown to pay on a quiet machine (docs/benchmarks.md).
  bool predict = false;
  unsigned threads = 1;            // dispatch threads
  Metrics* metrics = nullptr;      // counts and times requests when set; must outlive the daemon
};

// Counters for logs (the metrics endpoint reads the same ones).
struct DaemonStats {
  std::atomic<std::uint64_t> requests{0};
  std::atomic<std::uint64_t> errors{0};
  std::atomic<std::uint64_t> reclaimed_slots{0};
  std::atomic<std::uint64_t> header_restores{0};  // housekeeping ticks that found it forged
};

class Daemon {
 public:
  // Creates the segment and starts serving; the segment is marked serving (clients can
  // attach) only once every thread runs.
  static Result<std::unique_ptr<Daemon>> start(const DaemonConfig& config,
                                               std::shared_ptr<RegistryHolder> registry);
  static Result<std::unique_ptr<Daemon>> start(const DaemonConfig& config,
                                               std::shared_ptr<const models::Registry> registry) {
    return start(config, std::make_shared<RegistryHolder>(std::move(registry)));
  }
  // Stops the threads, then removes the segment.
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  void stop();  // async-signal-unsafe; call from a normal thread
  // The segment being served. Replaced by the housekeeping thread when lost: read it
  // only before other threads could see a loss (start-up logs) or after stop().
  const shm::ServerSegment& segment() const { return *segment_; }
  const DaemonStats& stats() const { return stats_; }
  RegistryHolder& registry() { return *registry_; }

 private:
  Daemon(const DaemonConfig& config, std::shared_ptr<RegistryHolder> registry)
      : config_(config), registry_(std::move(registry)) {}
  void start_dispatch();
  void join_dispatch();  // wakes the dispatch threads until all have returned
  void dispatch_loop(unsigned index);
  void housekeeping_loop();
  // Serves `fresh` instead of the current segment: stops the dispatch threads, swaps,
  // starts them again (the old mapping is unmapped only once nobody reads it).
  void switch_segment(std::unique_ptr<shm::ServerSegment> fresh);

  DaemonConfig config_;
  std::shared_ptr<RegistryHolder> registry_;  // shared with a ModelWatcher, if any
  std::unique_ptr<shm::ServerSegment> segment_;
  // The daemon's private copy of the header of segment_, taken before it serves; used by
  // the housekeeping thread only (which also replaces it with the segment).
  std::unique_ptr<shm::HeaderGuard> header_guard_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> switching_{false};  // dispatch threads return to be restarted
  DaemonStats stats_;
  std::vector<std::thread> dispatch_;
  std::atomic<unsigned> running_{0};  // dispatch threads not yet returned
  std::thread housekeeping_;
  // Per dispatch thread: 1 + the slot it is handling, 0 when none; tells the reaper which
  // Busy slots are really being worked on (shm::SlotReaper::sweep).
  std::unique_ptr<std::atomic<std::uint32_t>[]> working_;
};

}  // namespace estimator::service
