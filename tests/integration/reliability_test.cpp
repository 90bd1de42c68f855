// SPDX-License-Identifier: Apache-2.0
// Crashes and hostile peers, with the real estimatord as a child process
// (docs/reliability.md lists the promises these tests check):
//   - clients SIGKILLed at every point of the slot protocol and at random times: their
//     slots come back within a second, honest clients notice nothing, the daemon's file
//     descriptors and memory stay flat;
//   - the daemon SIGKILLed mid-request, 100 times: callers get "estimator unavailable"
//     within their deadline, never a wrong answer, and resume on the next daemon;
//   - a hostile process writing random bytes into the segment: the daemon survives and
//     keeps answering, honest clients get correct answers or errors, never wrong numbers;
//   - access control (mode 0600 keeps other users out, --shm-mode 0660 admits the group)
//     and a /dev/shm too small for the segment.
// Sizes shrink with ESTIMATOR_RELIABILITY_SCALE (a fraction, e.g. 0.2 in sanitizer runs).
#include <gtest/gtest.h>
#include <dirent.h>
#include <grp.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>

#include "daemon_process.h"
#include "reference_model.h"
#include "shm/client_ring.h"
#include "shm/segment.h"
#include "shm/server_ring.h"
#include "shm/wait.h"
#include "tests/support/child_process.h"
#include "tests/support/process_stats.h"

namespace estimator::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr auto& kFeatures = kReferenceFeatures;
constexpr client::Selector kSelector{.output_type = "AbsPower", .source = "rapl-sysfs"};

// Built with -fsanitize: the daemon's memory is the sanitizer's (quarantine, shadow), so
// RSS says nothing about leaks; ASan's own leak check covers them at exit.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

int scaled(int n) {
  const char* s = std::getenv("ESTIMATOR_RELIABILITY_SCALE");
  if (s == nullptr) return n;
  const double f = std::strtod(s, nullptr);
  return f > 0 ? std::max(1, static_cast<int>(n * f)) : n;
}

// A matrix whose first column encodes (caller, sequence, row): an answer computed from
// any other request cannot equal the expected one.
std::vector<float> encoded_matrix(int caller, std::uint64_t seq, std::uint32_t rows) {
  std::vector<float> m(rows * 3);
  for (std::uint32_t r = 0; r < rows; ++r) {
    m[3 * r] = static_cast<float>(caller * 100000 + static_cast<int>(seq % 1000) * 32 + static_cast<int>(r));
    m[3 * r + 1] = static_cast<float>((seq + r) % 97);
    m[3 * r + 2] = static_cast<float>(seq % 7919);
  }
  return m;
}

// Honest clients: threads of this process that call in a loop and check every answer.
class HonestCallers {
 public:
  struct Counts {
    std::atomic<std::uint64_t> ok{0};
    std::atomic<std::uint64_t> wrong{0};  // an answer with the wrong numbers: never allowed
    std::atomic<std::uint64_t> errors{0};
    std::atomic<std::uint64_t> slow{0};   // a call that overran its deadline by > 250 ms
  };

  HonestCallers(std::string shm, int threads, std::chrono::milliseconds timeout)
      : client_({.shm_name = std::move(shm)}), timeout_(timeout) {
    for (int t = 0; t < threads; ++t) {
      ok_since_mark_.push_back(std::make_unique<std::atomic<bool>>(false));
    }
    for (int t = 0; t < threads; ++t) threads_.emplace_back([this, t] { run(t); });
  }
  ~HonestCallers() { stop(); }

  void stop() {
    stop_ = true;
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }

  // Forget which callers got an answer; every_caller_answered() then waits for a new one.
  void mark() {
    for (auto& f : ok_since_mark_) *f = false;
  }
  bool every_caller_answered() const {
    return std::all_of(ok_since_mark_.begin(), ok_since_mark_.end(), [](const auto& f) { return f->load(); });
  }

  const Counts& counts() const { return counts_; }
  std::map<std::string, int> error_samples() const {
    std::lock_guard lock(mu_);
    return errors_;
  }

