// SPDX-License-Identifier: Apache-2.0
// The daemon side of the slot protocol (state diagram in shm/layout.h).
//
// One ServerRing per dispatch thread. Published slots are found through the header's
// ready mask (one cache line to poll while spinning); a full scan of slot states on
// every idle timeout recovers requests whose mask bit was lost (a client killed between
// publishing and setting the bit, or a hostile one clearing bits).
//
// Several threads share the ring slot by slot: take() clears one mask bit (fetch_and, so
// exactly one thread owns it) and leaves the others to the other threads; the slot word's
// CAS Ready -> Busy stays the arbiter for a bit a peer set twice. Each thread has its own
// bit in the header's sleep mask, so a client rings the doorbell while any thread sleeps.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "shm/arrival_predictor.h"
#include "shm/layout.h"
#include "shm/segment.h"

namespace estimator::shm {

class ServerRing {
 public:
  // `predict`: learn the clients' periods and wake up just before their next request
  // (shm/arrival_predictor.h); otherwise sleep until a doorbell or the timeout.
  // `thread` of `threads` (at most kMaxDispatchThreads) names this ring's sleep bit.
  explicit ServerRing(const SegmentView& view, bool predict = false, unsigned thread = 0,
                      unsigned threads = 1);

  // Takes one published slot (Ready -> Busy), the first after the one taken last (so that
  // under load every slot gets its turn); nullopt when nothing is pending. The
  // request is copied into this ring's private buffer (a peer may rewrite the slot at any
  // time; only the copy is read and evaluated), empty when its length exceeds the area.
  struct Taken {
    std::uint32_t slot;
    std::uint64_t word;                     // the Busy word this take wrote
    std::uint64_t nonce;                    // as read once from the slot
    std::span<const std::uint8_t> request;  // the private copy, until the next take()
    std::uint64_t request_digest;           // of the copy, keyed by the nonce
  };
  std::optional<Taken> take();

  // Copies `reply` (private memory) to the end of the slot's response area, seals it
  // (shm/reply_seal.h) and wakes the client if it sleeps. A slot the client abandoned
  // meanwhile is freed instead; one that no longer carries the taken word is left alone.
  void answer(const Taken& taken, std::span<const std::uint8_t> reply);

  // Spins up to spin_ns for a published slot, then sleeps on the doorbell until
  // timeout_ns from now. Returns false when no slot is pending: on timeout, or after a
  // wake-up with nothing behind it, which drains the doorbell (the caller then runs
  // scan()).
  //
  // With prediction, the spin is skipped after answering a client known to call only
  // every millisecond or more (spinning would not reach its next request), and the sleep
  // is cut into: asleep until the window before the next predicted request, awake and
  // spinning through that window, asleep again if nothing came. The sleep ends on the
  // doorbell as before, so an unpredicted request is served as without prediction.
  //
  // `on_window`, when given, runs as a predicted window opens, before its spin: the
  // caller warms the path the expected request will take (see Daemon::dispatch_loop).
  bool wait_for_work(std::uint64_t spin_ns, std::uint64_t timeout_ns,
                     const std::function<void()>& on_window = {});

  // The request taken last (take()'s private copy), for warming its path again.
  std::span<const std::uint8_t> last_request() const {
    return {request_copy_.data(), last_len_};
  }

  // Predicted windows this thread was awake for, and windows that closed without their
  // request (spun through, or woken too late for them): a miss is what a client that
  // stops being periodic costs, and what a machine that delays timer wake-ups causes.
  std::uint64_t windows() const { return windows_.load(std::memory_order_relaxed); }
  std::uint64_t missed_windows() const { return predictor_.misses(); }

  // Marks every slot found in state Ready as pending, whatever the mask says.
  void scan();

