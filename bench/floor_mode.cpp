// SPDX-License-Identifier: Apache-2.0
// Floor mode: the least any shared-memory request/response between two processes can cost
// on this machine, so the ring's overhead above it can be read off. No schema, no model:
// the client copies the encoded request bytes of the case into an anonymous shared mapping
// and sets a flag (release store); the child, spinning on the flag (acquire), copies the
// request out, writes the encoded response bytes of the case (the exact bytes the daemon
// would send), and flips the flag back; the client, spinning, copies the reply out.
//
// Why it is fair: the same bytes cross in each direction as in ring mode, the same two
// processes spin with the same pause instruction and clock checks as shm::spin_until, and
// each side touches every byte once, as the ring's encoder and verifier must. After
// --spin-us without a request the child naps (polls at growing intervals) like the daemon
// sleeps, so it does not steal one of the two cores while the other modes run.
//
// Variant "work" (floor/work): the same handoff carrying the ring's work, so that what the
// ring adds beyond its work can be read off (ring / floor-work) apart from the work itself
// (floor-work / floor). The client encodes each request as the ring client does
// (wire::RequestEncoder), draws a nonce, digests the request after publishing it, checks
// the reply's seal and decodes it; the child copies the request out, digests it, answers
// it with the daemon's service::RequestHandler and seals the reply (shm/reply_seal.h).
// What it leaves out is the ring's own protocol: slot claim and state word, ready mask,
// lease, owner and sleep flags.
//
// One deliberate difference: a side that finds its peer scheduled on its own CPU (a
// loaded machine; nothing is pinned) yields instead of pausing, since spinning there only
// keeps the peer it waits for off the CPU until the scheduler preempts it, milliseconds
// later. The ring's waiters stop spinning in that case too (shm/wait.h), so both measure
// a same-CPU handoff alike; the slow% column shows when that happened.
#include <sched.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <new>
#include <string>

#include "bench/child.h"
#include "bench/modes.h"
#include "bench/spin.h"
#include "schema/wire.h"
#include "service/request_handler.h"
#include "shm/reply_seal.h"
#include "shm/wait.h"

namespace estimator::bench {
namespace {

// At the start of the mapping; the request area and the reply area follow, each on its
// own cache lines. Fields besides the flag are written before the flag's release store
// and read after the peer's acquire load.
struct alignas(64) FloorControl {
  // 2*seq+1: request seq is ready (client); 2*seq+2: it is answered (server); kStop.
  std::atomic<std::uint64_t> flag{0};
  std::uint32_t request_len = 0;  // client
  std::uint32_t case_index = 0;   // client: which case's response to send
  std::uint32_t rows = 0;         // client (bytes only: work checks the decoded reply)
  std::uint32_t reply_len = 0;    // server
  std::uint32_t reply_rows = 0;   // server: echoes rows (bytes only)
  std::uint32_t pad = 0;
  std::uint64_t reply_echo = 0;   // server: the last 8 bytes of the request it read
  // Variant "work" only: the request's nonce (client), and the reply's seal (server).
  std::uint64_t nonce = 0;
  std::uint64_t request_digest = 0;
  std::uint64_t reply_check = 0;
  // Where each side last ran, refreshed while it waits; on their own line so that a
  // waiter's refresh does not touch the line its peer is about to write.
  alignas(64) std::atomic<std::int32_t> client_cpu{-1};
  std::atomic<std::int32_t> server_cpu{-1};
};
static_assert(sizeof(FloorControl) == 128);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

constexpr std::uint64_t kStop = ~std::uint64_t{0};  // odd: the server wakes and exits
// Idle naps grow from the first to the last, so a parked server wakes rarely (it must
// not disturb the other modes) yet resumes within milliseconds (absorbed by warm-up).
constexpr long kFirstNapNs = 100'000;
constexpr long kLastNapNs = 16'000'000;

struct Mapping {
  FloorControl* control = nullptr;
  std::uint8_t* request = nullptr;
  std::uint8_t* reply = nullptr;
  std::size_t request_cap = 0;
  std::size_t reply_cap = 0;
};

std::uint64_t last_word(const std::uint8_t* p, std::size_t len) {
  std::uint64_t w = 0;
  if (len >= sizeof w) std::memcpy(&w, p + len - sizeof w, sizeof w);
  return w;
}

// The child: answer until kStop, SIGTERM, or the parent's death. `handler` set: variant
// "work" (the ring's work on each request); otherwise the case's precomputed reply.
int serve_floor(const Mapping& m, const std::vector<Case>& cases, std::uint64_t spin_ns,
                service::RequestHandler* handler, const Child::Ready& ready) {
  std::vector<std::uint8_t> scratch(m.request_cap);
  const pid_t parent = getppid();
  FloorControl& ctl = *m.control;
  ready(Status::Ok());
  for (;;) {
    std::uint64_t v = 0;
    const auto requested = [&] {
      v = ctl.flag.load(std::memory_order_acquire);
      return (v & 1) != 0;
    };
    bool got = spin_or_yield(requested, spin_ns, ctl.server_cpu, ctl.client_cpu);
    for (long nap_ns = kFirstNapNs; !got; nap_ns = std::min(2 * nap_ns, kLastNapNs)) {
      if (getppid() != parent) return 0;
      const timespec nap{0, nap_ns};
      nanosleep(&nap, nullptr);
      got = requested();
    }
    if (v == kStop) return 0;
    const std::size_t len = std::min<std::size_t>(ctl.request_len, m.request_cap);
    std::memcpy(scratch.data(), m.request, len);
    std::span<const std::uint8_t> reply;
    if (handler != nullptr) {
      const std::span<const std::uint8_t> request(scratch.data(), len);
      const std::uint64_t nonce = ctl.nonce;
      const std::uint64_t request_digest = shm::digest(request, nonce);
      reply = handler->handle(request);
      ctl.request_digest = request_digest;
      ctl.reply_check = shm::reply_check(nonce, 1, request_digest, reply);
    } else {
      const std::uint32_t index = ctl.case_index;
      reply = cases[index < cases.size() ? index : 0].response;
      ctl.reply_echo = last_word(scratch.data(), len);
      ctl.reply_rows = ctl.rows;
    }
    const std::size_t rlen = std::min(reply.size(), m.reply_cap);
    std::memcpy(m.reply, reply.data(), rlen);
    ctl.reply_len = static_cast<std::uint32_t>(rlen);
    ctl.flag.store(v + 1, std::memory_order_release);
  }
}

class FloorMode final : public Mode {
 public:
  FloorMode(const std::vector<Case>& cases, const ModeOptions& options, bool work)
      : cases_(cases),
        work_(work),
        timeout_ns_(static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(options.timeout).count())),
        reply_copy_(response_capacity()) {}