 private:
  void run(int t) {
    ReferenceModel ref;
    EXPECT_TRUE(ref.ok()) << "the embedded reference model";
    std::mt19937 rng(static_cast<unsigned>(t));
    for (std::uint64_t seq = 0; !stop_; ++seq) {
      const std::uint32_t rows = 1 + rng() % 16;
      const std::vector<float> m = encoded_matrix(t + 1, seq, rows);
      const auto t0 = Clock::now();
      auto r = client_.estimate({.selector = kSelector, .features = kFeatures, .matrix = m.data(),
                                 .rows = rows, .cols = 3},
                                timeout_);
      if (Clock::now() - t0 > timeout_ + 250ms) ++counts_.slow;
      if (!r.ok()) {
        ++counts_.errors;
        std::lock_guard lock(mu_);
        // Numbers (request ids, sizes) stripped so that alike errors count together.
        std::string what = std::string(code_name(r.status().code())) + ": " + r.status().message();
        const auto digit = [](char c) { return c >= '0' && c <= '9'; };
        what.erase(std::unique(what.begin(), what.end(), [&](char x, char y) { return digit(x) && digit(y); }), what.end());
        std::replace_if(what.begin(), what.end(), digit, '#');
        if (errors_.size() < 20 || errors_.count(what) != 0) ++errors_[what];
        continue;
      }
      const std::vector<float> want = ref.predict(m, rows);
      if (!std::equal(want.begin(), want.end(), r->powers().begin(), r->powers().end())) {
        ++counts_.wrong;
        continue;
      }
      ++counts_.ok;
      *ok_since_mark_[static_cast<std::size_t>(t)] = true;
    }
  }

  client::Client client_;
  std::chrono::milliseconds timeout_;
  std::atomic<bool> stop_{false};
  Counts counts_;
  mutable std::mutex mu_;
  std::map<std::string, int> errors_;
  std::vector<std::unique_ptr<std::atomic<bool>>> ok_since_mark_;
  std::vector<std::thread> threads_;
};

std::string describe(const std::map<std::string, int>& errors) {
  std::string s;
  for (const auto& [what, n] : errors) s += "\n  " + std::to_string(n) + " x " + what;
  return s;
}

// Starts `args` with its stdout and stderr in `output_fd` (-1: the test's own).
ChildProcess spawn(const std::vector<std::string>& args, int output_fd = -1) {
  ChildProcess child;
  child.start(args, {.out_fd = output_fd, .err_fd = output_fd});
  return child;
}

// A view of the slot states, through a mapping of our own (as any client has).
class SlotObserver {
 public:
  explicit SlotObserver(const std::string& shm) {
    auto seg = shm::ClientSegment::attach(shm);
    EXPECT_TRUE(seg.ok()) << seg.status().to_string();
    if (seg.ok()) seg_ = std::move(seg).value();
  }
  bool ok() const { return seg_ != nullptr; }
  shm::SlotWord word(std::uint32_t i) const {
    return shm::SlotWord::unpack(seg_->view().slot(i).control->word.load());
  }
  std::uint32_t slots() const { return seg_->view().slot_count(); }
  // Slots whose state word names one of `pids` as owner.
  int held_by(const std::set<pid_t>& pids) const {
    int n = 0;
    for (std::uint32_t i = 0; i < slots(); ++i) n += pids.count(word(i).pid) != 0 ? 1 : 0;
    return n;
  }
  std::string states() const {
    std::string out;
    for (std::uint32_t i = 0; i < slots(); ++i) {
      const shm::SlotWord w = word(i);
      out += " " + std::to_string(i) + ":" + std::to_string(int(w.state)) + "/pid " + std::to_string(w.pid);
    }
    return out;
  }
  int not_free() const {
    int n = 0;
    for (std::uint32_t i = 0; i < slots(); ++i) n += word(i).state != shm::SlotState::kFree ? 1 : 0;
    return n;
  }
  const shm::ClientSegment& segment() const { return *seg_; }

 private:
  std::unique_ptr<shm::ClientSegment> seg_;
};

// ---------------------------------------------------------------------------------------
// Client death

// Where a victim stopped, and which slot states are possible there.
struct Step {
  const char* name;
  std::set<shm::SlotState> states;
};
const Step kSteps[] = {
    {"bare-claim", {shm::SlotState::kClaimed}},
    {"claim", {shm::SlotState::kClaimed}},
    {"write", {shm::SlotState::kClaimed}},
    {"publish", {shm::SlotState::kReady, shm::SlotState::kBusy, shm::SlotState::kAnswered}},
    {"wait", {shm::SlotState::kReady, shm::SlotState::kBusy, shm::SlotState::kAnswered}},
    {"read", {shm::SlotState::kAnswered}},
};

// Kills `children` (stopped or running), reaps them, and returns how long until no slot
// names any of them as owner (or 10 s if that never happens).
std::chrono::milliseconds kill_and_time_reclaim(const SlotObserver& slots, std::vector<ChildProcess>& children) {
  std::set<pid_t> pids;
  for (ChildProcess& c : children) {
    pids.insert(c.pid());
    kill(c.pid(), SIGKILL);
  }
  for (ChildProcess& c : children) c.wait();
  children.clear();
  const auto t0 = Clock::now();
  while (slots.held_by(pids) != 0 && Clock::now() - t0 < 10s) std::this_thread::sleep_for(2ms);
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0);
}

