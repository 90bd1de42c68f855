#include "shm/server_ring.h"

#include <bit>

#include "shm/wait.h"

namespace estimator::shm {

ServerRing::ServerRing(const SegmentView& view) : view_(view) {}

bool ServerRing::any_pending() const {
  for (std::uint64_t p : pending_) {
    if (p != 0) return true;
  }
  const SegmentHeader& h = view_.header();
  for (const auto& m : h.ready_mask) {
    if (m.load(std::memory_order_relaxed) != 0) return true;
  }
  return false;
}

std::optional<ServerRing::Taken> ServerRing::take() {
  SegmentHeader& h = view_.header();
  const std::uint32_t words = (view_.slot_count() + 63) / 64;
  for (std::uint32_t w = 0; w < words; ++w) {
    if (h.ready_mask[w].load(std::memory_order_relaxed) != 0) {
      pending_[w] |= h.ready_mask[w].exchange(0, std::memory_order_acquire);
    }
    while (pending_[w] != 0) {
      const auto bit = static_cast<std::uint32_t>(std::countr_zero(pending_[w]));
      pending_[w] &= pending_[w] - 1;
      const std::uint32_t i = w * 64 + bit;
      if (i >= view_.slot_count()) continue;  // a hostile bit beyond the ring
      SlotControl* c = view_.slot(i).control;
      std::uint64_t word = c->word.load(std::memory_order_acquire);
      const SlotWord sw = SlotWord::unpack(word);
      if (sw.state != SlotState::kReady) continue;  // stale bit, withdrawn or reclaimed
      if (!c->word.compare_exchange_strong(word, sw.with(SlotState::kBusy).pack(),
                                           std::memory_order_acquire)) {
        continue;
      }
      last_client_cpu_ = c->client_cpu.load(std::memory_order_relaxed);
      idle_ = false;
      // Stored only when it changes: the line is read by spinning clients, and a store on
      // every request would pull it away from them each time.
      if (const auto cpu = static_cast<std::uint32_t>(sched_getcpu());
          h.server_cpu.load(std::memory_order_relaxed) != cpu) {
        h.server_cpu.store(cpu, std::memory_order_relaxed);
      }
      return Taken{i, c->request_offset, c->request_len};
    }
  }
  return std::nullopt;
}

void ServerRing::answer(std::uint32_t slot, std::uint32_t offset, std::uint32_t len) {
  SlotControl* c = view_.slot(slot).control;
  c->response_offset = offset;
  c->response_len = len;
  std::uint64_t word = c->word.load(std::memory_order_relaxed);
  SlotWord sw = SlotWord::unpack(word);
  if (sw.state == SlotState::kBusy &&
      c->word.compare_exchange_strong(word, sw.with(SlotState::kAnswered).pack(),
                                      std::memory_order_seq_cst)) {
    // seq_cst pairs with the client's "set sleeping, then re-check the state".
    if (c->client_sleeping.load(std::memory_order_seq_cst) != 0) sem_post_shared(&c->response_ready);
    return;
  }
  // The client gave up (Abandoned) or something scribbled on the word: free the slot
  // unless it already moved on to a new owner.
  sw = SlotWord::unpack(word);
  if (sw.state == SlotState::kAbandoned || sw.state == SlotState::kBusy) {
    c->word.compare_exchange_strong(word, SlotWord{SlotState::kFree, sw.generation, 0}.pack(),
                                    std::memory_order_release);
  }
}

bool ServerRing::wait_for_work(std::uint64_t spin_ns, std::uint64_t timeout_ns) {
  // The client we answered last is the likeliest to call next; if it runs on our CPU,
  // our spinning would only stand in its way.
  // After an idle timeout nobody is calling: sleep straight away (idle costs no CPU).
  if (spin_until([this] { return any_pending(); }, idle_ ? 0 : spin_ns,
                 [this] { return last_client_cpu_; })) {
    return true;
  }
  SegmentHeader& h = view_.header();
  h.server_sleeping.store(1, std::memory_order_seq_cst);
  bool woken = any_pending();  // re-check after announcing sleep (see ClientRing::publish)
  if (!woken) woken = sem_wait_until(&h.doorbell, monotonic_ns() + timeout_ns);
  h.server_sleeping.store(0, std::memory_order_relaxed);
  const bool work = any_pending();
  // A doorbell with nothing behind it: a post another thread's take() already answered, or
  // a count a peer wrote. Drained, and no spin after it, so that a forged count of
  // billions cannot keep the daemon busy. A request it hid is found by the caller's scan
  // (false means: scan).
  if (woken && !work) sem_drain(&h.doorbell);
  idle_ = !work;
  return work;
}

void ServerRing::scan() {
  for (std::uint32_t i = 0; i < view_.slot_count(); ++i) {
    const SlotWord sw = SlotWord::unpack(view_.slot(i).control->word.load(
        std::memory_order_relaxed));
    if (sw.state == SlotState::kReady) pending_[i / 64] |= 1ULL << (i % 64);
  }
}

SlotReaper::SlotReaper(const SegmentView& view)
    : view_(view),
      pidns_(pid_namespace_id()),
      unleased_seen_(view.slot_count(), 0),
      orphan_seen_(view.slot_count(), 0) {}

std::uint32_t SlotReaper::sweep(std::uint64_t now_ns,
                                const std::function<bool(std::uint32_t)>& working) {
  std::uint32_t reclaimed = 0;
  for (std::uint32_t i = 0; i < view_.slot_count(); ++i) {
    SlotControl* c = view_.slot(i).control;
    std::uint64_t word = c->word.load(std::memory_order_acquire);
    const SlotWord sw = SlotWord::unpack(word);
    if (working && (sw.state == SlotState::kBusy || sw.state == SlotState::kAbandoned)) {
      // A thread marks the slot it handles just after taking it, so a slot seen Busy once
      // without a thread may be one being taken; seen twice with the same word (the
      // generation changes with every claim), it is nobody's: without this, a client that
      // writes Busy and dies would take the slot out of the ring for good.
      unleased_seen_[i] = 0;
      if (working(i)) {
        orphan_seen_[i] = 0;
      } else if (orphan_seen_[i] != word) {
        orphan_seen_[i] = word;
      } else if (c->word.compare_exchange_strong(
                     word, SlotWord{SlotState::kFree, sw.generation, 0}.pack(),
                     std::memory_order_acq_rel)) {
        c->lease_deadline_ns.store(0, std::memory_order_relaxed);
        orphan_seen_[i] = 0;
        ++reclaimed;
      }
      continue;
    }
    orphan_seen_[i] = 0;
    if (sw.state == SlotState::kFree || sw.state == SlotState::kBusy) {
      unleased_seen_[i] = 0;
      continue;
    }
    const std::uint64_t lease = c->lease_deadline_ns.load(std::memory_order_relaxed);
    const std::uint32_t owner_ns = c->owner_pidns;
    bool dead = false;
    if (owner_ns != 0 && owner_ns == pidns_) {
      dead = !process_alive(sw.pid);  // exact, and a live owner may hold a reply long
    } else if (lease != 0 && now_ns > lease) {
      dead = true;  // another pid namespace: its pids mean nothing here; trust the lease
    }
    if (lease == 0) {
      dead = dead || unleased_seen_[i] == word;
      unleased_seen_[i] = word;
    } else {
      unleased_seen_[i] = 0;
    }
    if (dead && c->word.compare_exchange_strong(
                    word, SlotWord{SlotState::kFree, sw.generation, 0}.pack(),
                    std::memory_order_acq_rel)) {
      c->lease_deadline_ns.store(0, std::memory_order_relaxed);
      unleased_seen_[i] = 0;
      ++reclaimed;
    }
  }
  return reclaimed;
}

}  // namespace estimator::shm
