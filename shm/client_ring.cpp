// SPDX-License-Identifier: Apache-2.0
#include "shm/client_ring.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "shm/reply_seal.h"
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

Result<Claim> ClientRing::claim(std::uint64_t deadline_ns,
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
      return Claim{i, mine.generation};
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

Status ClientRing::publish(const Claim& claim, std::span<const std::uint8_t> request,
                           std::uint64_t nonce) {
  const std::uint32_t cap = view_.request_capacity();
  if (request.size() > cap) {
    return Status(Code::kTooLarge, "request of " + std::to_string(request.size()) +
                                       " bytes exceeds the slot's " + std::to_string(cap));
  }
  const SlotRef ref = view_.slot(claim.slot);
  SlotControl* c = ref.control;
  std::memcpy(ref.request + (cap - request.size()), request.data(), request.size());
  c->request_nonce = nonce;
  c->request_len = static_cast<std::uint32_t>(request.size());
  c->client_cpu.store(static_cast<std::uint32_t>(sched_getcpu()), std::memory_order_relaxed);
  c->publish_us = static_cast<std::uint32_t>(monotonic_ns() / 1000);
  std::uint64_t w = c->word.load(std::memory_order_relaxed);
  const SlotWord sw = SlotWord::unpack(w);
  if (sw.state != SlotState::kClaimed || !mine(sw, claim) ||
      !c->word.compare_exchange_strong(w, sw.with(SlotState::kReady).pack(),
                                       std::memory_order_seq_cst)) {
    return Status(Code::kUnavailable, "slot reclaimed by the daemon before publishing");
  }
  const std::uint32_t slot = claim.slot;
  SegmentHeader& h = view_.header();
  // seq_cst pairs with the daemon's "set sleeping, then re-check the mask": at least one
  // of us sees the other, so a request is never left unnoticed while the daemon sleeps.
  h.ready_mask[slot / 64].fetch_or(1ULL << (slot % 64), std::memory_order_seq_cst);
  if (h.server_sleeping.load(std::memory_order_seq_cst) != 0) sem_post_shared(&h.doorbell);
  return Status::Ok();
}

WaitOutcome ClientRing::wait_answer(const Claim& claim, std::uint64_t deadline_ns,
                                    std::uint64_t spin_ns) {
  SlotControl* c = view_.slot(claim.slot).control;
  // Done when answered, or when the word is no longer ours (reclaimed: nothing will come).
  bool lost = false;
  auto answered = [&] {
    const SlotWord w = SlotWord::unpack(c->word.load(std::memory_order_acquire));
    lost = !mine(w, claim);
    return lost || w.state == SlotState::kAnswered;
  };
  const auto outcome = [&] { return lost ? WaitOutcome::kLost : WaitOutcome::kAnswered; };
  const SegmentHeader& h = view_.header();
  auto server_cpu = [&h] { return h.server_cpu.load(std::memory_order_relaxed); };
  if (answered()) return outcome();
  if (spin_ns != 0 &&
      spin_until_time(answered, std::min(monotonic_ns() + spin_ns, deadline_ns), server_cpu)) {
    return outcome();
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
    // Still not taken after a liveness interval: the daemon may sleep unaware of it (a
    // peer cleared its sleep flag when we published, or our mask bit). Ring again.
    if (SlotWord::unpack(c->word.load(std::memory_order_relaxed)).state == SlotState::kReady) {
      sem_post_shared(&view_.header().doorbell);
    }
  }
  c->client_sleeping.store(0, std::memory_order_relaxed);
  return outcome();
}

Result<ReplyBytes> ClientRing::receive(const Claim& claim, std::uint64_t nonce,
                                       std::uint64_t request_digest) const {
  ReplyBytes out{std::make_unique_for_overwrite<std::uint8_t[]>(view_.response_capacity()), 0};
  auto len = receive_into(claim, nonce, request_digest, {out.data.get(), view_.response_capacity()});
  if (!len.ok()) return len.status();
  out.size = len.value();
  return out;
}

Result<std::uint32_t> ClientRing::receive_into(const Claim& claim, std::uint64_t nonce,
                                               std::uint64_t request_digest,
                                               std::span<std::uint8_t> out) const {
  const SlotRef ref = view_.slot(claim.slot);
  const SlotControl* c = ref.control;
  // Each field read once: a peer may rewrite them while we look.
  const std::uint32_t len = c->response_len;
  const std::uint64_t echoed_nonce = c->response_nonce;
  const std::uint64_t echoed_digest = c->request_digest;
  const std::uint64_t check = c->response_check;
  const std::uint32_t generation = c->response_generation;
  const std::uint32_t cap = view_.response_capacity();
  const auto forged = [&](const char* what) {
    return Status(Code::kIntegrity, "reply in slot " + std::to_string(claim.slot) + " rejected (" +
                                        what + "): another process wrote into the slot");
  };
  if (echoed_nonce != nonce || generation != claim.generation) {
    return forged("not the answer to this request");
  }
  if (echoed_digest != request_digest) return forged("the daemon read other request bytes");
  if (len > cap) return forged("length beyond the response area");
  if (len > out.size()) {
    return Status(Code::kTooLarge, "reply of " + std::to_string(len) + " bytes for a buffer of " +
                                       std::to_string(out.size()));
  }
  if (len != 0) std::memcpy(out.data(), ref.response + (cap - len), len);
  if (reply_check(nonce, generation, request_digest, {out.data(), len}) != check) {
    return forged("reply bytes changed");
  }
  return len;
}

void ClientRing::extend_lease(const Claim& claim, std::uint64_t lease_deadline_ns) {
  view_.slot(claim.slot).control->lease_deadline_ns.store(lease_deadline_ns,
                                                          std::memory_order_relaxed);
}

void ClientRing::release(const Claim& claim) {
  SlotControl* c = view_.slot(claim.slot).control;
  std::uint64_t w = c->word.load(std::memory_order_relaxed);
  const SlotWord sw = SlotWord::unpack(w);
  if (!mine(sw, claim) || sw.state == SlotState::kFree || sw.state == SlotState::kBusy) return;
  c->lease_deadline_ns.store(0, std::memory_order_relaxed);
  // CAS, not store: if the daemon reclaimed the slot meanwhile it may belong to another.
  c->word.compare_exchange_strong(w, SlotWord{SlotState::kFree, sw.generation, 0}.pack(),
                                  std::memory_order_release);
}

void ClientRing::abandon(const Claim& claim) {
  SlotControl* c = view_.slot(claim.slot).control;
  for (;;) {
    std::uint64_t w = c->word.load(std::memory_order_acquire);
    const SlotWord sw = SlotWord::unpack(w);
    if (!mine(sw, claim)) return;  // reclaimed and perhaps reused: not ours any more
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