TEST(ClientDeath, SlotsOfClientsKilledAtEveryProtocolStepAreReclaimedWithinASecond) {
  Watchdog dog(600);
  const std::string shm = unique_shm_name("victims");
  DaemonProcess daemon(shm);
  ASSERT_TRUE(daemon.start());
  SlotObserver slots(shm);
  ASSERT_TRUE(slots.ok());
  HonestCallers honest(shm, 2, 2000ms);

  constexpr int kBatch = 8;  // victims alive at once (the daemon has 16 slots)
  const int step_kills = std::max(scaled(1000), kBatch * 6);
  const int random_kills = std::max(scaled(240), kBatch);
  std::mt19937 rng(5);
  std::map<std::string, int> seen_states;
  std::chrono::milliseconds worst{0};
  long rss_warm = 0;
  int fds_warm = 0;
  int killed = 0;

  for (int batch = 0; killed < step_kills; ++batch) {
    std::vector<ChildProcess> victims;
    std::vector<const Step*> steps;
    for (int k = 0; k < kBatch; ++k) {
      const Step& s = kSteps[(batch * kBatch + k + rng() % 6) % 6];
      victims.push_back(spawn({VICTIM_CLIENT_PATH, shm, s.name}));
      ASSERT_GT(victims.back().pid(), 0);
      steps.push_back(&s);
    }
    for (std::size_t v = 0; v < victims.size(); ++v) {
      const Step* s = steps[v];
      const pid_t pid = victims[v].pid();
      int status = 0;
      ASSERT_TRUE(victims[v].wait_stopped(&status))
          << "victim at step " << s->name << " ended before its step, status " << status;
      for (std::uint32_t i = 0; i < slots.slots(); ++i) {
        // Stopped, the victim may still see its answer arrive (publish, wait).
        const shm::SlotWord w = slots.word(i);
        if (w.pid != pid) continue;
        EXPECT_TRUE(s->states.count(w.state) != 0)
            << "victim at " << s->name << " holds slot " << i << " in state " << int(w.state);
        ++seen_states[std::string(s->name) + "/" + std::to_string(int(w.state))];
      }
    }
    const auto took = kill_and_time_reclaim(slots, victims);
    worst = std::max(worst, took);
    EXPECT_LT(took, 1000ms) << "slots of killed victims reclaimed too slowly";
    killed += kBatch;
    if (batch == 2) {  // warm: every path ran at least once
      rss_warm = rss_kib(daemon.pid());
      fds_warm = open_fds(daemon.pid());
    }
  }

  // Ordinary clients killed at random times, whatever they were doing.
  for (int done = 0; done < random_kills; done += kBatch) {
    std::vector<ChildProcess> clients;
    for (int k = 0; k < kBatch; ++k) {
      clients.push_back(spawn({VICTIM_CLIENT_PATH, shm, "loop"}));
      ASSERT_GT(clients.back().pid(), 0);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(2000 + rng() % 30000));
    const auto took = kill_and_time_reclaim(slots, clients);
    worst = std::max(worst, took);
    EXPECT_LT(took, 1000ms) << "slots of clients killed at random reclaimed too slowly";
  }

  // Leaving the honest callers running a moment proves the ring is whole again.
  std::this_thread::sleep_for(200ms);
  honest.stop();
  const long rss_end = rss_kib(daemon.pid());
  const int fds_end = open_fds(daemon.pid());
  EXPECT_EQ(slots.not_free(), 0) << "every slot is free once all clients are gone";
  EXPECT_EQ(honest.counts().errors.load(), 0u) << describe(honest.error_samples());
  EXPECT_EQ(honest.counts().wrong.load(), 0u);
  EXPECT_EQ(honest.counts().slow.load(), 0u);
  EXPECT_GT(honest.counts().ok.load(), 100u);
  EXPECT_EQ(fds_end, fds_warm) << "the daemon's file descriptors must not grow";
  if (!kSanitized) {
    EXPECT_LT(rss_end - rss_warm, 2048) << "daemon RSS grew from " << rss_warm << " to " << rss_end << " KiB";
  }
  std::string states;
  for (const auto& [k, n] : seen_states) states += " " + k + "=" + std::to_string(n);
  std::printf("killed %d victims at protocol steps and %d at random; slowest reclaim %lld ms; "
              "honest answers %llu; daemon RSS %ld -> %ld KiB, fds %d -> %d\n  step/state seen:%s\n",
              killed, random_kills, static_cast<long long>(worst.count()),
              static_cast<unsigned long long>(honest.counts().ok.load()), rss_warm, rss_end,
              fds_warm, fds_end, states.c_str());
  const int status = daemon.stop(SIGTERM);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "daemon status " << status;
}

// ---------------------------------------------------------------------------------------
// Daemon death

