// SPDX-License-Identifier: Apache-2.0
// The client side of the slot protocol (state diagram in shm/layout.h).
//
// A ClientRing is a thin, stateless view over an attached segment; it is safe to use from
// several threads at once because every slot it hands out is owned by one caller until
// released.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "common/status.h"
#include "shm/segment.h"

namespace estimator::shm {

enum class WaitOutcome {
  kAnswered,      // the slot says answered (the reply is checked by receive())
  kDeadline,      // deadline passed, daemon alive
  kServerGone,    // daemon stopped, died or was replaced
  kLost,          // the slot no longer names this claim (reclaimed, or a peer wrote it)
};

// A slot this process claimed: its index and the generation its claim gave the word.
struct Claim {
  std::uint32_t slot = 0;
  std::uint16_t generation = 0;
};

// A reply copied out of its slot, after its seal was checked.
struct ReplyBytes {
  std::unique_ptr<std::uint8_t[]> data;
  std::uint32_t size = 0;
};

class ClientRing {
 public:
  explicit ClientRing(const ClientSegment& segment);

  // Takes a free slot (one CAS) and records this process as its owner with a lease that
  // ends at lease_deadline_ns. Retries until deadline_ns while every slot is busy.
  Result<Claim> claim(std::uint64_t deadline_ns, std::uint64_t lease_deadline_ns,
                      std::uint32_t hint);

  // Copies `request` (encoded in the caller's private memory) to the end of the slot's
  // request area, hands it to the daemon with `nonce` and rings the doorbell only if the
  // daemon sleeps. Fails if the request does not fit or the slot was reclaimed.
  Status publish(const Claim& claim, std::span<const std::uint8_t> request,
                 std::uint64_t nonce);

  // Spins up to spin_ns, then blocks, until the slot is answered or deadline_ns passes.
  // Checks the daemon's liveness while blocked so that a dead daemon is reported as
  // kServerGone well before a long deadline.
  WaitOutcome wait_answer(const Claim& claim, std::uint64_t deadline_ns,
                          std::uint64_t spin_ns);

  // Copies the reply out of an answered slot and returns it only if its seal answers
  // this very request: the nonce and generation echoed are this claim's, the request
  // digest is `request_digest` (the caller's, of the bytes it encoded, keyed by the
  // nonce), and the check value verifies over the copy. Otherwise kIntegrity: another
  // process wrote the slot.
  Result<ReplyBytes> receive(const Claim& claim, std::uint64_t nonce,
                             std::uint64_t request_digest) const;
  // The same into caller-provided storage (no allocation); returns the reply's length.
  // `out` must hold response_capacity() bytes, or kTooLarge when the reply does not fit.
  Result<std::uint32_t> receive_into(const Claim& claim, std::uint64_t nonce,
                                     std::uint64_t request_digest,
                                     std::span<std::uint8_t> out) const;

  // Extends the lease of an answered slot while its reply is read (clients in another
  // pid namespace are reclaimed by lease alone).
  void extend_lease(const Claim& claim, std::uint64_t lease_deadline_ns);
  // Returns an answered slot to the ring (the reply must no longer be read).
  void release(const Claim& claim);
  // Gives a slot back after a failure or timeout in any client-owned state; if the daemon
  // is working on it, marks it abandoned so the daemon frees it when done.
  void abandon(const Claim& claim);

  // The daemon is serving this segment: state kServing, fresh heartbeat, pid alive.
  bool server_alive() const;

  const SegmentView& view() const { return view_; }

 private:
  // The slot's word names this claim (our pid, its generation).
  bool mine(SlotWord w, const Claim& claim) const {
    return w.pid == pid_ && w.generation == claim.generation;
  }

  SegmentView view_;
  std::int32_t pid_;
  std::uint32_t pidns_;
  std::int32_t server_pid_;
  bool same_pidns_as_server_;
};

// A heartbeat older than this means the daemon is gone (it beats every 250 ms).
inline constexpr std::uint64_t kHeartbeatStaleNs = 2'000'000'000ULL;

}  // namespace estimator::shm
