// SPDX-License-Identifier: Apache-2.0
// estimator-bench: round-trip latency and throughput of one estimate request, carried
//   ring      - through the shared-memory ring (real daemon core in a child, real clients),
//               hot and sleeping, by 1 client or several client threads at once,
//   socket    - through a unix socket carrying the same FlatBuffers bytes (the baseline),
//   json      - as Kepler v0.9 JSON through the daemon's Kepler endpoint, a connection
//               per request: the endpoint alone, and with Kepler's own encoding and
//               decoding (what Kepler pays in all),
// beside the machine's own limits measured in the same run:
//   floor     - a raw shared-memory ping-pong of same-sized bytes, and the same carrying
//               the ring's work (variant "work": encoding, seal, handler, decoding),
//   cacheline - a spinning ping-pong of one flag on one cache line (no payload),
//   futex     - a sleeping ping-pong through FUTEX_WAIT/FUTEX_WAKE (no payload),
//   memcpy    - one in-process copy of the request's bytes,
// for rows x features matrices of the linear model and of a 100-tree XGBoost model; then
// the targets with whether this run meets them, and the ratios on the last line:
//   ring_vs_limit_p50_100=... ring_vs_socket_p50=... ring_vs_socket_p50_100=...
//   json_vs_socket_p50_100=... periodic_vs_hot_p50=... periodic_daemon_cpu_pct=...
//   ring_default_vs_socket_blocking_p50=...
// `--resources` measures the real estimatord instead (bench/resources.h).
//
// Why the comparison is fair: every server runs side by side for the whole run, and the
// measurements are interleaved: each case's round trips are split into rounds, and in
// every round each lane (a mode, its variant and client count) runs its share after a
// warm-up, in an order rotated from round to round. A noisy neighbour or frequency drift
// on this shared machine thus hits every lane alike instead of one lane's whole block.
// Nothing is pinned: clients and servers share the machine's cores as an exporter and the
// daemon would. Every reply is checked (rows, model and finite powers; the JSON reply
// against the local handler's answer; rows, size and an echo of the request in floor
// mode, the seal and the decoded reply in floor/work; the exact answering value in the
// ping-pongs), so a broken path cannot post good numbers.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "bench/modes.h"
#include "bench/periodic.h"
#include "bench/report.h"
#include "bench/resources.h"
#include "bench/stats.h"
#include "bench/workload.h"
#include "bench/xgboost_workload.h"
#include "models/embedded_defaults.h"
#include "models/registry.h"

extern char** environ;

using namespace estimator;
using namespace estimator::bench;

namespace {

struct Plan {
  std::size_t iterations = 200'000;  // timed round trips per case up to 100 rows
  std::size_t iterations_large = 50'000;  // from 500 rows
  std::size_t warmup = 2'000;  // untimed round trips before each round's share
  std::size_t warmup_large = 500;
  std::size_t rounds = 6;
  // The whole measurement's time budget, split evenly among the (round, case, lane)
  // segments, a quarter of each for the warm-up: on a loaded machine (or for a slow lane:
  // json) a run ends on time with fewer round trips (the table's n column; a cut
  // segment's samples are weighted up to its planned count, see stats.h).
  double budget_s = 180;

