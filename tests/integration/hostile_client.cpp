// hostile_client: a process that maps the daemon's segment read-write, as every client
// does, and writes random bytes into it while honest clients call
// (tests/integration/reliability_test.cpp).
//
//   hostile_client <shm-name> <seconds> <mode> <seed>
//
// mode "protocol": everything a client can write without forging other clients' data.
//   - its own slots (claimed by CAS like any client), in every way: random request bytes
//     and mutated valid requests, random offsets and lengths (in and out of bounds),
//     publishing them, random state words (every state, unknown states, other pids and
//     generations), random leases, random response bytes;
//   - the shared header fields clients write: the ready mask (random bits set and
//     cleared), the doorbell (posts), the sleep flag and CPU hints;
//   - in every slot, including those honest clients hold: the wake-up hints
//     (client_sleeping, client_cpu), spurious posts of the response semaphore, and the
//     request and response offsets and lengths (a wrong offset is detectable: the
//     request id no longer matches, or the bytes do not verify).
//   It never writes the state word, lease, request or response area of a slot another
//   process holds: a writer that can do that can forge a well-formed answer, which no
//   protocol over writable shared memory can tell from a real one (docs/reliability.md).
// mode "chaos": random bytes at random places of the whole segment, header included.
//   Honest clients then get errors (or even forged numbers); the daemon must survive.
//
// Exits 0 after <seconds>; 3 if it cannot attach.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

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
      case 10: scribble_any_slot_offsets(); break;
      case 11: release_own(); break;
    }
  }

  void chaos_round() {
    auto* base = reinterpret_cast<std::uint8_t*>(&view_.header());
    const std::uint64_t len = 1 + pick(256);
    const std::uint64_t at = pick(segment_bytes_ - len + 1);
    for (std::uint64_t i = 0; i < len; ++i) base[at + i] = static_cast<std::uint8_t>(rng_());
    if (pick(8) == 0) shm::sem_post_shared(&view_.header().doorbell);
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
  // shapes; then offsets that are right, slightly off, or far out of bounds.
  void publish_garbage() {
    std::uint32_t slot = 0;
    if (!pick_owned_still(slot)) return;
    const shm::SlotRef ref = view_.slot(slot);
    const std::uint32_t cap = view_.request_capacity();
    std::uint32_t offset = 0;
    std::uint32_t len = 0;
    if (pick(3) == 0) {
      len = static_cast<std::uint32_t>(1 + pick(4096));
      offset = static_cast<std::uint32_t>(pick(cap - len + 1));
      fill_random(ref.request + offset, len);
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
      auto built = wire::build_request(spec, {ref.request, cap});
      if (!built.ok()) return;
      offset = static_cast<std::uint32_t>(built->data() - ref.request);
      len = static_cast<std::uint32_t>(built->size());
      for (std::uint64_t k = pick(6); k > 0; --k) {
        built->data()[pick(len)] = static_cast<std::uint8_t>(rng_());
      }
    }
    switch (pick(6)) {
      case 0: offset = static_cast<std::uint32_t>(rng_()); break;
      case 1: len = static_cast<std::uint32_t>(rng_()); break;
      case 2: len += static_cast<std::uint32_t>(pick(64)); break;
      default: break;
    }
    shm::SlotControl* c = control(slot);
    c->request_offset = offset;
    c->request_len = len;
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

  void scribble_any_slot_offsets() {
    shm::SlotControl* c = control(static_cast<std::uint32_t>(pick(view_.slot_count())));
    if (pick(2) == 0) {
      c->request_offset = static_cast<std::uint32_t>(pick(2) == 0 ? rng_() : pick(view_.request_capacity()));
      c->request_len = static_cast<std::uint32_t>(pick(2) == 0 ? rng_() : pick(4096));
    } else {
      c->response_offset = static_cast<std::uint32_t>(pick(2) == 0 ? rng_() : pick(view_.response_capacity()));
      c->response_len = static_cast<std::uint32_t>(pick(2) == 0 ? rng_() : pick(4096));
    }
  }

  shm::SegmentView view_;
  std::mt19937_64 rng_;
  std::uint64_t segment_bytes_;
  std::int32_t pid_;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: hostile_client <shm-name> <seconds> protocol|chaos <seed>\n");
    return 2;
  }
  const std::string name = argv[1];
  const double seconds = std::strtod(argv[2], nullptr);
  const std::string mode = argv[3];
  const std::uint64_t seed = std::strtoull(argv[4], nullptr, 10);
  if (mode != "protocol" && mode != "chaos") {
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
  const std::uint64_t end = shm::monotonic_ns() + static_cast<std::uint64_t>(seconds * 1e9);
  std::uint64_t rounds = 0;
  while (shm::monotonic_ns() < end) {
    for (int i = 0; i < 64; ++i) mode == "chaos" ? h.chaos_round() : h.protocol_round();
    rounds += 64;
    // Leave the CPU now and then: on 2 cores a writer that never yields would measure the
    // scheduler, not the daemon.
    if (rounds % 1024 == 0) usleep(100);
  }
  std::printf("hostile_client: %llu rounds\n", static_cast<unsigned long long>(rounds));
  return 0;
}
