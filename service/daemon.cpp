// SPDX-License-Identifier: Apache-2.0
#include "service/daemon.h"

#include <sys/prctl.h>
#include <time.h>

#include <functional>

#include <spdlog/spdlog.h>


#include "shm/server_ring.h"
#include "shm/wait.h"

namespace estimator::service {
namespace {

// Idle dispatch threads wake this often to rescan the slots (recovering a mask bit or a
// doorbell lost to a hostile writer). Every wake-up costs CPU on an idle node, where the
// daemon should cost nothing: once a second.
constexpr std::uint64_t kIdleWakeNs = 1'000'000'000ULL;
// Heartbeat and reaper period; clients call a daemon gone after shm::kHeartbeatStaleNs,
// and a dead client's slot, seen twice, is free within two periods.
constexpr auto kHousekeepingPeriod = std::chrono::milliseconds(250);
// A busy dispatch thread rescans the slot states after this many loop turns (see
// dispatch_loop). A scan reads one word per slot, most of them cache misses (a few us
// for 32 slots): once in 4096 requests it stays out of the p99.9 latency, where once in
// 256 put it there, and a hidden request still waits only milliseconds.
constexpr std::uint32_t kScanEvery = 4096;
// A predicted window warms the expected request's path by handling the last request again
// (see dispatch_loop). That saves the cold caches' few tens of microseconds; a request
// whose handling costs more than this (1000-row XGBoost: half a millisecond) would only be
// evaluated twice per period, so it is not warmed again until the request changes.
constexpr std::uint64_t kMaxWarmNs = 50'000;

std::uint64_t thread_cpu_ns() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<std::uint64_t>(t.tv_sec) * 1'000'000'000ULL +
         static_cast<std::uint64_t>(t.tv_nsec);
}

}  // namespace

Result<std::unique_ptr<Daemon>> Daemon::start(const DaemonConfig& config,
                                              std::shared_ptr<RegistryHolder> registry) {
  if (config.threads == 0 || config.threads > shm::kMaxDispatchThreads) {
    return Status(Code::kInvalidArgument, "threads must be between 1 and " +
                                              std::to_string(shm::kMaxDispatchThreads));
  }
  std::unique_ptr<Daemon> d(new Daemon(config, std::move(registry)));
  auto seg = shm::ServerSegment::create(config.segment);
  if (!seg.ok()) return seg.status();
  d->segment_ = std::move(seg).value();
  d->working_ = std::make_unique<std::atomic<std::uint32_t>[]>(config.threads);
  // The header as written at creation, before any client could touch it.
  d->header_guard_ = std::make_unique<shm::HeaderGuard>(d->segment_->view());
  d->start_dispatch();
  d->segment_->mark_serving();
  // Started once serving: from then on it restores the state "serving" a peer overwrites.
  d->housekeeping_ = std::thread([p = d.get()] { p->housekeeping_loop(); });
  return d;
}

Daemon::~Daemon() { stop(); }

void Daemon::start_dispatch() {
  running_.store(config_.threads);
  for (unsigned i = 0; i < config_.threads; ++i) {
    dispatch_.emplace_back([this, i] {
      dispatch_loop(i);
      running_.fetch_sub(1);
    });
  }
}