  std::size_t total(std::uint32_t rows) const {
    return rows >= 500 ? iterations_large : iterations;
  }
  std::size_t per_round(std::uint32_t rows) const {
    return (total(rows) + rounds - 1) / rounds;
  }
  std::size_t warm(std::uint32_t rows) const { return rows >= 500 ? warmup_large : warmup; }
};

std::string load_average() {
  double load[3] = {0, 0, 0};
  if (getloadavg(load, 3) != 3) return "unknown";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f %.2f %.2f", load[0], load[1], load[2]);
  return buf;
}

bool has(const std::vector<std::string>& names, std::string_view name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

// A mode instance and the cases it runs; samples[i] holds case i's round trips.
struct Lane {
  LaneLabel label;
  std::vector<std::size_t> cases;
  std::unique_ptr<Mode> mode;
  std::vector<Samples> samples;
  int start_order = 0;  // lower forks first (see start_lanes)
};

// Case specs, deduplicated: index of `spec` in `specs`, appended when new.
std::size_t add_case(std::vector<CaseSpec>& specs, const CaseSpec& spec) {
  const auto it = std::find(specs.begin(), specs.end(), spec);
  if (it != specs.end()) return static_cast<std::size_t>(it - specs.begin());
  specs.push_back(spec);
  return specs.size() - 1;
}

RingRegime regime_of(const std::string& variant) {
  for (const RingRegime r : {RingRegime::kDefault, RingRegime::kSpin, RingRegime::kSleep,
                             RingRegime::kPredict}) {
    if (variant == regime_variant(r)) return r;
  }
  return RingRegime::kDefault;
}

// The dispatch threads a "threads-N" variant names; 0 for every other variant.
unsigned thread_count(const std::string& variant) {
  constexpr std::string_view kPrefix = "threads-";
  if (!variant.starts_with(kPrefix)) return 0;
  return static_cast<unsigned>(std::stoul(variant.substr(kPrefix.size())));
}

// Starts every lane's server. The socket lane last: a child inherits the parent's
// descriptors, and no other server should hold the socket's client end.
Status start_lanes(std::vector<Lane>& lanes, const std::vector<Case>& cases,
                   std::shared_ptr<const models::Registry> registry, const ModeOptions& options) {
  std::vector<Lane*> order;
  for (Lane& l : lanes) order.push_back(&l);
  std::stable_sort(order.begin(), order.end(),
                   [](const Lane* a, const Lane* b) { return a->start_order < b->start_order; });
  std::map<std::string, std::shared_ptr<RingDaemon>> daemons;  // one per regime
  for (Lane* l : order) {
    std::fflush(nullptr);
    const std::string& m = l->label.mode;
    Result<std::unique_ptr<Mode>> mode = Status(Code::kInternal, "unknown mode " + m);
    if (m == "ring") {
      // The shared-client lane calls the spinning daemon (beside the one client per thread);
      // a threads-N lane, a daemon of N dispatch threads in the threads regime.
      const bool shared = l->label.variant == "shared";
      const std::string regime = shared ? "spin" : l->label.variant;
      const unsigned threads = thread_count(regime);
      std::shared_ptr<RingDaemon>& daemon = daemons[regime];
      if (daemon == nullptr) {
        auto d = start_ring_daemon(registry, options,
                                   threads != 0 ? RingRegime::kThreads : regime_of(regime),
                                   std::max(threads, 1U));
        if (!d.ok()) return d.status();
        daemon = std::move(d).value();
      }
      mode = ring_clients(daemon, cases, l->label.clients, shared);
    } else if (m == "socket") {
      mode = start_socket(cases, registry, options, l->label.variant == "poll");
    } else if (m == "json") {
      mode = start_json(cases, registry, options, l->label.variant == "kepler");
    } else if (m == "floor") {
      mode = start_floor(cases, l->label.variant == "work" ? registry : nullptr, options);
    } else if (m == "cacheline") {
      mode = start_cacheline(options);
    } else if (m == "futex") {
      mode = start_futex(options);
    } else if (m == "memcpy") {
      mode = start_memcpy(cases);
    }
    if (!mode.ok()) return mode.status();
    l->mode = std::move(mode).value();
  }
  return Status::Ok();
}

// Runs the interleaved rounds into each lane's samples.
Status measure(std::vector<Lane>& lanes, const std::vector<Case>& cases, const Plan& plan) {
  std::size_t per_round_segments = 0;
  for (Lane& l : lanes) {
    per_round_segments += l.cases.size();
    l.samples.assign(cases.size(), Samples{});
    for (const std::size_t i : l.cases) {
      l.samples[i].reserve(plan.per_round(cases[i].rows) * plan.rounds);
    }
  }
  const std::size_t segments = plan.rounds * std::max<std::size_t>(per_round_segments, 1);
  const auto segment = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(plan.budget_s / static_cast<double>(segments)));

  for (std::size_t round = 0; round < plan.rounds; ++round) {
    std::fprintf(stderr, "estimator-bench: round %zu/%zu\n", round + 1, plan.rounds);
    for (std::size_t i = 0; i < cases.size(); ++i) {
      for (std::size_t k = 0; k < lanes.size(); ++k) {
        Lane& lane = lanes[(k + round + i) % lanes.size()];
        if (std::find(lane.cases.begin(), lane.cases.end(), i) == lane.cases.end()) continue;
        Mode& mode = *lane.mode;
        const auto start = Clock::now();
        if (Status s = mode.run(i, plan.warm(cases[i].rows), start + segment / 4, nullptr);
            !s.ok()) {
          return s;
        }
        const std::size_t planned = plan.per_round(cases[i].rows);
        const auto t0 = Clock::now();
        if (Status s = mode.run(i, planned, start + segment, &lane.samples[i]); !s.ok()) {
          return s;
        }
        lane.samples[i].end_segment(planned, elapsed_ns(t0, Clock::now()));
      }
    }
  }
  return Status::Ok();
}

// Runs the plot script on the CSV: /usr/bin/python3 SCRIPT CSV PNG, its output on stderr
// (stdout carries only the results). A missing matplotlib is the script's clear message.
void plot(const std::string& script, const std::string& csv, const std::string& png) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, STDERR_FILENO, STDOUT_FILENO);
  std::string python = "/usr/bin/python3";
  std::vector<char*> argv{python.data(), const_cast<char*>(script.c_str()),
                          const_cast<char*>(csv.c_str()), const_cast<char*>(png.c_str()),
                          nullptr};
  pid_t pid = -1;
  std::fflush(nullptr);
  const int err = posix_spawn(&pid, python.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (err != 0) {
    std::fprintf(stderr, "estimator-bench: no plot: cannot run %s: %s\n", python.c_str(),
                 std::strerror(err));
    return;
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    std::fprintf(stderr, "estimator-bench: plot written to %s\n", png.c_str());
  } else {
    std::fprintf(stderr, "estimator-bench: no plot written (%s failed, see above)\n",
                 script.c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"estimator-bench: round-trip latency of the shared-memory ring against a unix "
               "socket carrying the same bytes, Kepler's JSON protocol and the machine's "
               "own limits, in one run"};
  bool quick = false;
  std::string csv;
  std::string plot_file;
  std::string plot_script = ESTIMATOR_BENCH_PLOT_SCRIPT;
  Plan plan;
  std::size_t iterations = 0;
  std::size_t rounds = 0;
  double budget_s = 0;
  double spin_us = 1000;
  unsigned timeout_ms = 2000;
  app.add_flag("--quick", quick,
               "20k round trips per case (5k from 500 rows) in 3 rounds, 30 s budget; "
               "under 40 s");
  app.add_option("--csv", csv,
                 "also write the results to this file (mode,variant,clients,model,rows,"
                 "features,req_bytes,resp_bytes,n,p50_us,p90_us,p99_us,p999_us,max_us,"
                 "slow_pct,req_per_s,rows_per_s)");
  app.add_option("--plot", plot_file,
                 "also draw the latencies into this PNG (writes the CSV, FILE.csv unless "
                 "--csv names one; needs /usr/bin/python3 with matplotlib)");
  app.add_option("--plot-script", plot_script, "the plotting script")->capture_default_str();
  app.add_option("--iterations", iterations,
                 "timed round trips per case up to 100 rows (a quarter of it from 500 rows)");
  app.add_option("--rounds", rounds, "interleaved rounds the round trips are split into");
  app.add_option("--budget-s", budget_s,
                 "time budget of the measurement (default 180, 30 with --quick); round trips "
                 "stop early when it runs out");

  std::vector<std::string> modes{"ring", "socket", "json", "floor", "cacheline", "futex",
                                 "memcpy"};
  app.add_option("--modes", modes, "modes to run (targets and ratios needing a missing one "
                                   "are not measured / nan)")
      ->check(CLI::IsMember({"ring", "socket", "json", "floor", "cacheline", "futex", "memcpy"}))
      ->delimiter(',')
      ->capture_default_str();
  std::vector<std::string> sets{"primary", "features", "xgboost", "sleeping", "clients",
                                "threads", "periodic"};
  app.add_option("--sets", sets,
                 "case sets: primary (linear, 10 features, --rows, every mode), features "
                 "(--feature-counts x --feature-rows: ring, socket, floor, memcpy), xgboost "
                 "(--xgboost-rows: ring, socket), sleeping (sleeping ring at "
                 "--parallel-rows), clients (--clients threads at --parallel-rows), threads "
                 "(1, 2 and 4 blocking clients of --threads-rows xgboost requests, daemon "
                 "with 1 and 2 dispatch threads), periodic (one request every --periods-ms "
                 "at --parallel-rows: ring with the predictive wake-up, ring as shipped, "
                 "blocking socket, then alone a ring whose daemon never sleeps; after the "
                 "rest)")
      ->check(CLI::IsMember({"primary", "features", "xgboost", "sleeping", "clients",
                             "threads", "periodic"}))
      ->delimiter(',')
      ->capture_default_str();
  std::vector<std::uint32_t> rows{1, 10, 100, 500, 1000};
  app.add_option("--rows", rows, "row counts of the primary set (ratios need 1 and 100)")
      ->check(CLI::Range(std::uint32_t{1}, kMaxRows))
      ->delimiter(',')
      ->capture_default_str();
  std::vector<std::uint32_t> feature_counts{5, 20};
  app.add_option("--feature-counts", feature_counts, "feature counts of the features set")
      ->check(CLI::Range(std::uint32_t{2}, kMaxFeatures))
      ->delimiter(',')
      ->capture_default_str();
  std::vector<std::uint32_t> feature_rows{1, 100, 1000};
  app.add_option("--feature-rows", feature_rows, "row counts of the features set")
      ->check(CLI::Range(std::uint32_t{1}, kMaxRows))
      ->delimiter(',')
      ->capture_default_str();
  std::vector<std::uint32_t> xgboost_rows{1, 100, 500};
  app.add_option("--xgboost-rows", xgboost_rows, "row counts of the xgboost set (10 features)")
      ->check(CLI::Range(std::uint32_t{1}, kMaxRows))
      ->delimiter(',')
      ->capture_default_str();
  std::uint32_t threads_rows = 1000;
  app.add_option("--threads-rows", threads_rows, "rows of the threads set's xgboost requests")
      ->check(CLI::Range(std::uint32_t{1}, kMaxRows))
      ->capture_default_str();
  std::vector<std::uint32_t> parallel_rows{1, 100};
  app.add_option("--parallel-rows", parallel_rows, "row counts of the sleeping and clients sets")
      ->check(CLI::Range(std::uint32_t{1}, kMaxRows))
      ->delimiter(',')
      ->capture_default_str();
  std::vector<double> periods_ms{1, 10, 100, 1000};
  app.add_option("--periods-ms", periods_ms,
                 "periods of the periodic set (--quick: those up to 10 ms)")
      ->check(CLI::Range(0.1, 10000.0))
      ->delimiter(',')
      ->capture_default_str();
  std::vector<unsigned> client_counts{2, 4};
  app.add_option("--clients", client_counts, "client thread counts of the clients set")
      ->check(CLI::Range(2U, 64U))
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--spin-us", spin_us,
                 "how long the hot daemon, its clients and the spinning servers spin for "
                 "their peer")
      ->capture_default_str();
  app.add_option("--timeout-ms", timeout_ms, "a server silent this long fails the run")
      ->capture_default_str();

  bool resources = false;
  ResourceOptions ropts;
  app.add_flag("--resources", resources,
               "measure the real estimatord instead: RSS, idle CPU, start-up time, binary "
               "and image size");
  app.add_option("--estimatord", ropts.estimatord, "the daemon binary for --resources")
      ->capture_default_str();
  app.add_option("--idle-s", ropts.idle_s, "idle time over which --resources measures CPU")
      ->capture_default_str();
  app.add_option("--collect-script", ropts.collect_script,
                 "deploy/collect-runtime.sh, for the image size of --resources")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  spdlog::set_level(spdlog::level::warn);
  if (resources) return run_resources(ropts);

  if (quick) plan = Plan{20'000, 5'000, 1'000, 250, 3, 30};
  if (iterations != 0) {
    plan.iterations = iterations;
    plan.iterations_large = std::max<std::size_t>(1, iterations / 4);
  }
  if (rounds != 0) plan.rounds = rounds;
  if (budget_s > 0) plan.budget_s = budget_s;
  ModeOptions options;
  options.spin = std::chrono::microseconds(static_cast<std::int64_t>(spin_us));
  options.timeout = std::chrono::milliseconds(timeout_ms);

  // The cases of each set, then the lanes that run them.
  std::vector<CaseSpec> specs;
  std::vector<std::size_t> primary, features, xgboost, parallel, threaded;
  if (has(sets, "primary")) {
    for (const auto r : rows) {
      primary.push_back(add_case(specs, {.rows = r, .cols = kPrimaryFeatures}));
    }
  }
  if (has(sets, "features")) {
    for (const auto f : feature_counts) {
      for (const auto r : feature_rows) features.push_back(add_case(specs, {.rows = r, .cols = f}));
    }
  }
  if (has(sets, "xgboost")) {
    for (const auto r : xgboost_rows) {
      xgboost.push_back(
          add_case(specs, {.rows = r, .cols = kPrimaryFeatures, .model = ModelKind::kXGBoost}));
    }
  }
  if (has(sets, "threads")) {
    threaded.push_back(add_case(
        specs, {.rows = threads_rows, .cols = kPrimaryFeatures, .model = ModelKind::kXGBoost}));
  }
  if (has(sets, "sleeping") || has(sets, "clients") || has(sets, "periodic")) {
    for (const auto r : parallel_rows) {
      parallel.push_back(add_case(specs, {.rows = r, .cols = kPrimaryFeatures}));
    }
  }
  const auto join = [](std::initializer_list<const std::vector<std::size_t>*> parts) {
    std::vector<std::size_t> out;
    for (const auto* p : parts) {
      for (const std::size_t i : *p) {
        if (std::find(out.begin(), out.end(), i) == out.end()) out.push_back(i);
      }
    }
    return out;
  };
  // The payload-free limits run beside the primary cases (or the parallel ones without).
  const std::vector<std::size_t>& limit_cases = primary.empty() ? parallel : primary;

  std::vector<Lane> lanes;
  const auto lane = [&](std::string mode, std::string variant, unsigned clients,
                        std::vector<std::size_t> cases, int start_order) {
    if (!has(modes, mode) || cases.empty()) return;
    lanes.push_back(Lane{{std::move(mode), std::move(variant), clients}, std::move(cases), {}, {},
                         start_order});
  };
  lane("ring", "spin", 1, join({&primary, &features, &xgboost}), 5);
  lane("ring", "default", 1, primary, 5);
  if (has(sets, "clients")) {
    for (const unsigned n : client_counts) lane("ring", "spin", n, parallel, 5);
    lane("ring", "shared", 4, parallel, 5);
  }
  if (has(sets, "sleeping")) lane("ring", "block", 1, parallel, 5);
  if (has(sets, "sleeping") && has(sets, "clients")) {
    for (const unsigned n : client_counts) lane("ring", "block", n, parallel, 5);
  }
  for (const unsigned t : {1U, 2U}) {
    for (const unsigned n : kThreadsClients) {
      lane("ring", "threads-" + std::to_string(t), n, threaded, 5);
    }
  }
  lane("socket", "block", 1, join({&primary, &features, &xgboost}), 9);
  lane("socket", "poll", 1, primary, 9);
  lane("json", "endpoint", 1, primary, 4);
  lane("json", "kepler", 1, primary, 4);
  // The sleeping target adds the floor to a futex ping-pong at the sleeping ring's sizes.
  const std::vector<std::size_t> sleeping_cases =
      has(sets, "sleeping") ? parallel : std::vector<std::size_t>{};
  lane("floor", "spin", 1, join({&primary, &features, &sleeping_cases}), 1);
  lane("floor", "work", 1, primary, 1);
  lane("cacheline", "spin", 1, limit_cases, 2);
  lane("futex", "block", 1, limit_cases, 3);
  lane("memcpy", "in-process", 1, join({&primary, &features}), 0);
  if (lanes.empty()) {
    std::fprintf(stderr, "estimator-bench: nothing to run with these --modes and --sets\n");
    print_ratios({}, {});
    return 2;
  }

  // The registry every server serves: the embedded defaults and one XGBoost model per
  // feature count of the xgboost cases.
  std::vector<models::ModelFolder> folders = models::embedded_model_folders();
  for (const CaseSpec& s : specs) {
    if (s.model != ModelKind::kXGBoost) continue;
    const std::string name = xgboost_model_name(s.cols);
    const bool have = std::any_of(folders.begin(), folders.end(), [&](const auto& f) {
      return f.origin == "bench:" + name;
    });
    if (!have) folders.push_back(xgboost_folder(s.cols));
  }
  std::shared_ptr<const models::Registry> registry = models::Registry::build(folders);
  for (const models::Refusal& r : registry->refused()) {
    std::fprintf(stderr, "estimator-bench: model %s refused: %s\n", r.origin.c_str(),
                 r.reason.to_string().c_str());
  }
  auto cases = make_cases(registry, specs);
  if (!cases.ok()) {
    std::fprintf(stderr, "estimator-bench: the workload fails locally: %s\n",
                 cases.status().to_string().c_str());
    print_ratios({}, {});
    return 1;
  }

  std::printf("estimator-bench: rows x features requests (%.*s %.*s): linear = %.*s (reads 2 "
              "columns), xgboost = %u trees of depth %u over every column, selected by name\n",
              static_cast<int>(kSource.size()), kSource.data(),
              static_cast<int>(kOutputType.size()), kOutputType.data(),
              static_cast<int>(kLinearModel.size()), kLinearModel.data(), kXGBoostTrees,
              kXGBoostDepth);
  std::printf("%zu round trips per case and lane (%zu from 500 rows) in %zu interleaved "
              "rounds, warm-up %zu (%zu) per round; budget %.0f s; spin %.0f us\n",
              plan.per_round(1) * plan.rounds, plan.per_round(500) * plan.rounds, plan.rounds,
              plan.warmup, plan.warmup_large, plan.budget_s, spin_us);
  std::printf("ring: daemon core + client::Client (spin: both sides spin; block: neither "
              "does; cl: client threads); socket: unix stream, length-prefixed FlatBuffers, "
              "same handler; json: Kepler v0.9 JSON, a connection per request (endpoint: text "
              "ready, reply read; kepler: encoding and decoding timed too); floor: raw "
              "shm ping-pong of the same bytes (work: carrying the ring's work, not its "
              "protocol); cacheline/futex: bare ping-pongs; memcpy: "
              "the request copied once in-process\n");
  const std::string load_start = load_average();

  Status status = start_lanes(lanes, *cases, registry, options);
  // The periodic lanes' servers, started now: they fork, and measure() starts threads.
  std::vector<PeriodicLane> periodic;
  if (status.ok() && has(sets, "periodic")) {
    if (quick) std::erase_if(periods_ms, [](double p) { return p > 10; });
    if (has(modes, "ring")) {
      for (const RingRegime r : {RingRegime::kPredict, RingRegime::kDefault}) {
        std::fflush(nullptr);
        auto d = start_ring_daemon(registry, options, r);
        if (!d.ok()) {
          status = d.status();
          break;
        }
        auto m = ring_clients(std::move(d).value(), *cases, 1);
        if (!m.ok()) {
          status = m.status();
          break;
        }
        periodic.push_back({{"ring", regime_variant(r), 1}, std::move(m).value()});
      }
    }
    // The bounds: servers that never sleep between requests (they spin 1.5 periods after
    // each answer), which no wake-up policy can beat at a core's cost. The ring's daemon;
    // the floor, and the floor carrying the ring's work: what a periodic request costs
    // with no protocol at all, so what is left is the client's and the machine's.
    ModeOptions awake = options;
    if (!periods_ms.empty()) {
      awake.spin = std::chrono::microseconds(static_cast<std::int64_t>(
          1500.0 * *std::max_element(periods_ms.begin(), periods_ms.end())));
    }
    const auto alone = [&](LaneLabel label, Result<std::unique_ptr<Mode>> m) {
      if (!m.ok()) {
        status = m.status();
        return;
      }
      periodic.push_back({std::move(label), std::move(m).value(),
                          static_cast<std::uint64_t>(awake.spin.count()) * 1000});
    };
    if (status.ok() && has(modes, "ring") && !periods_ms.empty()) {
      std::fflush(nullptr);
      auto d = start_ring_daemon(registry, awake, RingRegime::kSpin);
      alone({"ring", "awake", 1}, d.ok() ? ring_clients(std::move(d).value(), *cases, 1)
                                         : Result<std::unique_ptr<Mode>>(d.status()));
    }
    if (status.ok() && has(modes, "floor") && !periods_ms.empty()) {
      std::fflush(nullptr);
      alone({"floor", "awake", 1}, start_floor(*cases, nullptr, awake));
      if (status.ok()) {
        std::fflush(nullptr);
        alone({"floor", "work-awake", 1}, start_floor(*cases, registry, awake));
      }
    }
    if (status.ok() && has(modes, "socket")) {
      std::fflush(nullptr);
      auto m = start_socket(*cases, registry, options, false);
      if (m.ok()) {
        periodic.push_back({{"socket", "block", 1}, std::move(m).value()});
      } else {
        status = m.status();
      }
    }
  }
  if (status.ok()) status = measure(lanes, *cases, plan);
  std::vector<PeriodicRow> periodic_rows;
  if (status.ok() && !periodic.empty()) {
    auto got = run_periodic(periodic, *cases, parallel, periods_ms, quick);
    if (got.ok()) {
      periodic_rows = std::move(got).value();
    } else {
      status = got.status();
    }
  }
  periodic.clear();
  // Stop every server before anything is printed.
  for (Lane& l : lanes) l.mode.reset();
  std::printf("%ld CPUs, nothing pinned; load average %s at start, %s at end (a load above "
              "the CPU count makes the spinning modes bimodal)\n\n",
              sysconf(_SC_NPROCESSORS_ONLN), load_start.c_str(), load_average().c_str());

  // Grouped by case (linear at 10 features first, by rows), lanes in their order.
  std::vector<std::size_t> order(cases->size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    const Case& x = (*cases)[a];
    const Case& y = (*cases)[b];
    const auto key = [](const Case& c) {
      return std::tuple(c.model, c.cols != kPrimaryFeatures, c.cols, c.rows);
    };
    return key(x) < key(y);
  });
  // A round trip longer than the spin time is one where a side gave up spinning and slept
  // (or was descheduled): the slow% column counts them.
  const auto slow_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(options.spin).count();
  std::vector<Row> table;
  for (const std::size_t i : order) {
    for (const Lane& l : lanes) {
      if (l.samples.size() <= i || l.samples[i].size() == 0) continue;
      table.push_back({l.label, &(*cases)[i], l.samples[i].summarize((*cases)[i].rows, slow_ns)});
    }
  }
  print_table(table);
  std::printf("\n");
  int exit_code = 0;
  if (!status.ok()) {
    std::fprintf(stderr, "estimator-bench: run failed: %s\n", status.to_string().c_str());
    exit_code = 1;
  }
  if (csv.empty() && !plot_file.empty()) csv = plot_file + ".csv";
  if (!csv.empty()) {
    if (Status s = write_csv(csv, table, periodic_rows); !s.ok()) {
      std::fprintf(stderr, "estimator-bench: %s\n", s.to_string().c_str());
      exit_code = 1;
    } else if (!plot_file.empty()) {
      plot(plot_script, csv, plot_file);
    }
  }
  const std::vector<Row> valid = status.ok() ? table : std::vector<Row>{};
  if (!periodic_rows.empty()) {
    print_periodic(periodic_rows);
    std::printf("\n");
  }
  if (!threaded.empty()) {
    print_threads(table);
    std::printf("\n");
  }
  print_targets(valid);
  if (!periodic_rows.empty()) print_periodic_targets(periodic_rows, valid);
  std::printf("\n");
  print_ratios(valid, periodic_figures(status.ok() ? periodic_rows : std::vector<PeriodicRow>{}));
  return exit_code;
}
