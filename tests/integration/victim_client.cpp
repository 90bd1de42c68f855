// victim_client: a client that the reliability test kills at a chosen point of the slot
// protocol (tests/integration/reliability_test.cpp).
//
//   victim_client <shm-name> <step>
//
// Steps that stop the process with SIGSTOP (the test then SIGKILLs it, so the kill lands
// exactly at that point; a stopped process holds its slot exactly as a dead one would):
//   bare-claim  the claim CAS done, the lease not yet written (the reaper's hardest case)
//   claim       a slot claimed (Claimed, lease set)
//   write       half of the request written into the slot's request area
//   publish     the request published (Ready; the daemon may answer while we are stopped)
//   wait        a thread blocked in wait_answer() while the main thread stops the process
//   read        the answer verified and half read, the slot not yet released
// And one that never stops:
//   loop        an ordinary estimator::client::Client calling in a loop, for kills at
//               random times
//
// Exit status: 0 only if continued (the test never does), 2 on a usage error, 3 when the
// step could not be reached (message on stderr).
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "clients/cpp/estimator_client.h"
#include "schema/wire.h"
#include "shm/client_ring.h"
#include "shm/segment.h"

namespace {

using namespace estimator;

constexpr std::uint64_t kSecondNs = 1'000'000'000ULL;
const std::string_view kFeatures[] = {"bpf_cpu_time_ms", "bpf_page_cache_hit", "cpu_cycles"};

int fail(const std::string& what) {
  std::fprintf(stderr, "victim_client: %s\n", what.c_str());
  return 3;
}

// A tiny spread of delays so that "wait" stops at different points of the waiter's spin
// and block phases.
void jitter() {
  const auto us = static_cast<useconds_t>(getpid() % 50);
  if (us != 0) usleep(us);
}

int loop(const std::string& shm) {
  client::Client c({.shm_name = shm});
  std::vector<float> m{100, 1, 2, 200, 3, 4};
  for (std::uint64_t i = 0;; ++i) {
    m[0] = static_cast<float>(i % 5000);
    auto r = c.estimate({.selector = {.output_type = "AbsPower", .source = "rapl-sysfs"},
                         .features = kFeatures,
                         .matrix = m.data(),
                         .rows = 2,
                         .cols = 3},
                        std::chrono::seconds(2));
    (void)r;  // the reply is released here, and the next claim follows at once
  }
}

int step(const std::string& shm, std::string_view what) {
  auto seg = shm::ClientSegment::attach(shm);
  if (!seg.ok()) return fail(seg.status().to_string());
  shm::ClientRing ring(*seg.value());
  const shm::SegmentView& view = ring.view();
  const std::uint64_t now = shm::monotonic_ns();

  if (what == "bare-claim") {
    // The first half of ClientRing::claim: the CAS that makes the slot ours, nothing else.
    for (std::uint32_t i = 0; i < view.slot_count(); ++i) {
      shm::SlotControl* c = view.slot(i).control;
      std::uint64_t w = c->word.load();
      const shm::SlotWord sw = shm::SlotWord::unpack(w);
      if (sw.state != shm::SlotState::kFree) continue;
      const shm::SlotWord mine{shm::SlotState::kClaimed,
                               static_cast<std::uint16_t>(sw.generation + 1), getpid()};
      if (c->word.compare_exchange_strong(w, mine.pack())) {
        raise(SIGSTOP);
        return 0;
      }
    }
    return fail("no free slot");
  }

  auto claimed = ring.claim(now + 2 * kSecondNs, now + 60 * kSecondNs, static_cast<std::uint32_t>(getpid()));
  if (!claimed.ok()) return fail(claimed.status().to_string());
  const std::uint32_t slot = claimed.value();
  if (what == "claim") {
    raise(SIGSTOP);
    return 0;
  }

  const std::vector<float> m{static_cast<float>(getpid() % 1000), 1, 2};
  wire::RequestSpec spec;
  spec.request_id = static_cast<std::uint64_t>(getpid()) << 20;
  spec.output_type = "AbsPower";
  spec.source = "rapl-sysfs";
  spec.feature_names = kFeatures;
  spec.matrix = m.data();
  spec.rows = 1;
  spec.cols = 3;
  const shm::SlotRef ref = view.slot(slot);
  if (what == "write") {
    // Build privately, then copy half of it in: the slot holds a torn request.
    std::vector<std::uint8_t> scratch(view.request_capacity());
    auto built = wire::build_request(spec, scratch);
    if (!built.ok()) return fail(built.status().to_string());
    const std::size_t offset = static_cast<std::size_t>(built->data() - scratch.data());
    std::memcpy(ref.request + offset, built->data(), built->size() / 2);
    raise(SIGSTOP);
    return 0;
  }
  auto built = wire::build_request(spec, {ref.request, view.request_capacity()});
  if (!built.ok()) return fail(built.status().to_string());
  const auto offset = static_cast<std::uint32_t>(built->data() - ref.request);
  if (Status s = ring.publish(slot, offset, static_cast<std::uint32_t>(built->size())); !s.ok()) {
    return fail(s.to_string());
  }
  if (what == "publish") {
    raise(SIGSTOP);
    return 0;
  }
  if (what == "wait") {
    std::atomic<bool> waiting{false};
    std::thread waiter([&] {
      waiting = true;
      (void)ring.wait_answer(slot, shm::monotonic_ns() + 60 * kSecondNs, 20'000);
    });
    while (!waiting) std::this_thread::yield();
    jitter();
    raise(SIGSTOP);
    waiter.join();
    return 0;
  }
  if (what == "read") {
    if (ring.wait_answer(slot, shm::monotonic_ns() + 10 * kSecondNs, 20'000) !=
        shm::WaitOutcome::kAnswered) {
      return fail("no answer");
    }
    ring.extend_lease(slot, shm::monotonic_ns() + 60 * kSecondNs);
    const std::uint32_t roff = ref.control->response_offset;
    const std::uint32_t rlen = ref.control->response_len;
    if (roff > view.response_capacity() || rlen > view.response_capacity() - roff) {
      return fail("answer outside the response area");
    }
    auto parsed = wire::read_response({ref.response + roff, rlen});
    if (!parsed.ok()) return fail(parsed.status().to_string());
    if (parsed->request_id != spec.request_id) return fail("answer to another request");
    raise(SIGSTOP);  // reading the powers in place
    return 0;
  }
  std::fprintf(stderr, "victim_client: unknown step '%.*s'\n", static_cast<int>(what.size()),
               what.data());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr,
                 "usage: victim_client <shm-name> "
                 "bare-claim|claim|write|publish|wait|read|loop\n");
    return 2;
  }
  const std::string shm = argv[1];
  const std::string_view what = argv[2];
  if (what == "loop") return loop(shm);
  return step(shm, what);
}
