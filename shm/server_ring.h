// The daemon side of the slot protocol (state diagram in shm/layout.h).
//
// One ServerRing per dispatch thread. Published slots are found through the header's
// ready mask (one cache line to poll while spinning); a full scan of slot states on
// every idle timeout recovers requests whose mask bit was lost (a client killed between
// publishing and setting the bit, or a hostile one clearing bits).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "shm/layout.h"
#include "shm/segment.h"

namespace estimator::shm {

class ServerRing {
 public:
  explicit ServerRing(const SegmentView& view);

  // Takes the next published slot (Ready -> Busy) and returns its index; nullopt when
  // nothing is pending. The request bytes are [offset, offset+len) of its request area,
  // as read once by take() into offset/len (bounds are the caller's to check).
  struct Taken {
    std::uint32_t slot;
    std::uint32_t offset;
    std::uint32_t len;
  };
  std::optional<Taken> take();

  // Publishes the response at [offset, offset+len) of the slot's response area and wakes
  // the client if it sleeps. A slot the client abandoned meanwhile is freed instead.
  void answer(std::uint32_t slot, std::uint32_t offset, std::uint32_t len);

  // Spins up to spin_ns for a published slot, then sleeps on the doorbell until
  // timeout_ns from now. Returns false when no slot is pending: on timeout, or after a
  // wake-up with nothing behind it, which drains the doorbell (the caller then runs
  // scan()).
  bool wait_for_work(std::uint64_t spin_ns, std::uint64_t timeout_ns);

  // Marks every slot found in state Ready as pending, whatever the mask says.
  void scan();

 private:
  bool any_pending() const;
  SegmentView view_;
  std::array<std::uint64_t, kMaskWords> pending_{};  // this thread's share of the mask
  std::uint32_t last_client_cpu_ = 0xFFFFFFFFu;      // where the last request came from
  bool idle_ = false;                                // the last wait timed out
};

// Frees slots whose owner died: in the daemon's pid namespace when the owner's pid is
// gone; from another namespace (a sidecar container), when the owner's lease expired.
// Run periodically by the daemon, never by clients.
class SlotReaper {
 public:
  explicit SlotReaper(const SegmentView& view);
  // Returns the number of slots reclaimed. `working(i)`, when given, says whether a
  // dispatch thread of this daemon is handling slot i. A Busy or Abandoned slot that no
  // thread handles, seen twice with the same word, is an orphan (a client wrote that state
  // itself, or died after doing so) and is freed too; without `working`, such slots are
  // left alone (Busy) or freed by owner liveness (Abandoned).
  std::uint32_t sweep(std::uint64_t now_ns,
                      const std::function<bool(std::uint32_t)>& working = {});

 private:
  SegmentView view_;
  std::uint32_t pidns_;
  // A Claimed slot whose lease is still 0 is one whose owner died between the claim CAS
  // and writing the lease; seen twice in a row with the same word, it is reclaimed.
  std::vector<std::uint64_t> unleased_seen_;
  std::vector<std::uint64_t> orphan_seen_;  // Busy/Abandoned words no thread handled
};

}  // namespace estimator::shm
