// SPDX-License-Identifier: Apache-2.0
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
// And two that never stop:
//   loop        an ordinary estimator::client::Client calling in a loop, for kills at
//               random times
//   check S     a long-lived client calling for S seconds while a hostile peer attacks,
//               checking every answer against the model evaluated in this process
//               (tests/integration/reference_model.h); prints one line:
//               ok=N wrong=N errors=N rejected=N last_failure_ns=T last_ok_ns=T
//               (CLOCK_MONOTONIC, comparable with the test's clock), then up to 8 kinds
//               of error on stderr.
//
// Exit status: 0 only if continued (the test never does) or check ran its time, 2 on a
// usage error, 3 when the step could not be reached (message on stderr).
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "clients/cpp/estimator_client.h"
#include "reference_model.h"
#include "schema/wire.h"
#include "shm/client_ring.h"
#include "shm/reply_seal.h"
#include "shm/segment.h"

namespace {

using namespace estimator;

constexpr std::uint64_t kSecondNs = 1'000'000'000ULL;
constexpr auto& kFeatures = testing::kReferenceFeatures;

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

int check(const std::string& shm, double seconds) {
  testing::ReferenceModel ref;
  if (!ref.ok()) return fail("the embedded reference model does not load");
  client::Client c({.shm_name = shm});
  std::uint64_t ok = 0, wrong = 0, errors = 0, last_failure_ns = 0, last_ok_ns = 0;
  std::map<std::string, int> kinds;
  const std::uint64_t end = shm::monotonic_ns() + static_cast<std::uint64_t>(seconds * 1e9);
  for (std::uint64_t seq = 0; shm::monotonic_ns() < end; ++seq) {
    // Values that change with every call: an answer to any other request cannot match.
    const std::uint32_t rows = 1 + static_cast<std::uint32_t>(seq % 8);
    std::vector<float> m(rows * 3);
    for (std::uint32_t r = 0; r < rows; ++r) {
      m[3 * r] = static_cast<float>((seq * 8 + r) % 100000);
      m[3 * r + 1] = static_cast<float>((seq + r) % 97);
      m[3 * r + 2] = static_cast<float>(getpid() % 1000 + r);
    }
    auto reply = c.estimate({.selector = {.output_type = "AbsPower", .source = "rapl-sysfs"},
                             .features = kFeatures,
                             .matrix = m.data(),
                             .rows = rows,
                             .cols = 3},
                            std::chrono::milliseconds(300));
    const std::uint64_t now = shm::monotonic_ns();
    if (!reply.ok()) {
      ++errors;
      last_failure_ns = now;
      const std::string kind(code_name(reply.status().code()));
      if (kinds.size() < 8 || kinds.count(kind) != 0) ++kinds[kind];
      continue;
    }
    const std::vector<float> want = ref.predict(m, rows);
    if (!std::equal(want.begin(), want.end(), reply->powers().begin(), reply->powers().end())) {
      ++wrong;
      last_failure_ns = now;
      continue;
    }
    ++ok;
    last_ok_ns = now;
  }
  std::printf("ok=%llu wrong=%llu errors=%llu rejected=%llu last_failure_ns=%llu last_ok_ns=%llu\n",
              static_cast<unsigned long long>(ok), static_cast<unsigned long long>(wrong),
              static_cast<unsigned long long>(errors),
              static_cast<unsigned long long>(c.rejected_replies()),
              static_cast<unsigned long long>(last_failure_ns),
              static_cast<unsigned long long>(last_ok_ns));
  for (const auto& [kind, n] : kinds) std::fprintf(stderr, "victim_client: %d x %s\n", n, kind.c_str());
  return 0;
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
  const shm::Claim slot = claimed.value();
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
  // Built privately, as the client does; a slot only ever receives a copy.
  std::vector<std::uint8_t> scratch(view.request_capacity());
  auto built = wire::build_request(spec, scratch);
  if (!built.ok()) return fail(built.status().to_string());
  if (what == "write") {
    // Half of it copied in (at the end of the area, where it goes): a torn request.
    const shm::SlotRef ref = view.slot(slot.slot);
    std::memcpy(ref.request + (view.request_capacity() - built->size()), built->data(),
                built->size() / 2);
    raise(SIGSTOP);
    return 0;
  }
  const std::uint64_t nonce = shm::next_nonce();
  if (Status s = ring.publish(slot, *built, nonce); !s.ok()) return fail(s.to_string());
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
    auto got = ring.receive(slot, nonce, shm::digest(*built, nonce));
    if (!got.ok()) return fail(got.status().to_string());
    auto parsed = wire::read_response({got->data.get(), got->size});
    if (!parsed.ok()) return fail(parsed.status().to_string());
    if (parsed->request_id != spec.request_id) return fail("answer to another request");
    raise(SIGSTOP);  // the slot not yet released
    return 0;
  }
  std::fprintf(stderr, "victim_client: unknown step '%.*s'\n", static_cast<int>(what.size()),
               what.data());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3 || (std::string_view(argv[2]) == "check") != (argc == 4) || argc > 4) {
    std::fprintf(stderr,
                 "usage: victim_client <shm-name> "
                 "bare-claim|claim|write|publish|wait|read|loop|check <seconds>\n");
    return 2;
  }
  const std::string shm = argv[1];
  const std::string_view what = argv[2];
  if (what == "loop") return loop(shm);
  if (what == "check") return check(shm, std::strtod(argv[3], nullptr));
  return step(shm, what);
}
