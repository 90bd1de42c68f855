// SPDX-License-Identifier: Apache-2.0
// hostile_client: a process that maps the daemon's segment read-write, as every client
// does, and attacks it while honest clients call (tests/integration/reliability_test.cpp).
//
//   hostile_client <shm-name> <seconds> <mode> <seed>
//
// mode "protocol": everything a client can do with its own slots and the shared hints.
//   - its own slots (claimed by CAS like any client), in every way: random request bytes
//     and mutated valid requests, random lengths (in and out of bounds), publishing
//     them, random state words (every state, unknown states, other pids and
//     generations), random leases, random response bytes;
//   - the shared header fields clients write: the ready mask (random bits set and
//     cleared), the doorbell (posts), the sleep flag and CPU hints;
//   - in every slot, including those honest clients hold: the wake-up hints
//     (client_sleeping, client_cpu), spurious posts of the response semaphore, and the
//     request and response lengths.
// mode "forge": the attack that forged answers before the reply seal. It claims slots of
//   its own, plants there copies of the requests other clients have in flight with the
//   next request ids they will use and other matrix values, publishes them, and copies
//   the daemon's genuine answers to those copies (reply bytes, length and the whole
//   seal) into the other clients' slots, marking them answered; in a loop it also
//   rewrites their request lengths and request bytes with its copies. It reads every
//   byte it likes except the other clients' nonces: the guarantee is against writers
//   that cannot see a nonce while its request is in flight (docs/reliability.md).
// mode "chaos": random bytes over the whole segment, header and semaphores included:
//   one pass that walks every byte in order, interleaved with writes at random places.
// mode "pin": in one go, what used to pin the ring and a CPU for good, then exit: every
//   free slot claimed for pid 1 (Claimed, Ready, Answered), for another pid namespace
//   with a lease that never ends, or in states nobody defines; the header forged
//   (state "stopping", epoch, pid, sizes); ready-mask bits set beyond the ring.
//
// Exits 0 after <seconds> (at once for "pin"); 3 if it cannot attach.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "schema/schema_version.h"
#include "schema/wire.h"
#include "shm/client_ring.h"
#include "shm/segment.h"
#include "shm/wait.h"

namespace {

using namespace estimator;
using shm::SlotState;
using shm::SlotWord;

const std::string_view kFeatures[] = {"bpf_cpu_time_ms", "bpf_page_cache_hit", "cpu_cycles"};

class Hostile {
 public:
  Hostile(const shm::SegmentView& view, std::uint64_t seed, std::uint64_t segment_bytes)
      : view_(view), rng_(seed), segment_bytes_(segment_bytes), pid_(getpid()) {}

  void protocol_round() {
    switch (pick(12)) {
      case 0: claim(); break;
      case 1: case 2: publish_garbage(); break;
      case 3: scribble_own_word(); break;
      case 4: scribble_own_lease(); break;
      case 5: scribble_own_response(); break;
      case 6: scribble_mask(); break;
      case 7: shm::sem_post_shared(&view_.header().doorbell); break;
      case 8: scribble_header_hints(); break;
      case 9: scribble_any_slot_hints(); break;
      case 10: scribble_any_slot_lengths(); break;
      case 11: release_own(); break;
    }
  }

  void chaos_round() {
    auto* base = reinterpret_cast<std::uint8_t*>(&view_.header());
    // Every byte in turn, a few at a time (so a pass takes long enough for the daemon and
    // the clients to run into what it wrote), then somewhere at random.
    const std::uint64_t n = std::min<std::uint64_t>(1 + pick(16), segment_bytes_ - sweep_at_);
    fill_random(base + sweep_at_, n);
    sweep_at_ = (sweep_at_ + n) % segment_bytes_;
    const std::uint64_t len = 1 + pick(256);
    fill_random(base + pick(segment_bytes_ - len + 1), len);
    if (pick(8) == 0) shm::sem_post_shared(&view_.header().doorbell);
  }

