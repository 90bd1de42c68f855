// SPDX-License-Identifier: Apache-2.0
#include "shm/server_ring.h"

#include <bit>
#include <cstring>

#include "shm/reply_seal.h"
#include "shm/wait.h"

namespace estimator::shm {
namespace {

// The most a dispatch thread's timer is set early to make up for late wake-ups.
constexpr std::uint64_t kMaxWakeLateNs = 2'000'000;

}  // namespace

ServerRing::ServerRing(const SegmentView& view, bool predict, unsigned thread, unsigned threads)
    : view_(view),
      predict_(predict),
      mask_words_((view.slot_count() + 63) / 64),
      last_word_bits_(view.slot_count() % 64 == 0 ? ~0ULL : (1ULL << (view.slot_count() % 64)) - 1),
      request_copy_(view.request_capacity()),
      likely_word_(view.slot_count(), SlotWord{SlotState::kReady, 0, 0}.pack()),
      sleep_bit_(1ULL << (thread % kMaxDispatchThreads)),
      cleared_on_wake_(sleep_bit_ |
                       (threads >= kMaxDispatchThreads ? 0 : ~0ULL << threads)) {}

bool ServerRing::any_pending() const {
  for (std::uint64_t p : pending_) {
    if (p != 0) return true;
  }
  // Only the bits of slots that exist: take() never clears the others, so a peer setting
  // one would otherwise keep this true, and the thread spinning, for good.
  const SegmentHeader& h = view_.header();
  for (std::uint32_t w = 0; w < mask_words_; ++w) {
    const std::uint64_t valid = w + 1 == mask_words_ ? last_word_bits_ : ~0ULL;
    if ((h.ready_mask[w].load(std::memory_order_relaxed) & valid) != 0) return true;
  }
  return false;
}

std::optional<ServerRing::Taken> ServerRing::take() {
  // Slots this thread's scan found first: no other thread knows of them.
  for (std::uint32_t w = 0; w < mask_words_; ++w) {
    while (pending_[w] != 0) {
      const auto bit = static_cast<std::uint32_t>(std::countr_zero(pending_[w]));
      pending_[w] &= pending_[w] - 1;
      if (auto taken = take_slot(w * 64 + bit)) return taken;
    }
  }
  // Then one bit of the shared mask, from next_ on, wrapping back to the bits below it.
  // Its fetch_and leaves the other bits to the other dispatch threads; a bit another
  // thread cleared first is skipped. Bits beyond the ring are never cleared (any_pending()
  // ignores them).
  SegmentHeader& h = view_.header();
  const std::uint32_t first = next_ / 64;
  const std::uint64_t from_next = ~0ULL << (next_ % 64);
  for (std::uint32_t k = 0; k <= mask_words_; ++k) {
    const std::uint32_t w = (first + k) % mask_words_;
    std::uint64_t bits = h.ready_mask[w].load(std::memory_order_relaxed) &
                         (w + 1 == mask_words_ ? last_word_bits_ : ~0ULL);
    if (k == 0) bits &= from_next;
    if (k == mask_words_) bits &= ~from_next;
    while (bits != 0) {
      const auto b = static_cast<std::uint32_t>(std::countr_zero(bits));
      const std::uint64_t bit = 1ULL << b;
      const std::uint64_t before = h.ready_mask[w].fetch_and(~bit, std::memory_order_acquire);
      bits &= before & ~bit;
      if ((before & bit) == 0) continue;  // another thread's
      const std::uint32_t i = w * 64 + b;
      if (auto taken = take_slot(i)) {
        next_ = i + 1 == view_.slot_count() ? 0 : i + 1;
        return taken;
      }
    }
  }
  return std::nullopt;
}

std::optional<ServerRing::Taken> ServerRing::take_slot(std::uint32_t i) {
  SegmentHeader& h = view_.header();
  SlotControl* c = view_.slot(i).control;
  // First a CAS from the word the slot's last client would publish next (the one taken
  // last, a generation on): when right, that one locked instruction takes the line from
  // the client's cache, where a load fetches it shared and the CAS must then take it
  // from the client (which spins on it): two round trips between cores. When wrong, it returns
  // the word, and the slot is taken from that as before. The guess is always a Ready word:
  // a CAS from it succeeds only on a slot that was Ready.
  std::uint64_t word = likely_word_[i];
  SlotWord sw = SlotWord::unpack(word);
  if (!c->word.compare_exchange_strong(word, sw.with(SlotState::kBusy).pack(),
                                       std::memory_order_acquire)) {
    sw = SlotWord::unpack(word);
    if (sw.state != SlotState::kReady) return std::nullopt;  // stale bit, withdrawn or reclaimed
    if (!c->word.compare_exchange_strong(word, sw.with(SlotState::kBusy).pack(),
                                         std::memory_order_acquire)) {
      return std::nullopt;
    }
  }
  const std::uint64_t busy = sw.with(SlotState::kBusy).pack();
  likely_word_[i] = SlotWord{SlotState::kReady, static_cast<std::uint16_t>(sw.generation + 1),
                             sw.pid}.pack();
  last_client_cpu_ = c->client_cpu.load(std::memory_order_relaxed);
  idle_ = false;
  if (predict_) {
    // When the client published, from its stamp if plausible (at most 1 s before now,
    // the stamp wrapping every 71 minutes); else now.
    const std::uint64_t now = monotonic_ns();
    const std::uint32_t ago_us = static_cast<std::uint32_t>(now / 1000) - c->publish_us;
    const std::uint64_t published = ago_us <= 1'000'000 ? now - std::uint64_t{ago_us} * 1000 : now;
    last_key_ = ArrivalPredictor::client_key(c->owner_pidns, sw.pid, i);
    predictor_.arrived(last_key_, published);
  }
  // Stored only when it changes: the line is read by spinning clients, and a store on
  // every request would pull it away from them each time.
  if (const auto cpu = static_cast<std::uint32_t>(sched_getcpu());
      h.server_cpu.load(std::memory_order_relaxed) != cpu) {
    h.server_cpu.store(cpu, std::memory_order_relaxed);
  }
  // Read once; a length beyond the area leaves the request empty (an error reply).
  const std::uint32_t len = c->request_len;
  const std::uint32_t cap = view_.request_capacity();
  std::span<const std::uint8_t> request;
  if (len <= cap) {
    std::memcpy(request_copy_.data(), view_.slot(i).request + (cap - len), len);
    request = {request_copy_.data(), len};
  }
  last_len_ = request.size();
  const std::uint64_t nonce = c->request_nonce;
  return Taken{i, busy, nonce, request, digest(request, nonce)};
}

void ServerRing::answer(const Taken& taken, std::span<const std::uint8_t> reply) {
  const SlotRef ref = view_.slot(taken.slot);
  SlotControl* c = ref.control;
  const std::uint32_t cap = view_.response_capacity();
  if (reply.size() > cap) reply = {};  // cannot happen: replies are built to fit
  const auto generation = SlotWord::unpack(taken.word).generation;
  if (!reply.empty()) std::memcpy(ref.response + (cap - reply.size()), reply.data(), reply.size());
  c->response_len = static_cast<std::uint32_t>(reply.size());
  c->response_nonce = taken.nonce;
  c->request_digest = taken.request_digest;
  c->response_generation = generation;
  c->response_check = reply_check(taken.nonce, generation, taken.request_digest, reply);
  std::uint64_t word = taken.word;
  if (c->word.compare_exchange_strong(word, SlotWord::unpack(word).with(SlotState::kAnswered).pack(),
                                      std::memory_order_seq_cst)) {
    // seq_cst pairs with the client's "set sleeping, then re-check the state".
    if (c->client_sleeping.load(std::memory_order_seq_cst) != 0) sem_post_shared(&c->response_ready);
    return;
  }
  // The client gave up (Abandoned): free the slot. Any other word is no longer this
  // request's (a peer wrote it; the reaper deals with it).
  if (word == SlotWord::unpack(taken.word).with(SlotState::kAbandoned).pack()) {
    c->word.compare_exchange_strong(word, SlotWord{SlotState::kFree, generation, 0}.pack(),
                                    std::memory_order_release);
  }
}

bool ServerRing::sleep_until(std::uint64_t deadline_ns, bool& woken) {
  SegmentHeader& h = view_.header();
  h.server_sleeping.fetch_or(sleep_bit_, std::memory_order_seq_cst);
  woken = any_pending();  // re-check after announcing sleep (see ClientRing::publish)
  if (!woken) woken = sem_wait_until(&h.doorbell, deadline_ns);
  // Bits of threads this daemon does not have are a peer's: cleared with ours, so that a
  // forged mask makes clients ring needlessly only until the next wake-up.
  h.server_sleeping.fetch_and(~cleared_on_wake_, std::memory_order_relaxed);
  return any_pending();
}

bool ServerRing::wait_for_work(std::uint64_t spin_ns, std::uint64_t timeout_ns,
                               const std::function<void()>& on_window) {
  // The client we answered last is the likeliest to call next; if it runs on our CPU,
  // our spinning would only stand in its way.
  // After an idle timeout nobody is calling: sleep straight away (idle costs no CPU).
  // A client calling every millisecond or more will not call within the spin either.
  const auto client_cpu = [this] { return last_client_cpu_; };
  const auto pending = [this] { return any_pending(); };
  const bool periodic = predict_ && predictor_.period_of(last_key_) >= std::max<std::uint64_t>(
                                                                         20 * spin_ns, 1'000'000);
  if (spin_until(pending, idle_ || periodic ? 0 : spin_ns, client_cpu)) return true;
  const std::uint64_t give_up = monotonic_ns() + timeout_ns;
  for (;;) {
    const std::uint64_t now = monotonic_ns();
    const std::optional<ArrivalPredictor::Window> w =
        predict_ ? predictor_.next_window(now) : std::nullopt;
    std::uint64_t deadline = give_up;
    bool window_timer = false;
    // The timer is set early by how late this thread's timer wake-ups have been (waiting
    // for a CPU costs none, only the spin once running does), by at most the window's
    // length, so that a wake-up on time spins at most twice the window.
    const std::uint64_t early = w ? std::min(wake_late_ns_, w->end_ns - w->start_ns) : 0;
    if (w && w->start_ns <= now + early) {
      // In a window: spin through it. Not stopped when the client ran on this CPU last
      // time, as after an answer: it sleeps until its tick, and the kernel wakes it on
      // an idle CPU, or on ours ahead of a spinner that has used its share; the window
      // bounds what our spinning can cost it.
      windows_.fetch_add(1, std::memory_order_relaxed);
      if (on_window) on_window();
      if (spin_until_time(pending, w->end_ns, [] { return kUnknownCpu; })) {
        idle_ = false;
        return true;
      }
      continue;  // next_window() counts the miss and stops predicting that client
    }
    if (w && w->start_ns - early < give_up) {
      deadline = w->start_ns - early;
      window_timer = true;
    }
    if (now >= give_up) {
      idle_ = true;
      return false;
    }
    bool woken = false;
    const bool work = sleep_until(deadline, woken);
    if (window_timer && !woken) {
      // A slow average of the lateness, at most kMaxWakeLateNs (a wake-up later than
      // that is a stall, not the machine's habit).
      const std::uint64_t late = std::min(monotonic_ns() - std::min(monotonic_ns(), deadline),
                                          kMaxWakeLateNs);
      wake_late_ns_ = late > wake_late_ns_ ? wake_late_ns_ + (late - wake_late_ns_) / 4
                                           : wake_late_ns_ - (wake_late_ns_ - late) / 4;
    }
    if (work) {
      idle_ = false;
      return true;
    }
    if (woken) {
      // A doorbell with nothing behind it: a post another thread's take() already
      // answered, or a count a peer wrote. Drained, and no spin after it, so that a forged
      // count of billions cannot keep the daemon busy. A request it hid is found by the
      // caller's scan (false means: scan).
      sem_drain(&view_.header().doorbell);
      idle_ = true;
      return false;
    }
    if (deadline == give_up) {
      idle_ = true;
      return false;
    }
  }
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
      seen_word_(view.slot_count(), 0),
      seen_since_(view.slot_count(), 0),
      unleased_seen_(view.slot_count(), 0),
      orphan_seen_(view.slot_count(), 0) {}

bool SlotReaper::reclaim(SlotControl* c, std::uint64_t word) {
  const SlotWord sw = SlotWord::unpack(word);
  if (!c->word.compare_exchange_strong(word, SlotWord{SlotState::kFree, sw.generation, 0}.pack(),
                                       std::memory_order_acq_rel)) {
    return false;
  }
  c->lease_deadline_ns.store(0, std::memory_order_relaxed);
  return true;
}

std::uint32_t SlotReaper::sweep(std::uint64_t now_ns,
                                const std::function<bool(std::uint32_t)>& working) {
  std::uint32_t reclaimed = 0;
  for (std::uint32_t i = 0; i < view_.slot_count(); ++i) {
    SlotControl* c = view_.slot(i).control;
    const std::uint64_t word = c->word.load(std::memory_order_acquire);
    const SlotWord sw = SlotWord::unpack(word);
    if (word != seen_word_[i]) {
      seen_word_[i] = word;
      seen_since_[i] = now_ns;
    }
    const bool in_hand = working && working(i);
    // The cap comes first: pid 1 is always alive and a lease can say "forever", but no
    // honest owner leaves its word unchanged this long.
    if (sw.state != SlotState::kFree && !in_hand && (working || sw.state != SlotState::kBusy) &&
        now_ns > seen_since_[i] + kLeaseCapNs) {
      if (reclaim(c, word)) ++reclaimed;
      orphan_seen_[i] = unleased_seen_[i] = 0;
      continue;
    }
    const bool unknown = static_cast<std::uint8_t>(sw.state) > static_cast<std::uint8_t>(SlotState::kAbandoned);
    if (unknown || (working && (sw.state == SlotState::kBusy || sw.state == SlotState::kAbandoned))) {
      // A thread marks the slot it handles just after taking it, so a slot seen Busy once
      // without a thread may be one being taken; seen twice with the same word (the
      // generation changes with every claim), it is nobody's: without this, a client that
      // writes Busy and dies would take the slot out of the ring for good. A state no
      // party defines is nobody's either.
      unleased_seen_[i] = 0;
      if (in_hand) {
        orphan_seen_[i] = 0;
      } else if (orphan_seen_[i] != word) {
        orphan_seen_[i] = word;
      } else if (reclaim(c, word)) {
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
    } else if (lease != 0 && (now_ns > lease || lease - now_ns > kLeaseCapNs)) {
      // Another pid namespace: its pids mean nothing here; trust the lease, unless it
      // reaches further than any honest client's (a forged "forever").
      dead = true;
    }
    if (lease == 0) {
      dead = dead || unleased_seen_[i] == word;
      unleased_seen_[i] = word;
    } else {
      unleased_seen_[i] = 0;
    }
    if (dead && reclaim(c, word)) {
      unleased_seen_[i] = 0;
      ++reclaimed;
    }
  }
  return reclaimed;
}

HeaderGuard::HeaderGuard(const SegmentView& view) : view_(view), epoch_(view.header().epoch) {
  std::memcpy(line0_.data(), &view.header(), kCacheLine);
}

bool HeaderGuard::restore() {
  SegmentHeader& h = view_.header();
  bool rewrote = false;
  if (std::memcmp(&h, line0_.data(), kCacheLine) != 0) {
    std::memcpy(static_cast<void*>(&h), line0_.data(), kCacheLine);
    rewrote = true;
  }
  if (h.epoch != epoch_) {
    h.epoch = epoch_;
    rewrote = true;
  }
  constexpr auto kServing = static_cast<std::uint32_t>(ServerState::kServing);
  if (h.state.load(std::memory_order_relaxed) != kServing) {
    h.state.store(kServing, std::memory_order_release);
    rewrote = true;
  }
  return rewrote;
}

}  // namespace estimator::shm
