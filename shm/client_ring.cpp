#include "shm/client_ring.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>

#include "shm/wait.h"

namespace estimator::shm {
namespace {

// Blocked clients wake this often to check that the daemon is still there.
constexpr std::uint64_t kLivenessCheckNs = 50'000'000ULL;

}  // namespace

ClientRing::ClientRing(const ClientSegment& segment)
    : view_(segment.view()),
      pid_(getpid()),
      pidns_(pid_namespace_id()),
      server_pid_(segment.server_pid()),
      same_pidns_as_server_(pidns_ != 0 && pidns_ == segment.server_pidns()) {}

Result<std::uint32_t> ClientRing::claim(std::uint64_t deadline_ns,
                                        std::uint64_t lease_deadline_ns, std::uint32_t hint) {
  const std::uint32_t n = view_.slot_count();
  for (unsigned attempt = 0;; ++attempt) {
    for (std::uint32_t k = 0; k < n; ++k) {
      const std::uint32_t i = (hint + k) % n;
      SlotControl* c = view_.slot(i).control;
      std::uint64_t w = c->word.load(std::memory_order_relaxed);
      const SlotWord sw = SlotWord::unpack(w);
      if (sw.state != SlotState::kFree) continue;
      const SlotWord mine{SlotState::kClaimed, static_cast<std::uint16_t>(sw.generation + 1),
                          pid_};
      if (!c->word.compare_exchange_strong(w, mine.pack(), std::memory_order_acquire)) {
        continue;
      }
      c->lease_deadline_ns.store(lease_deadline_ns, std::memory_order_relaxed);
      c->owner_pidns = pidns_;
      c->client_sleeping.store(0, std::memory_order_relaxed);
      sem_drain(&c->response_ready);
      return i;
    }
    if (!server_alive()) {
      return Status(Code::kUnavailable, "estimator unavailable: daemon is not serving");
    }
    if (monotonic_ns() >= deadline_ns) {
      return Status(Code::kResourceExhausted,
                    "all " + std::to_string(n) + " slots are busy; raise --slots");
    }
    if (attempt < 16) {
      sched_yield();
    } else {
      usleep(50);
    }
  }
}

Status ClientRing::publish(std::uint32_t slot, std::uint32_t offset, std::uint32_t len) {
  SlotControl* c = view_.slot(slot).control;
  c->request_offset = offset;
  c->request_len = len;
  c->client_cpu.store(static_cast<std::uint32_t>(sched_getcpu()), std::memory_order_relaxed);
  std::uint64_t w = c->word.load(std::memory_order_relaxed);
  const SlotWord sw = SlotWord::unpack(w);
  if (sw.state != SlotState::kClaimed || sw.pid != pid_ ||
      !c->word.compare_exchange_strong(w, sw.with(SlotState::kReady).pack(),
                                       std::memory_order_seq_cst)) {
    return Status(Code::kUnavailable, "slot reclaimed by the daemon before publishing");
  }
  SegmentHeader& h = view_.header();
  // seq_cst pairs with the daemon's "set sleeping, then re-check the mask": at least one
  // of us sees the other, so a request is never left unnoticed while the daemon sleeps.
  h.ready_mask[slot / 64].fetch_or(1ULL << (slot % 64), std::memory_order_seq_cst);
  if (h.server_sleeping.load(std::memory_order_seq_cst) != 0) sem_post_shared(&h.doorbell);
  return Status::Ok();
}

WaitOutcome ClientRing::wait_answer(std::uint32_t slot, std::uint64_t deadline_ns,
                                    std::uint64_t spin_ns) {
  SlotControl* c = view_.slot(slot).control;
  auto answered = [c] {
    return SlotWord::unpack(c->word.load(std::memory_order_acquire)).state ==
           SlotState::kAnswered;
  };
  const SegmentHeader& h = view_.header();
  auto server_cpu = [&h] { return h.server_cpu.load(std::memory_order_relaxed); };
  if (answered()) return WaitOutcome::kAnswered;
  if (spin_ns != 0 &&
      spin_until_time(answered, std::min(monotonic_ns() + spin_ns, deadline_ns), server_cpu)) {
    return WaitOutcome::kAnswered;
  }
  for (;;) {
    c->client_sleeping.store(1, std::memory_order_seq_cst);
    if (answered()) break;
    const std::uint64_t now = monotonic_ns();
    if (now >= deadline_ns) {
      c->client_sleeping.store(0, std::memory_order_relaxed);
      return server_alive() ? WaitOutcome::kDeadline : WaitOutcome::kServerGone;
    }
    sem_wait_until(&c->response_ready, std::min(deadline_ns, now + kLivenessCheckNs));
    if (answered()) break;
    if (!server_alive()) {
      c->client_sleeping.store(0, std::memory_order_relaxed);
      return WaitOutcome::kServerGone;
    }
  }
  c->client_sleeping.store(0, std::memory_order_relaxed);
  return WaitOutcome::kAnswered;
}

void ClientRing::extend_lease(std::uint32_t slot, std::uint64_t lease_deadline_ns) {
  view_.slot(slot).control->lease_deadline_ns.store(lease_deadline_ns,
                                                    std::memory_order_relaxed);
}

void ClientRing::release(std::uint32_t slot) {
  SlotControl* c = view_.slot(slot).control;
  std::uint64_t w = c->word.load(std::memory_order_relaxed);
  const SlotWord sw = SlotWord::unpack(w);
  if (sw.pid != pid_ || sw.state == SlotState::kFree || sw.state == SlotState::kBusy) return;
  c->lease_deadline_ns.store(0, std::memory_order_relaxed);
  // CAS, not store: if the daemon reclaimed the slot meanwhile it may belong to another.
  c->word.compare_exchange_strong(w, SlotWord{SlotState::kFree, sw.generation, 0}.pack(),
                                  std::memory_order_release);
}

void ClientRing::abandon(std::uint32_t slot) {
  SlotControl* c = view_.slot(slot).control;
  for (;;) {
    std::uint64_t w = c->word.load(std::memory_order_acquire);
    const SlotWord sw = SlotWord::unpack(w);
    if (sw.pid != pid_) return;  // reclaimed and perhaps reused: not ours any more
    switch (sw.state) {
      case SlotState::kClaimed:
      case SlotState::kReady:
      case SlotState::kAnswered:
        c->lease_deadline_ns.store(0, std::memory_order_relaxed);
        if (c->word.compare_exchange_weak(w, SlotWord{SlotState::kFree, sw.generation, 0}.pack(),
                                          std::memory_order_release)) {
          return;
        }
        break;  // the daemon moved it (Ready -> Busy): look again
      case SlotState::kBusy:
        if (c->word.compare_exchange_weak(w, sw.with(SlotState::kAbandoned).pack(),
                                          std::memory_order_release)) {
          return;
        }
        break;
      case SlotState::kFree:
      case SlotState::kAbandoned:
        return;
    }
  }
}

bool ClientRing::server_alive() const {
  SegmentHeader& h = view_.header();
  if (h.state.load(std::memory_order_acquire) !=
      static_cast<std::uint32_t>(ServerState::kServing)) {
    return false;
  }
  const std::uint64_t beat = h.heartbeat_ns.load(std::memory_order_relaxed);
  const std::uint64_t now = monotonic_ns();
  if (now > beat && now - beat > kHeartbeatStaleNs) return false;
  if (same_pidns_as_server_ && !process_alive(server_pid_)) return false;
  return true;
}

}  // namespace estimator::shm