  void forge_round() {
    if (owned().size() < 4) claim();
    const std::uint32_t n = view_.slot_count();
    const std::uint32_t v = static_cast<std::uint32_t>(pick(n));
    if (own(v)) return;
    shm::SlotControl* vc = control(v);
    const SlotWord vw = SlotWord::unpack(vc->word.load());
    if (vw.state == SlotState::kFree) return;
    // Answers the daemon gave to our planted copies, replayed into the victim's slot.
    for (std::uint32_t i : owned()) {
      shm::SlotControl* c = control(i);
      std::uint64_t w = c->word.load();
      const SlotWord sw = SlotWord::unpack(w);
      if (sw.state != SlotState::kAnswered) continue;
      const std::uint32_t len = std::min(c->response_len, view_.response_capacity());
      const std::uint32_t cap = view_.response_capacity();
      std::memcpy(view_.slot(v).response + cap - len, view_.slot(i).response + cap - len, len);
      vc->response_len = len;
      vc->response_nonce = c->response_nonce;
      vc->request_digest = c->request_digest;
      vc->response_check = c->response_check;
      vc->response_generation = pick(2) == 0 ? c->response_generation : vw.generation;
      std::uint64_t victim = vw.pack();
      vc->word.compare_exchange_strong(victim, vw.with(SlotState::kAnswered).pack());
      shm::sem_post_shared(&vc->response_ready);
      c->word.compare_exchange_strong(w, sw.with(SlotState::kClaimed).pack());  // reuse it
      break;
    }
    plant_copy_of(v);
  }

  // Copies the request in flight in slot v, with a predicted id and other values, into a
  // slot of ours (published: the daemon answers it) and over v's own request.
  void plant_copy_of(std::uint32_t v) {
    const std::uint32_t cap = view_.request_capacity();
    const std::uint32_t len = control(v)->request_len;
    if (len < 8 || len > cap || len % 8 != 0) return;
    std::vector<std::uint64_t> copy(len / 8);
    auto* bytes = reinterpret_cast<std::uint8_t*>(copy.data());
    std::memcpy(bytes, view_.slot(v).request + cap - len, len);
    flatbuffers::Verifier verifier(bytes, len);
    if (!fb::VerifyRequestBuffer(verifier)) return;
    auto* req = flatbuffers::GetMutableRoot<fb::Request>(bytes);
    req->mutate_request_id(req->request_id() + pick(3));  // ids are a counter
    if (auto* m = req->mutable_matrix(); m != nullptr && m->size() != 0 && pick(2) == 0) {
      m->Mutate(static_cast<flatbuffers::uoffset_t>(pick(m->size())), static_cast<float>(pick(5000)));
    }
    std::uint32_t mine = 0;
    if (pick_owned_still(mine) && SlotWord::unpack(control(mine)->word.load()).state == SlotState::kClaimed) {
      std::memcpy(view_.slot(mine).request + cap - len, bytes, len);
      shm::SlotControl* c = control(mine);
      c->request_len = len;
      c->request_nonce = rng_();
      std::uint64_t w = c->word.load();
      const SlotWord sw = SlotWord::unpack(w);
      if (sw.pid == pid_ && c->word.compare_exchange_strong(w, sw.with(SlotState::kReady).pack())) {
        view_.header().ready_mask[mine / 64].fetch_or(1ULL << (mine % 64));
        shm::sem_post_shared(&view_.header().doorbell);
      }
    }
    if (pick(2) == 0) {
      std::memcpy(view_.slot(v).request + cap - len, bytes, len);
      control(v)->request_len = len;
    }
  }