TEST(DaemonDeath, KilledMidRequestAHundredTimesCallersSeeUnavailableThenResume) {
  Watchdog dog(600);
  const std::string shm = unique_shm_name("daemonkill");
  const int cycles = std::max(scaled(100), 5);
  std::mt19937 rng(7);
  std::uint64_t last_epoch = 0;
  std::chrono::milliseconds slowest_resume{0};

  auto daemon = std::make_unique<DaemonProcess>(shm);
  ASSERT_TRUE(daemon->start());
  HonestCallers callers(shm, 3, 300ms);
  for (int cycle = 0; cycle < cycles; ++cycle) {
    {
      SlotObserver seg(shm);
      ASSERT_TRUE(seg.ok());
      EXPECT_GT(seg.segment().epoch(), last_epoch) << "every daemon start is a new epoch";
      last_epoch = seg.segment().epoch();
    }
    // Every caller is answered by this daemon, on its own (no re-creation of clients).
    callers.mark();
    const auto t0 = Clock::now();
    while (!callers.every_caller_answered() && Clock::now() - t0 < 10s) std::this_thread::sleep_for(1ms);
    ASSERT_TRUE(callers.every_caller_answered()) << "callers did not resume in cycle " << cycle;
    slowest_resume = std::max(slowest_resume, std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0));
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 20000));
    daemon->stop(SIGKILL);  // the callers are mid-request: they call without pause
    // A SIGKILLed daemon leaves its segment behind, still marked serving.
    EXPECT_EQ(access(("/dev/shm/" + shm).c_str(), F_OK), 0) << "stale segment expected";
    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 50));
    daemon = std::make_unique<DaemonProcess>(shm);
    ASSERT_TRUE(daemon->start()) << "a new daemon replaces the stale segment (cycle " << cycle << ")";
  }
  callers.stop();
  const auto& n = callers.counts();
  EXPECT_EQ(n.wrong.load(), 0u);
  EXPECT_EQ(n.slow.load(), 0u) << "a call overran its deadline";
  EXPECT_GT(n.errors.load(), 0u) << "calls while no daemon ran must have failed";
  for (const auto& [what, count] : callers.error_samples()) {
    EXPECT_EQ(what.rfind("unavailable: estimator unavailable", 0), 0u) << count << " x " << what;
  }
  std::printf("%d daemon kills: %llu answers, %llu 'unavailable', slowest resume %lld ms\n",
              cycles, static_cast<unsigned long long>(n.ok.load()),
              static_cast<unsigned long long>(n.errors.load()),
              static_cast<long long>(slowest_resume.count()));
}

// ---------------------------------------------------------------------------------------
// Hostile client

ChildProcess spawn_hostile(const std::string& shm, double seconds, const char* mode, int seed) {
  return spawn({HOSTILE_CLIENT_PATH, shm, std::to_string(seconds), mode, std::to_string(seed)});
}