void Daemon::join_dispatch() {
  // One post per sleeping thread is not enough: a thread woken with nothing to take
  // drains the doorbell (so that a forged count cannot keep it awake), which may swallow
  // the post of a thread still asleep, left to sleep until its idle timeout. Post until
  // every thread has seen stopping_ or switching_.
  while (running_.load() != 0) {
    segment_->wake_sleepers(static_cast<unsigned>(dispatch_.size()));
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  for (auto& t : dispatch_) t.join();
  dispatch_.clear();
}

void Daemon::stop() {
  if (stopping_.exchange(true)) return;
  // Housekeeping first: it may be switching segments, which restarts dispatch threads.
  if (housekeeping_.joinable()) housekeeping_.join();
  if (segment_ == nullptr) return;  // start() failed before creating it
  join_dispatch();  // each sees stopping_ after its wait
  segment_.reset();  // marks stopping, unlinks
}

void Daemon::switch_segment(std::unique_ptr<shm::ServerSegment> fresh) {
  switching_.store(true);
  join_dispatch();
  switching_.store(false);
  for (unsigned t = 0; t < config_.threads; ++t) working_[t].store(0);
  segment_ = std::move(fresh);  // the old one marks itself stopping and unmaps
  header_guard_ = std::make_unique<shm::HeaderGuard>(segment_->view());
  start_dispatch();
  segment_->mark_serving();
}

void Daemon::dispatch_loop(unsigned index) {
  std::atomic<std::uint32_t>& working = working_[index];
  const shm::SegmentView& view = segment_->view();
  // The predicted wake-ups are timers a few tens of microseconds before a request: the
  // default 50 us timer slack would make them late by as much as the whole window.
  prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
  shm::ServerRing ring(view, config_.predict, index, config_.threads);
  RequestHandler handler(*registry_, view.request_capacity(), view.response_capacity(),
                         config_.metrics);
  // A predicted request finds the daemon awake, but its path cold after a period of
  // other work: going through the last request again as the window opens (counted
  // nowhere) brings its code and data back (docs/benchmarks.md: at P = 1 s, 1 row, p50
  // 22.5 us with it, 65 us without).
  std::size_t warm_len = 0;  // the request warmed last, by its length
  bool warm_pays = true;      // whether warming it took at most kMaxWarmNs
  const std::function<void()> warm = [&] {
    const std::span<const std::uint8_t> last = ring.last_request();
    if (last.size() != warm_len) {
      warm_len = last.size();
      warm_pays = true;
    }
    if (last.empty() || !warm_pays) return;
    const std::uint64_t t0 = thread_cpu_ns();  // not wall time: a preemption is no cost
    handler.warm(last);
    warm_pays = thread_cpu_ns() - t0 <= kMaxWarmNs;
  };
  std::uint32_t since_scan = 0;
  while (!stopping_.load(std::memory_order_relaxed) &&
         !switching_.load(std::memory_order_relaxed)) {
    // A peer that clears ready-mask bits (a hostile writer) hides requests from take();
    // a scan of the slot states finds them. Idle threads scan on each timeout; a thread
    // kept busy scans every kScanEvery requests, so a hidden request waits for at most
    // that many others instead of until its deadline.
    if (++since_scan == kScanEvery) {
      since_scan = 0;
      ring.scan();
    }
    const auto taken = ring.take();
    if (!taken) {
      if (!ring.wait_for_work(config_.spin_ns, kIdleWakeNs, warm)) ring.scan();
      continue;
    }
    working.store(taken->slot + 1, std::memory_order_seq_cst);
    // The request is take()'s private copy; the reply is built privately and fits the
    // response area by construction (the builder is sized to it).
    ring.answer(*taken, handler.handle(taken->request));
    working.store(0, std::memory_order_seq_cst);
    stats_.requests.fetch_add(1, std::memory_order_relaxed);
    if (handler.last_code() != Code::kOk) {
      stats_.errors.fetch_add(1, std::memory_order_relaxed);
      SPDLOG_DEBUG("slot {}: {}", taken->slot, code_name(handler.last_code()));
    }
  }
  spdlog::debug("dispatch thread {}: {} predicted wake-ups, {} of them missed", index,
                ring.windows(), ring.missed_windows());
}

void Daemon::housekeeping_loop() {
  auto reaper = std::make_unique<shm::SlotReaper>(segment_->view());
  const auto working = [this](std::uint32_t slot) {
    for (unsigned t = 0; t < config_.threads; ++t) {
      if (working_[t].load(std::memory_order_seq_cst) == slot + 1) return true;
    }
    return false;
  };
  std::string failed_recreate;  // logged once per reason, retried every tick
  while (!stopping_.load(std::memory_order_relaxed)) {
    // Anyone who may open the segment can truncate, delete or replace it; clients would
    // then never reach us again. Lay out a new one (a new epoch) for them to re-attach to.
    if (const std::string why = segment_->lost(); !why.empty()) {
      auto fresh = segment_->recreate();
      if (fresh.ok()) {
        spdlog::warn("segment '{}' {}: serving a new one, epoch {}", segment_->name(), why,
                     fresh.value()->epoch());
        switch_segment(std::move(fresh).value());
        reaper = std::make_unique<shm::SlotReaper>(segment_->view());
        failed_recreate.clear();
      } else if (failed_recreate != fresh.status().message()) {
        failed_recreate = fresh.status().message();
        spdlog::error("segment '{}' {}, and a new one cannot be created: {}",
                      segment_->name(), why, failed_recreate);
      }
    }
    const std::uint64_t now = shm::monotonic_ns();
    segment_->view().header().heartbeat_ns.store(now, std::memory_order_relaxed);
    if (header_guard_->restore()) {
      stats_.header_restores.fetch_add(1, std::memory_order_relaxed);
      spdlog::warn("restored the segment header a peer overwrote");
    }
    if (const std::uint32_t n = reaper->sweep(now, working); n != 0) {
      stats_.reclaimed_slots.fetch_add(n, std::memory_order_relaxed);
      spdlog::info("reclaimed {} slot(s) of dead clients", n);
    }
    std::this_thread::sleep_for(kHousekeepingPeriod);
  }
}

}  // namespace estimator::service