  void pin() {
    const std::uint32_t ns = shm::pid_namespace_id();
    for (std::uint32_t i = 0; i < view_.slot_count(); ++i) {
      shm::SlotControl* c = control(i);
      std::uint64_t w = c->word.load();
      const SlotWord sw = SlotWord::unpack(w);
      if (sw.state != SlotState::kFree) continue;
      const auto gen = static_cast<std::uint16_t>(sw.generation + 1);
      SlotWord forged{SlotState::kClaimed, gen, 1};
      std::uint32_t owner_ns = ns;
      switch (i % 6) {
        case 0: break;
        case 1: forged.state = SlotState::kAnswered; break;
        case 2: forged.state = SlotState::kReady; break;  // answered, then held by pid 1
        case 3: forged.pid = 4242; owner_ns = 0xFFFFFFF0u; break;
        case 4: forged.state = static_cast<SlotState>(77); break;
        case 5: forged.state = SlotState::kAbandoned; break;
      }
      if (!c->word.compare_exchange_strong(w, forged.pack())) continue;
      c->owner_pidns = owner_ns;
      c->lease_deadline_ns.store(~0ULL);
      c->request_len = 0;
      if (forged.state == SlotState::kReady) view_.header().ready_mask[i / 64].fetch_or(1ULL << (i % 64));
    }
    shm::SegmentHeader& h = view_.header();
    for (std::uint32_t m = (view_.slot_count() + 63) / 64; m < shm::kMaskWords; ++m) h.ready_mask[m].store(~0ULL);
    if (view_.slot_count() % 64 != 0) {
      h.ready_mask[view_.slot_count() / 64].fetch_or(~0ULL << (view_.slot_count() % 64));
    }
    h.epoch = 1;
    h.server_pid = 1;
    h.slot_count = view_.slot_count() - 1;
    h.request_capacity = 64;
    h.state.store(static_cast<std::uint32_t>(shm::ServerState::kStopping));
    shm::sem_post_shared(&h.doorbell);
  }

 private:
  std::uint64_t pick(std::uint64_t n) { return n == 0 ? 0 : rng_() % n; }
  shm::SlotControl* control(std::uint32_t i) const { return view_.slot(i).control; }

  // A slot whose state word carries our pid: ours to do anything with.
  bool own(std::uint32_t i) const { return SlotWord::unpack(control(i)->word.load()).pid == pid_; }
  std::vector<std::uint32_t> owned() const {
    std::vector<std::uint32_t> out;
    for (std::uint32_t i = 0; i < view_.slot_count(); ++i) {
      if (own(i)) out.push_back(i);
    }
    return out;
  }
  bool pick_owned(std::uint32_t& slot) {
    const auto mine = owned();
    if (mine.empty()) return false;
    slot = mine[pick(mine.size())];
    return true;
  }
  // An owned slot in a state the daemon never moves (Claimed, Answered, or a state it
  // does not know) and the reaper leaves alone while we live: its areas stay ours while we
  // write them. A Ready, Busy or Abandoned slot may be freed by the daemon at any moment
  // and claimed by an honest client, whose request we would then be forging.
  bool pick_owned_still(std::uint32_t& slot) {
    std::vector<std::uint32_t> still;
    for (std::uint32_t i : owned()) {
      const SlotState s = SlotWord::unpack(control(i)->word.load()).state;
      if (s != SlotState::kReady && s != SlotState::kBusy && s != SlotState::kAbandoned &&
          s != SlotState::kFree) {
        still.push_back(i);
      }
    }
    if (still.empty()) return false;
    slot = still[pick(still.size())];
    return true;
  }

  void claim() {
    if (owned().size() >= 4) return;  // leave most of the ring to the honest clients
    const std::uint32_t start = static_cast<std::uint32_t>(pick(view_.slot_count()));
    for (std::uint32_t k = 0; k < view_.slot_count(); ++k) {
      const std::uint32_t i = (start + k) % view_.slot_count();
      std::uint64_t w = control(i)->word.load();
      const SlotWord sw = SlotWord::unpack(w);
      if (sw.state != SlotState::kFree) continue;
      const SlotWord mine{SlotState::kClaimed, static_cast<std::uint16_t>(sw.generation + 1), pid_};
      if (control(i)->word.compare_exchange_strong(w, mine.pack())) {
        control(i)->lease_deadline_ns.store(shm::monotonic_ns() + 60'000'000'000ULL);
        control(i)->owner_pidns = shm::pid_namespace_id();
        return;
      }
    }
  }

  void fill_random(std::uint8_t* p, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) p[i] = static_cast<std::uint8_t>(rng_());
  }