 private:
  bool any_pending() const;
  std::optional<Taken> take_slot(std::uint32_t i);
  // Sleeps on the doorbell until deadline_ns (the sleep flag set meanwhile); `woken` says
  // whether it was posted. Returns whether a slot is pending.
  bool sleep_until(std::uint64_t deadline_ns, bool& woken);
  SegmentView view_;
  bool predict_;
  ArrivalPredictor predictor_;
  std::uint64_t last_key_ = 0;                        // the client served last
  std::uint64_t wake_late_ns_ = 0;  // how late this thread's window timers fire, on average
  // Atomic only so that another thread may read them (tests); one writer.
  std::atomic<std::uint64_t> windows_{0};
  std::uint32_t mask_words_;                         // those covering the ring
  std::uint64_t last_word_bits_;                     // the ring's bits in the last of them
  std::vector<std::uint8_t> request_copy_;           // request_capacity bytes
  std::vector<std::uint64_t> likely_word_;  // per slot: the Ready word expected next (take_slot)
  std::size_t last_len_ = 0;                         // of the request in it
  std::array<std::uint64_t, kMaskWords> pending_{};  // Ready slots this thread's scan found
  std::uint32_t next_ = 0;                           // where take() looks first
  std::uint64_t sleep_bit_;                          // this thread's in server_sleeping
  std::uint64_t cleared_on_wake_;                    // it, and the bits no thread owns
  std::uint32_t last_client_cpu_ = 0xFFFFFFFFu;      // where the last request came from
  bool idle_ = false;                                // the last wait timed out
};

// Frees slots whose owner died: in the daemon's pid namespace when the owner's pid is
// gone; from another namespace (a sidecar container), when the owner's lease expired (a
// lease further ahead than kLeaseCapNs is forged, and counts as expired). Frees what no
// owner explains: a state nobody defines, a word unchanged for kLeaseCapNs. Run
// periodically by the daemon, never by clients.
class SlotReaper {
 public:
  explicit SlotReaper(const SegmentView& view);
  // Returns the number of slots reclaimed. `working(i)`, when given, says whether a
  // dispatch thread of this daemon is handling slot i. A Busy or Abandoned slot that no
  // thread handles, seen twice with the same word, is an orphan (a client wrote that state
  // itself, or died after doing so) and is freed too; without `working`, such slots are
  // left alone (Busy) or freed by owner liveness (Abandoned). Whatever its owner and
  // lease, a slot whose word stayed the same for longer than kLeaseCapNs (first seen by
  // this reaper at least that long ago) is freed, unless a thread handles it or it is
  // Busy and `working` is not given.
  std::uint32_t sweep(std::uint64_t now_ns,
                      const std::function<bool(std::uint32_t)>& working = {});

 private:
  bool reclaim(SlotControl* c, std::uint64_t word);
  SegmentView view_;
  std::uint32_t pidns_;
  // Per slot, the last word seen and when it was first seen (for kLeaseCapNs).
  std::vector<std::uint64_t> seen_word_;
  std::vector<std::uint64_t> seen_since_;
  // A Claimed slot whose lease is still 0 is one whose owner died between the claim CAS
  // and writing the lease; seen twice in a row with the same word, it is reclaimed.
  std::vector<std::uint64_t> unleased_seen_;
  std::vector<std::uint64_t> orphan_seen_;  // Busy/Abandoned words no thread handled
};

// Keeps the header fields only the daemon writes as it wrote them: line 0 (magic,
// versions, sizes, pid), the epoch and the serving state. Clients read them at attach and
// on every call (the state); a peer writing "stopping" or odd sizes would otherwise turn
// every client away until the daemon restarts.
class HeaderGuard {
 public:
  // Takes the daemon's private copy of the header as it is now (before any client can
  // attach, i.e. before the segment is marked serving).
  explicit HeaderGuard(const SegmentView& view);
  // Rewrites whatever differs from the copy, with state kServing; returns true if it had
  // to. Call only while the daemon serves.
  bool restore();

 private:
  SegmentView view_;
  std::array<std::uint8_t, kCacheLine> line0_{};
  std::uint64_t epoch_;
};

}  // namespace estimator::shm