// Whether `child` exits with status 0 within `within`; killed if it has not.
bool exited_cleanly(ChildProcess& child, std::chrono::seconds within) {
  const int status = child.wait_exit(within);
  if (status == -1) child.stop(SIGKILL);
  return status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// Honest clients must get correct answers or errors, never wrong numbers, while a
// hostile process does everything a client can do short of forging the slots other
// clients hold; afterwards the ring is whole and every call succeeds.
TEST(HostileClient, DaemonKeepsAnsweringHonestClientsCorrectlyOrWithAnError) {
  Watchdog dog(300);
  const std::string shm = unique_shm_name("hostile");
  DaemonProcess daemon(shm);
  ASSERT_TRUE(daemon.start());
  SlotObserver slots(shm);
  ASSERT_TRUE(slots.ok());
  const double seconds = std::max(1.0, 8.0 * scaled(100) / 100.0);
  {
    HonestCallers honest(shm, 3, 500ms);
    ChildProcess hostile = spawn_hostile(shm, seconds, "protocol", 11);
    ASSERT_GT(hostile.pid(), 0);
    EXPECT_TRUE(exited_cleanly(hostile, std::chrono::seconds(static_cast<int>(seconds) + 30)));
    honest.stop();
    const auto& n = honest.counts();
    EXPECT_EQ(n.wrong.load(), 0u) << "an honest client got a wrong number";
    EXPECT_EQ(n.slow.load(), 0u) << "a call overran its deadline";
    EXPECT_GT(n.ok.load(), 100u) << "the daemon stopped serving honest clients" << describe(honest.error_samples());
    std::printf("under a hostile writer: %llu correct answers, %llu errors:%s\n",
                static_cast<unsigned long long>(n.ok.load()),
                static_cast<unsigned long long>(n.errors.load()), describe(honest.error_samples()).c_str());
  }
  ASSERT_TRUE(daemon.alive()) << "the daemon died";
  // The hostile process is gone: whatever states it left its slots in, they come back.
  const auto t0 = Clock::now();
  while (slots.not_free() != 0 && Clock::now() - t0 < 3s) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(slots.not_free(), 0) << "slots left by the hostile client were not reclaimed:" << slots.states();
  {
    HonestCallers after(shm, 2, 1000ms);
    std::this_thread::sleep_for(500ms);
    after.stop();
    EXPECT_EQ(after.counts().errors.load(), 0u) << describe(after.error_samples());
    EXPECT_EQ(after.counts().wrong.load(), 0u);
    EXPECT_GT(after.counts().ok.load(), 10u);
  }
  const int status = daemon.stop(SIGTERM);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "daemon status " << status << " (a sanitizer report makes it non-zero)";
}

// What a victim_client "check" run saw (its one line of output).
struct VictimReport {
  bool exited_ok = false;
  unsigned long long ok = 0, wrong = 0, errors = 0, rejected = 0, last_failure_ns = 0, last_ok_ns = 0;
  std::string output;
};

// A long-lived honest client (victim_client check) calls throughout; the hostile writer
// attacks for `seconds` after it started; the victim goes on 2.5 s after the attack.
// Returns the victim's report and, in attack_end_ns, when the attacker had exited.
VictimReport attack_a_victim(const std::string& shm, const char* mode, double seconds, int seed,
                             std::uint64_t& attack_end_ns) {
  VictimReport report;
  char path[] = "/tmp/reliability-victim-XXXXXX";
  const int fd = mkstemp(path);
  EXPECT_GE(fd, 0);
  unlink(path);
  ChildProcess victim = spawn({VICTIM_CLIENT_PATH, shm, "check", std::to_string(seconds + 2.8)}, fd);
  EXPECT_GT(victim.pid(), 0);
  std::this_thread::sleep_for(300ms);  // the victim is attached and calling
  ChildProcess hostile = spawn_hostile(shm, seconds, mode, seed);
  EXPECT_GT(hostile.pid(), 0);
  EXPECT_TRUE(exited_cleanly(hostile, std::chrono::seconds(static_cast<int>(seconds) + 30)));
  attack_end_ns = shm::monotonic_ns();
  report.exited_ok = exited_cleanly(victim, 60s);
  report.output.resize(4096);
  report.output.resize(static_cast<std::size_t>(std::max<ssize_t>(0, pread(fd, report.output.data(), report.output.size(), 0))));
  close(fd);
  const auto at = report.output.find("ok=");
  if (at != std::string::npos) {
    std::sscanf(report.output.c_str() + at,
                "ok=%llu wrong=%llu errors=%llu rejected=%llu last_failure_ns=%llu last_ok_ns=%llu",
                &report.ok, &report.wrong, &report.errors, &report.rejected,
                &report.last_failure_ns, &report.last_ok_ns);
  }
  return report;
}

// The victim: never a wrong answer, no crash, and correct answers again within a second
// of the attack's end (failures only before, successes after).
void expect_victim_unharmed(const VictimReport& v, std::uint64_t attack_end_ns) {
  EXPECT_TRUE(v.exited_ok) << "the victim crashed or hung: " << v.output;
  EXPECT_EQ(v.wrong, 0u) << "a wrong answer was accepted: " << v.output;
  EXPECT_GT(v.ok, 0u) << v.output;
  const std::uint64_t recovered_by = attack_end_ns + 1'000'000'000ULL;
  EXPECT_LT(v.last_failure_ns, recovered_by)
      << "a call failed " << (static_cast<double>(v.last_failure_ns) - static_cast<double>(attack_end_ns)) / 1e6
      << " ms after the attack ended: " << v.output;
  EXPECT_GT(v.last_ok_ns, recovered_by) << "not served correctly after the attack: " << v.output;
  std::printf("victim: %s", v.output.c_str());
}

// A fresh daemon whose victim is attacked in `mode` (hostile_client.cpp) for ~3 s: the
// victim is unharmed, and the daemon lives through it and stops cleanly (a sanitizer
// report makes its status non-zero). Returns the victim's report.
VictimReport attack_then_stop(const char* mode, int seed) {
  const std::string shm = unique_shm_name(mode);
  DaemonProcess daemon(shm);
  if (!daemon.start()) {
    ADD_FAILURE() << "estimatord did not start";
    return {};
  }
  std::uint64_t attack_end = 0;
  const VictimReport v = attack_a_victim(shm, mode, std::max(1.0, 3.0 * scaled(100) / 100.0), seed, attack_end);
  expect_victim_unharmed(v, attack_end);
  EXPECT_TRUE(daemon.alive()) << "the daemon died";
  const int status = daemon.stop(SIGTERM);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "daemon status " << status;
  return v;
}

// The attack that made 6,947 of 6,976 answers of a long-lived client wrong, silently:
// a peer planting copies of its requests (predicted ids, other values) in slots of its
// own and replaying the daemon's answers to them, with their seal, into the victim's
// slot, while rewriting the victim's request bytes and length. The reply seal makes each
// of those a rejected reply (retried, or an integrity error), never an answer.
TEST(HostileClient, ForgerReplayingAnswersToPlantedCopiesGetsNoWrongAnswerAccepted) {
  Watchdog dog(120);
  EXPECT_GT(attack_then_stop("forge", 17).rejected, 0u)
      << "the forger never reached the victim: the test proves nothing";
}

// Random bytes over every byte of the segment, header and semaphores included: the
// daemon neither crashes nor touches memory outside the segment (under ASan/UBSan in the
// sanitizer build), restores its header, and the victim gets errors during the attack
// but never a wrong number, and is served again within a second once it stops.
TEST(HostileClient, DaemonSurvivesRandomBytesAnywhereInTheSegment) {
  Watchdog dog(120);
  EXPECT_GT(attack_then_stop("chaos", 13).errors, 0u)
      << "the random writer never reached the victim: the test proves nothing";
}

// utime + stime of a process, in clock ticks.
long cpu_ticks(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto paren = stat.rfind(')');
  if (paren == std::string::npos) return -1;
  std::istringstream fields(stat.substr(paren + 2));
  std::string skip;
  for (int i = 3; i < 14; ++i) fields >> skip;  // state .. cmajflt: fields 3 to 13
  long utime = 0, stime = 0;
  fields >> utime >> stime;
  return utime + stime;
}

// What used to pin the ring or a CPU for good, written by a peer that then exits: slots
// claimed for pid 1 (always alive), for another pid namespace with an endless lease, in
// undefined states; the header forged to "stopping" with another epoch, pid and sizes;
// ready-mask bits beyond the ring (a dispatch thread spun on them at 100 % CPU). The
// daemon restores the header within a housekeeping tick, stays idle, frees the forged
// "foreign" and undefined slots at once and the pid-1 slots at the lease cap.
TEST(HostileClient, NothingAPeerWritesPinsSlotsTheHeaderOrACpu) {
  Watchdog dog(120);
  const std::string shm = unique_shm_name("pin");
  DaemonProcess daemon(shm);
  ASSERT_TRUE(daemon.start());
  SlotObserver slots(shm);
  ASSERT_TRUE(slots.ok());
  const shm::SegmentHeader& h = slots.segment().view().header();
  std::array<std::uint8_t, shm::kCacheLine> line0{};
  std::memcpy(line0.data(), &h, line0.size());
  const std::uint64_t epoch = h.epoch;
  const auto restored = [&] {
    return std::memcmp(&h, line0.data(), line0.size()) == 0 && h.epoch == epoch &&
           h.state.load() == static_cast<std::uint32_t>(shm::ServerState::kServing);
  };

  ChildProcess hostile = spawn_hostile(shm, 0, "pin", 1);
  ASSERT_GT(hostile.pid(), 0);
  ASSERT_TRUE(exited_cleanly(hostile, 30s));
  const auto t0 = Clock::now();
  EXPECT_FALSE(restored() && slots.not_free() == 0) << "the hostile peer forged nothing";
  while (!restored() && Clock::now() - t0 < 5s) std::this_thread::sleep_for(5ms);
  const auto header_ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0);
  EXPECT_TRUE(restored()) << "the forged header was never restored";
  EXPECT_LT(header_ms, 1000ms) << "one housekeeping tick is 250 ms";

  // Idle but for the forged mask bits: the daemon's CPU time over a second.
  const long ticks0 = cpu_ticks(daemon.pid());
  std::this_thread::sleep_for(1s);
  const long ticks = cpu_ticks(daemon.pid()) - ticks0;
  const long hz = sysconf(_SC_CLK_TCK);
  EXPECT_LT(ticks, hz / 4) << "the daemon used " << ticks << " of " << hz << " ticks in a second idle";

  // A second or more on, every slot whose owner nothing can fault (pid 1, alive) is still
  // held: kinds 0-2 of hostile_client's pin (slot i is kind i % 6).
  int pid1_kinds = 0;
  for (std::uint32_t i = 0; i < slots.slots(); ++i) pid1_kinds += i % 6 < 3 ? 1 : 0;
  const int held = slots.not_free();
  EXPECT_EQ(held, pid1_kinds) << slots.states();
  while (slots.not_free() != 0 && Clock::now() - t0 < std::chrono::nanoseconds(shm::kLeaseCapNs) + 5s) {
    std::this_thread::sleep_for(20ms);
  }
  const auto freed_ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0);
  EXPECT_EQ(slots.not_free(), 0) << slots.states();
  EXPECT_LT(freed_ms, std::chrono::nanoseconds(shm::kLeaseCapNs) + 1500ms)
      << "the lease cap plus two housekeeping ticks";
  {
    HonestCallers after(shm, 2, 1000ms);
    std::this_thread::sleep_for(300ms);
    after.stop();
    EXPECT_EQ(after.counts().errors.load(), 0u) << describe(after.error_samples());
    EXPECT_EQ(after.counts().wrong.load(), 0u);
    EXPECT_GT(after.counts().ok.load(), 10u);
  }
  std::printf("header restored after %lld ms, daemon CPU %ld/%ld ticks in an idle second, "
              "%d pid-1 slots held until %lld ms (lease cap %llu ms)\n",
              static_cast<long long>(header_ms.count()), ticks, hz, held,
              static_cast<long long>(freed_ms.count()),
              static_cast<unsigned long long>(shm::kLeaseCapNs / 1'000'000));
  const int status = daemon.stop(SIGTERM);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "daemon status " << status;
}