  // A request that is random, or valid with a few bytes flipped, or valid with absurd
  // shapes; then a length that is right, slightly off, or far out of bounds.
  void publish_garbage() {
    std::uint32_t slot = 0;
    if (!pick_owned_still(slot)) return;
    const shm::SlotRef ref = view_.slot(slot);
    const std::uint32_t cap = view_.request_capacity();
    std::uint32_t len = 0;
    if (pick(3) == 0) {
      len = static_cast<std::uint32_t>(1 + pick(4096));
      fill_random(ref.request + cap - len, len);
    } else {
      std::vector<float> m(3 * (1 + pick(8)));
      for (float& v : m) v = static_cast<float>(pick(1000));
      wire::RequestSpec spec;
      spec.request_id = rng_();
      spec.output_type = "AbsPower";
      spec.feature_names = kFeatures;
      spec.matrix = m.data();
      spec.rows = static_cast<std::uint32_t>(m.size() / 3);
      spec.cols = 3;
      auto built = wire::build_request(spec, {ref.request, cap});  // ends at the area's end
      if (!built.ok()) return;
      len = static_cast<std::uint32_t>(built->size());
      for (std::uint64_t k = pick(6); k > 0; --k) {
        built->data()[pick(len)] = static_cast<std::uint8_t>(rng_());
      }
    }
    switch (pick(6)) {
      case 0: len = static_cast<std::uint32_t>(rng_()); break;
      case 1: len += static_cast<std::uint32_t>(pick(64)); break;
      default: break;
    }
    shm::SlotControl* c = control(slot);
    c->request_len = len;
    c->request_nonce = rng_();
    std::uint64_t w = c->word.load();
    const SlotWord sw = SlotWord::unpack(w);
    if (sw.pid != pid_) return;
    c->word.compare_exchange_strong(w, sw.with(SlotState::kReady).pack());
    view_.header().ready_mask[slot / 64].fetch_or(1ULL << (slot % 64));
    if (pick(2) == 0) shm::sem_post_shared(&view_.header().doorbell);
  }

  void scribble_own_word() {
    std::uint32_t slot = 0;
    if (!pick_owned(slot)) return;
    std::uint64_t w = control(slot)->word.load();
    SlotWord sw = SlotWord::unpack(w);
    // Never Free with our pid: an honest client could claim it between our check and
    // our next write into it.
    switch (pick(4)) {
      case 0: sw.state = static_cast<SlotState>(1 + pick(5)); break;    // any known state
      case 1: sw.state = static_cast<SlotState>(6 + pick(250)); break;  // unknown states
      case 2: sw.generation = static_cast<std::uint16_t>(rng_()); break;
      case 3:  // hand it to a pid that does not exist (or to no one)
        sw.pid = pick(2) == 0 ? 0 : static_cast<std::int32_t>(0x3FFFFF00 + pick(200));
        sw.state = static_cast<SlotState>(pick(6));
        break;
    }
    control(slot)->word.compare_exchange_strong(w, sw.pack());
  }

  // Any lease but 0, and our real pid namespace: a lease of 0 or a foreign namespace lets
  // the reaper free the slot while we still write into it (see pick_owned_still).
  void scribble_own_lease() {
    std::uint32_t slot = 0;
    if (!pick_owned(slot)) return;
    control(slot)->lease_deadline_ns.store(rng_() | 1);
  }

  void scribble_own_response() {
    std::uint32_t slot = 0;
    if (!pick_owned_still(slot)) return;
    const shm::SlotRef ref = view_.slot(slot);
    const std::uint32_t len = static_cast<std::uint32_t>(1 + pick(4096));
    fill_random(ref.response + pick(view_.response_capacity() - len + 1), len);
  }

