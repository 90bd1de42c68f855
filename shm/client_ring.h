// The client side of the slot protocol (state diagram in shm/layout.h).
//
// A ClientRing is a thin, stateless view over an attached segment; it is safe to use from
// several threads at once because every slot it hands out is owned by one caller until
// released.
#pragma once

#include <cstdint>

#include "common/status.h"
#include "shm/segment.h"

namespace estimator::shm {

enum class WaitOutcome {
  kAnswered,      // the response is in the slot
  kDeadline,      // deadline passed, daemon alive
  kServerGone,    // daemon stopped, died or was replaced
};

class ClientRing {
 public:
  explicit ClientRing(const ClientSegment& segment);

  // Takes a free slot (one CAS) and records this process as its owner with a lease that
  // ends at lease_deadline_ns. Retries until deadline_ns while every slot is busy.
  Result<std::uint32_t> claim(std::uint64_t deadline_ns, std::uint64_t lease_deadline_ns,
                              std::uint32_t hint);

  // Hands the request at [offset, offset+len) of the slot's request area to the daemon
  // and rings the doorbell only if the daemon sleeps. Fails if the slot was reclaimed.
  Status publish(std::uint32_t slot, std::uint32_t offset, std::uint32_t len);

  // Spins up to spin_ns, then blocks, until the daemon answers or deadline_ns passes.
  // Checks the daemon's liveness while blocked so that a dead daemon is reported as
  // kServerGone well before a long deadline.
  WaitOutcome wait_answer(std::uint32_t slot, std::uint64_t deadline_ns,
                          std::uint64_t spin_ns);

  // Extends the lease of an answered slot while its reply is read (clients in another
  // pid namespace are reclaimed by lease alone).
  void extend_lease(std::uint32_t slot, std::uint64_t lease_deadline_ns);
  // Returns an answered slot to the ring (the reply must no longer be read).
  void release(std::uint32_t slot);
  // Gives a slot back after a failure or timeout in any client-owned state; if the daemon
  // is working on it, marks it abandoned so the daemon frees it when done.
  void abandon(std::uint32_t slot);

  // The daemon is serving this segment: state kServing, fresh heartbeat, pid alive.
  bool server_alive() const;

  const SegmentView& view() const { return view_; }

 private:
  SegmentView view_;
  std::int32_t pid_;
  std::uint32_t pidns_;
  std::int32_t server_pid_;
  bool same_pidns_as_server_;
};

// A heartbeat older than this means the daemon is gone (it beats every 250 ms).
inline constexpr std::uint64_t kHeartbeatStaleNs = 2'000'000'000ULL;

}  // namespace estimator::shm