// ---------------------------------------------------------------------------------------
// Access control and /dev/shm size

// Runs `body` in a child that dropped to uid 65534 with group `gid`; returns what it wrote.
std::string as_other_user(gid_t gid, const std::function<std::string()>& body) {
  int fds[2];
  if (pipe(fds) != 0) return "pipe failed";
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    std::string out;
    if (setgroups(0, nullptr) != 0 || setgid(gid) != 0 || setuid(65534) != 0) {
      out = "cannot drop privileges";
    } else {
      out = body();
    }
    (void)!write(fds[1], out.data(), out.size());
    _exit(0);
  }
  track_child(pid);
  close(fds[1]);
  std::string out;
  char buf[512];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) out.append(buf, static_cast<std::size_t>(n));
  close(fds[0]);
  waitpid(pid, nullptr, 0);
  untrack_child(pid);
  return out;
}

// As a client that expects the daemon to be root (uid 0) with a segment of at most 0660.
std::string attach_and_ping(const std::string& shm) {
  auto seg = shm::ClientSegment::attach(shm, {0, 0660});
  if (!seg.ok()) return "attach " + seg.status().to_string();
  client::Client c({.shm_name = shm, .daemon_uid = 0});
  return "ping " + c.ping(2s).to_string();
}

TEST(AccessControl, AnotherUserCannotAttachTheDefault0600Segment) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to run a client as another user (uid 65534)";
  Watchdog dog(60);
  const std::string shm = unique_shm_name("mode0600");
  DaemonProcess daemon(shm);
  ASSERT_TRUE(daemon.start());
  const std::string got = as_other_user(65534, [&] { return attach_and_ping(shm); });
  EXPECT_EQ(got.rfind("attach permission_denied: ", 0), 0u) << got;
  EXPECT_NE(got.find("'" + shm + "'"), std::string::npos) << "the message names the segment: " << got;
  const std::string ping = as_other_user(65534, [&] {
    client::Client c({.shm_name = shm});
    return std::string(code_name(c.ping(1s).code()));
  });
  EXPECT_EQ(ping, "permission_denied");
}