  void release_own() {
    std::uint32_t slot = 0;
    if (!pick_owned(slot)) return;
    std::uint64_t w = control(slot)->word.load();
    const SlotWord sw = SlotWord::unpack(w);
    if (sw.pid != pid_ || sw.state == SlotState::kBusy) return;
    control(slot)->word.compare_exchange_strong(w, SlotWord{SlotState::kFree, sw.generation, 0}.pack());
  }

  void scribble_mask() {
    auto& mask = view_.header().ready_mask[pick(shm::kMaskWords)];
    switch (pick(3)) {
      case 0: mask.fetch_or(rng_()); break;
      case 1: mask.store(0); break;  // honest requests lose their bit: the daemon rescans
      case 2: mask.store(~0ULL); break;
    }
  }

  void scribble_header_hints() {
    shm::SegmentHeader& h = view_.header();
    h.server_sleeping.store(static_cast<std::uint32_t>(rng_()));
    h.server_cpu.store(static_cast<std::uint32_t>(pick(2) == 0 ? pick(4) : rng_()));
  }

  void scribble_any_slot_hints() {
    shm::SlotControl* c = control(static_cast<std::uint32_t>(pick(view_.slot_count())));
    c->client_sleeping.store(static_cast<std::uint32_t>(rng_()));
    c->client_cpu.store(static_cast<std::uint32_t>(pick(2) == 0 ? pick(4) : rng_()));
    shm::sem_post_shared(&c->response_ready);
  }

  void scribble_any_slot_lengths() {
    shm::SlotControl* c = control(static_cast<std::uint32_t>(pick(view_.slot_count())));
    if (pick(2) == 0) {
      c->request_len = static_cast<std::uint32_t>(pick(2) == 0 ? rng_() : pick(4096));
    } else {
      c->response_len = static_cast<std::uint32_t>(pick(2) == 0 ? rng_() : pick(4096));
    }
  }

  shm::SegmentView view_;
  std::mt19937_64 rng_;
  std::uint64_t segment_bytes_;
  std::int32_t pid_;
  std::uint64_t sweep_at_ = 0;  // where the chaos pass over every byte is
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: hostile_client <shm-name> <seconds> protocol|forge|chaos|pin <seed>\n");
    return 2;
  }
  const std::string name = argv[1];
  const double seconds = std::strtod(argv[2], nullptr);
  const std::string mode = argv[3];
  const std::uint64_t seed = std::strtoull(argv[4], nullptr, 10);
  if (mode != "protocol" && mode != "forge" && mode != "chaos" && mode != "pin") {
    std::fprintf(stderr, "hostile_client: unknown mode '%s'\n", mode.c_str());
    return 2;
  }
  auto seg = shm::ClientSegment::attach(name);
  if (!seg.ok()) {
    std::fprintf(stderr, "hostile_client: %s\n", seg.status().to_string().c_str());
    return 3;
  }
  const shm::SegmentView& view = seg.value()->view();
  const std::uint64_t bytes = shm::segment_bytes(view.slot_count(), view.request_capacity(),
                                                 view.response_capacity());
  Hostile h(view, seed, bytes);
  if (mode == "pin") {
    h.pin();
    return 0;
  }
  const std::uint64_t end = shm::monotonic_ns() + static_cast<std::uint64_t>(seconds * 1e9);
  std::uint64_t rounds = 0;
  while (shm::monotonic_ns() < end) {
    for (int i = 0; i < 64; ++i) {
      if (mode == "chaos") {
        h.chaos_round();
      } else if (mode == "forge") {
        h.forge_round();
      } else {
        h.protocol_round();
      }
    }
    rounds += 64;
    // Leave the CPU now and then: on 2 cores a writer that never yields would measure the
    // scheduler, not the daemon.
    if (rounds % 1024 == 0) usleep(100);
  }
  std::printf("hostile_client: %llu rounds\n", static_cast<unsigned long long>(rounds));
  return 0;
}