  ~FloorMode() override {
    if (map_.control != nullptr) map_.control->flag.store(kStop, std::memory_order_release);
    if (child_ != nullptr) child_->stop();
    if (base_ != nullptr) munmap(base_, bytes_);
  }


  Status map() {
    map_.request_cap = request_capacity();
    map_.reply_cap = response_capacity();
    bytes_ = sizeof(FloorControl) + map_.request_cap + map_.reply_cap;
    void* p = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      return Status(Code::kResourceExhausted, "mmap: " + std::string(std::strerror(errno)));
    }
    base_ = static_cast<std::uint8_t*>(p);
    map_.control = new (base_) FloorControl();
    map_.request = base_ + sizeof(FloorControl);
    map_.reply = map_.request + map_.request_cap;
    return Status::Ok();
  }

  Status run(std::size_t index, std::size_t count, Clock::time_point deadline,
             Samples* out) override {
    return work_ ? run_work(index, count, deadline, out) : run_bytes(index, count, deadline, out);
  }

  std::unique_ptr<Child> child_;
  Mapping map_;

 private:
  // Waits for answer `answered` until the timeout.
  Status wait_answer(std::uint64_t answered) {
    FloorControl& ctl = *map_.control;
    const bool ok = spin_or_yield(
        [&] { return ctl.flag.load(std::memory_order_acquire) == answered; }, timeout_ns_,
        ctl.client_cpu, ctl.server_cpu);
    if (ok) return Status::Ok();
    return Status(child_->running() ? Code::kDeadlineExceeded : Code::kUnavailable,
                  "floor: no answer within the timeout");
  }