TEST(AccessControl, ShmMode0660AdmitsAClientOfTheGroup) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to run a client as another user (uid 65534)";
  Watchdog dog(60);
  const std::string shm = unique_shm_name("mode0660");
  DaemonProcess daemon(shm, {"--shm-mode", "0660"});
  ASSERT_TRUE(daemon.start());
  struct stat st {};
  ASSERT_EQ(stat(("/dev/shm/" + shm).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  // Same group as the segment (the daemon's), another user: admitted.
  EXPECT_EQ(as_other_user(st.st_gid, [&] { return attach_and_ping(shm); }), "ping ok");
  // Another group: still refused.
  const std::string other = as_other_user(65534, [&] { return attach_and_ping(shm); });
  EXPECT_EQ(other.rfind("attach permission_denied: ", 0), 0u) << other;
}

TEST(DevShm, TooSmallForTheSegmentTheDaemonRefusesToStartNamingBothSizes) {
  Watchdog dog(60);
  struct statvfs vfs {};
  ASSERT_EQ(statvfs("/dev/shm", &vfs), 0);
  const std::uint64_t total = static_cast<std::uint64_t>(vfs.f_blocks) * vfs.f_frsize;
  // The largest segment the options allow: 512 slots of 1 GiB requests + 512 MiB replies.
  const std::uint64_t need = shm::segment_bytes(512, 1U << 30, 1U << 29);
  if (need <= total) GTEST_SKIP() << "/dev/shm holds " << total << " bytes: cannot make it too small";
  const std::string shm = unique_shm_name("toosmall");
  char path[] = "/tmp/reliability-stderr-XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  unlink(path);
  const TrackedSegment segment(shm);
  ChildProcess daemon = spawn({ESTIMATORD_PATH, "--shm-name", shm, "--slots", "512", "--slot-bytes",
                               std::to_string(1U << 30), "--no-fetch"},
                              fd);
  ASSERT_GT(daemon.pid(), 0);
  const int status = daemon.wait();
  std::string out(8192, '\0');
  out.resize(static_cast<std::size_t>(std::max<ssize_t>(0, pread(fd, out.data(), out.size(), 0))));
  close(fd);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << out;
  EXPECT_NE(out.find("needs " + std::to_string(need / (1024 * 1024)) + " MiB"), std::string::npos) << out;
  EXPECT_NE(out.find("/dev/shm has "), std::string::npos) << out;
  EXPECT_NE(out.find(" free"), std::string::npos) << out;
  EXPECT_NE(access(("/dev/shm/" + shm).c_str(), F_OK), 0) << "no segment left behind";
}

// ---------------------------------------------------------------------------------------
// Regressions found by the tests above, reproduced in one process.

class ShmRegression : public ::testing::Test {
 protected:
  void SetUp() override {
    shm::SegmentConfig cfg;
    cfg.name = unique_shm_name("regression");
    cfg.slots = 2;
    cfg.request_capacity = cfg.response_capacity = 4096;
    auto s = shm::ServerSegment::create(cfg);
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    server_ = std::move(s).value();
    server_->mark_serving();
    auto c = shm::ClientSegment::attach(cfg.name);
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    client_ = std::move(c).value();
  }
  std::unique_ptr<shm::ServerSegment> server_;
  std::unique_ptr<shm::ClientSegment> client_;
};

// The semaphores were glibc sem_t: a client writing garbage over one made the daemon's next
// sem_post or sem_clockwait abort the process ("The futex facility returned an unexpected
// error code"). Every byte of a semaphore may now be garbage.
TEST_F(ShmRegression, ScribbledSemaphoreNeitherAbortsNorOverrunsItsDeadline) {
  shm::ShmSemaphore* sem = &server_->view().header().doorbell;
  std::memset(static_cast<void*>(sem), 0xA5, sizeof *sem);
  shm::sem_post_shared(sem);
  EXPECT_TRUE(shm::sem_wait_until(sem, shm::monotonic_ns() + 1'000'000)) << "a huge count is posts";
  std::memset(static_cast<void*>(sem), 0xFF, sizeof *sem);
  sem->count.store(0);
  const auto t0 = Clock::now();
  EXPECT_FALSE(shm::sem_wait_until(sem, shm::monotonic_ns() + 20'000'000));
  EXPECT_LT(Clock::now() - t0, 500ms);
  shm::sem_post_shared(sem);
  EXPECT_TRUE(shm::sem_wait_until(sem, shm::monotonic_ns() + 20'000'000));
}

// A client that wrote Busy into its slot's state word and died took the slot out of the ring
// for good: the reaper skipped every Busy slot. It now frees a Busy slot no dispatch thread
// handles, and never one a thread does.
TEST_F(ShmRegression, ReaperFreesABusySlotNoThreadHandlesButNeverOneInHand) {
  shm::ClientRing ring(*client_);
  const std::uint64_t now = shm::monotonic_ns();
  const std::uint32_t slot = ring.claim(now + 1'000'000'000, now + 60'000'000'000, 0).value().slot;
  const std::uint8_t request[16] = {};
  ASSERT_TRUE(ring.publish({slot, 1}, request, 1).ok());
  shm::ServerRing server_ring(server_->view());
  ASSERT_TRUE(server_ring.take().has_value());  // Busy, and "handled" below
  shm::SlotReaper reaper(server_->view());
  auto in_hand = [slot](std::uint32_t i) { return i == slot; };
  auto nobody = [](std::uint32_t) { return false; };
  EXPECT_EQ(reaper.sweep(shm::monotonic_ns(), in_hand), 0u);
  EXPECT_EQ(reaper.sweep(shm::monotonic_ns(), in_hand), 0u) << "a slot in hand stays Busy";
  EXPECT_EQ(reaper.sweep(shm::monotonic_ns(), nobody), 0u) << "seen once: may be being taken";
  EXPECT_EQ(reaper.sweep(shm::monotonic_ns(), nobody), 1u);
  EXPECT_EQ(shm::SlotWord::unpack(server_->view().slot(slot).control->word.load()).state,
            shm::SlotState::kFree);
  // Without the daemon's answer, the legacy call leaves Busy slots alone.
  shm::SlotControl* c = server_->view().slot(1 - slot).control;
  c->word.store(shm::SlotWord{shm::SlotState::kBusy, 9, 0x3FFFFFF0}.pack());
  EXPECT_EQ(reaper.sweep(shm::monotonic_ns()), 0u);
  EXPECT_EQ(reaper.sweep(shm::monotonic_ns()), 0u);
}

}  // namespace
}  // namespace estimator::testing