  Status run_work(std::size_t index, std::size_t count, Clock::time_point deadline,
                  Samples* out) {
    const Case& c = cases_[index];
    FloorControl& ctl = *map_.control;
    for (std::size_t i = 0; i < count; ++i) {
      const std::uint64_t answered = 2 * ++seq_ + 2;
      const auto t0 = Clock::now();
      auto built = encoder_.encode(request_spec(c, seq_), map_.request_cap);
      if (!built.ok()) return built.status();
      const std::span<const std::uint8_t> bytes = built.value();
      const std::uint64_t nonce = shm::next_nonce();
      std::memcpy(map_.request, bytes.data(), bytes.size());
      ctl.request_len = static_cast<std::uint32_t>(bytes.size());
      ctl.nonce = nonce;
      ctl.flag.store(answered - 1, std::memory_order_release);
      const std::uint64_t request_digest = shm::digest(bytes, nonce);  // while the child works
      if (Status s = wait_answer(answered); !s.ok()) return s;
      const std::size_t rlen = std::min<std::size_t>(ctl.reply_len, map_.reply_cap);
      std::memcpy(reply_copy_.data(), map_.reply, rlen);
      const std::span<const std::uint8_t> reply(reply_copy_.data(), rlen);
      const bool sealed = ctl.request_digest == request_digest &&
                          ctl.reply_check == shm::reply_check(nonce, 1, request_digest, reply);
      auto parsed = wire::read_response(reply);
      const auto t1 = Clock::now();
      if (!sealed) return Status(Code::kIntegrity, "floor/work: a reply failed its seal");
      if (!parsed.ok()) return parsed.status();
      const wire::ParsedResponse& r = parsed.value();
      if (r.request_id != seq_) {
        return Status(Code::kInternal, "floor/work: the reply answers another request");
      }
      const std::string_view model = r.model != nullptr ? wire::view_of(r.model->name()) : "";
      if (Status s = check_reply(c, r.rows, r.cols, r.powers, model); !s.ok()) return s;
      if (out != nullptr) out->add(elapsed_ns(t0, t1));
      if (t1 >= deadline) break;
    }
    return Status::Ok();
  }

  Status run_bytes(std::size_t index, std::size_t count, Clock::time_point deadline,
                   Samples* out) {
    const Case& c = cases_[index];
    FloorControl& ctl = *map_.control;
    const std::uint64_t expected_echo = last_word(c.request.data(), c.request.size());
    for (std::size_t i = 0; i < count; ++i) {
      const std::uint64_t answered = 2 * ++seq_ + 2;
      const auto t0 = Clock::now();
      std::memcpy(map_.request, c.request.data(), c.request.size());
      ctl.request_len = static_cast<std::uint32_t>(c.request.size());
      ctl.case_index = static_cast<std::uint32_t>(index);
      ctl.rows = c.rows;
      ctl.flag.store(answered - 1, std::memory_order_release);
      if (Status s = wait_answer(answered); !s.ok()) return s;
      const std::size_t rlen = std::min<std::size_t>(ctl.reply_len, map_.reply_cap);
      std::memcpy(reply_copy_.data(), map_.reply, rlen);
      const std::uint32_t rows = ctl.reply_rows;
      const std::uint64_t echo = ctl.reply_echo;
      const auto t1 = Clock::now();
      if (rows != c.rows || rlen != c.response.size() || echo != expected_echo) {
        return Status(Code::kInternal, "floor: a reply of " + std::to_string(rlen) +
                                           " bytes and " + std::to_string(rows) +
                                           " rows does not answer the request");
      }
      if (out != nullptr) out->add(elapsed_ns(t0, t1));
      if (t1 >= deadline) break;
    }
    return Status::Ok();
  }

  const std::vector<Case>& cases_;
  const bool work_;
  wire::RequestEncoder encoder_;
  std::uint64_t timeout_ns_;
  std::vector<std::uint8_t> reply_copy_;
  std::uint8_t* base_ = nullptr;
  std::size_t bytes_ = 0;
  std::uint64_t seq_ = 0;
};

}  // namespace

Result<std::unique_ptr<Mode>> start_floor(const std::vector<Case>& cases,
                                          std::shared_ptr<const models::Registry> registry,
                                          const ModeOptions& options) {
  const bool work = registry != nullptr;
  auto mode = std::make_unique<FloorMode>(cases, options, work);
  if (Status s = mode->map(); !s.ok()) return s;
  const auto spin_ns = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(options.spin).count());
  auto child = Child::spawn(
      work ? "floor/work server" : "floor server",
      [m = mode->map_, &cases, spin_ns, registry](const Child::Ready& ready) {
        if (registry == nullptr) return serve_floor(m, cases, spin_ns, nullptr, ready);
        const service::RegistryHolder holder(registry);
        service::RequestHandler handler(holder, m.request_cap, m.reply_cap);
        return serve_floor(m, cases, spin_ns, &handler, ready);
      });
  if (!child.ok()) return child.status();
  mode->child_ = std::move(child).value();
  if (Status s = mode->child_->wait_ready(std::chrono::milliseconds(10000)); !s.ok()) return s;
  return std::unique_ptr<Mode>(std::move(mode));
}

}  // namespace estimator::bench
