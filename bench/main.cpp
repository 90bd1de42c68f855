// estimator-bench: round-trip latency and throughput of one estimate request of
// rows in {1, 10, 100, 500} x 10 features with the embedded linear model, carried
//   ring   - through the shared-memory ring (real daemon core in a child, real client),
//   socket - through a unix socket carrying the same FlatBuffers bytes (the baseline),
//   floor  - through a raw shared-memory ping-pong of same-sized bytes (the limit),
// all in one run, and the ratios between them on the last line:
//   ring_vs_socket_p50=<1 row> ring_vs_socket_p50_100=<100 rows> ring_vs_limit_p50_100=<...>
//
// Why the comparison is fair: the three servers run side by side for the whole run, and
// the measurements are interleaved: each case's round trips are split into rounds, and
// in every round each mode runs its share after a warm-up, in an order rotated from round
// to round. A noisy neighbour or frequency drift on this shared machine thus hits every
// mode alike instead of one mode's whole block. Nothing is pinned: client and server
// share the machine's cores as an exporter and the daemon would. Every reply is checked
// (rows, model and finite powers; rows, size and an echo of the request in floor mode),
// so a broken path cannot post good numbers.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench/modes.h"
#include "bench/stats.h"
#include "bench/workload.h"
#include "models/embedded_defaults.h"

using namespace estimator;
using namespace estimator::bench;

namespace {

struct Plan {
  std::size_t iterations = 200'000;  // timed round trips per case up to 100 rows
  std::size_t iterations_500 = 50'000;
  std::size_t warmup = 2'000;  // untimed round trips before each round's share
  std::size_t warmup_500 = 500;
  std::size_t rounds = 10;
  // The whole measurement's time budget, split evenly among the (round, case, mode)
  // segments, a quarter of each for the warm-up: on a loaded machine a run ends on time
  // with fewer round trips (the table's n column; a cut segment's samples are weighted
  // up to its planned count, see stats.h) instead of running long.
  double budget_s = 150;

  std::size_t total(std::uint32_t rows) const { return rows >= 500 ? iterations_500 : iterations; }
  std::size_t per_round(std::uint32_t rows) const {
    return (total(rows) + rounds - 1) / rounds;
  }
  std::size_t warm(std::uint32_t rows) const { return rows >= 500 ? warmup_500 : warmup; }
};

constexpr std::array<std::string_view, 3> kModeOrder{"ring", "socket", "floor"};

std::string load_average() {
  double load[3] = {0, 0, 0};
  if (getloadavg(load, 3) != 3) return "unknown";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f %.2f %.2f", load[0], load[1], load[2]);
  return buf;
}

struct Row {
  std::string_view mode;
  const Case* c;
  Summary s;
};

void print_table(const std::vector<Row>& rows) {
  std::printf("%-7s %5s %5s %7s %7s %7s %9s %9s %9s %9s %9s %6s %11s %12s\n", "mode", "rows",
              "feat", "req_B", "resp_B", "n", "p50_us", "p90_us", "p99_us", "p99.9_us", "max_us",
              "slow%", "req/s", "rows/s");
  std::uint32_t last_rows = 0;
  for (const Row& r : rows) {
    if (last_rows != 0 && r.c->rows != last_rows) std::printf("\n");
    last_rows = r.c->rows;
    std::printf("%-7.*s %5u %5u %7zu %7zu %7llu %9.2f %9.2f %9.2f %9.2f %9.1f %6.2f %11.0f "
                "%12.0f\n",
                static_cast<int>(r.mode.size()), r.mode.data(), r.c->rows, r.c->cols,
                r.c->request.size(), r.c->response.size(),
                static_cast<unsigned long long>(r.s.count), r.s.p50_us, r.s.p90_us, r.s.p99_us,
                r.s.p999_us, r.s.max_us, 100.0 * r.s.slow_fraction, r.s.req_per_s,
                r.s.rows_per_s);
  }
}

Status write_csv(const std::string& path, const std::vector<Row>& rows) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) return Status(Code::kPermissionDenied, "cannot write " + path);
  std::fprintf(f, "mode,rows,features,p50_us,p90_us,p99_us,p999_us,max_us,req_per_s,rows_per_s\n");
  for (const Row& r : rows) {
    std::fprintf(f, "%.*s,%u,%u,%.3f,%.3f,%.3f,%.3f,%.3f,%.1f,%.1f\n",
                 static_cast<int>(r.mode.size()), r.mode.data(), r.c->rows, r.c->cols, r.s.p50_us,
                 r.s.p90_us, r.s.p99_us, r.s.p999_us, r.s.max_us, r.s.req_per_s, r.s.rows_per_s);
  }
  const bool ok = std::fclose(f) == 0;
  return ok ? Status::Ok() : Status(Code::kInternal, "error writing " + path);
}

double p50(const std::vector<Row>& rows, std::string_view mode, std::uint32_t n) {
  for (const Row& r : rows) {
    if (r.mode == mode && r.c->rows == n && r.s.count != 0) return r.s.p50_us;
  }
  return std::nan("");
}

// The last line; "nan" for a ratio whose measurements are missing (a failed run).
void print_ratios(const std::vector<Row>& rows) {
  const double ring_1 = p50(rows, "ring", 1);
  const double ring_100 = p50(rows, "ring", 100);
  std::printf("ring_vs_socket_p50=%.3f ring_vs_socket_p50_100=%.3f ring_vs_limit_p50_100=%.3f\n",
              ring_1 / p50(rows, "socket", 1), ring_100 / p50(rows, "socket", 100),
              ring_100 / p50(rows, "floor", 100));
  std::fflush(stdout);
}

// Starts the three servers and runs the interleaved rounds into samples[mode][case].
Status measure(const std::vector<Case>& cases, std::shared_ptr<const models::Registry> registry,
               const Plan& plan, const ModeOptions& options, const std::array<bool, 3>& wanted,
               std::array<std::vector<Samples>, 3>& samples) {
  std::array<std::unique_ptr<Mode>, 3> modes;
  // The floor first and the socket last: a child inherits the parent's descriptors, and
  // no server should hold the client end of the socket.
  std::fflush(nullptr);
  if (wanted[2]) {
    auto floor = start_floor(cases, options);
    if (!floor.ok()) return floor.status();
    modes[2] = std::move(floor).value();
  }
  if (wanted[0]) {
    auto ring = start_ring(cases, registry, options);
    if (!ring.ok()) return ring.status();
    modes[0] = std::move(ring).value();
  }
  if (wanted[1]) {
    auto socket = start_socket(cases, registry, options);
    if (!socket.ok()) return socket.status();
    modes[1] = std::move(socket).value();
  }
  const auto active = static_cast<std::size_t>(std::count(wanted.begin(), wanted.end(), true));
  const std::size_t segments = plan.rounds * cases.size() * std::max<std::size_t>(active, 1);
  const auto segment = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(plan.budget_s / static_cast<double>(segments)));

  for (auto& per_mode : samples) {
    per_mode.assign(cases.size(), Samples{});
    for (std::size_t i = 0; i < cases.size(); ++i) {
      per_mode[i].reserve(plan.per_round(cases[i].rows) * plan.rounds);
    }
  }
  for (std::size_t round = 0; round < plan.rounds; ++round) {
    std::fprintf(stderr, "estimator-bench: round %zu/%zu\n", round + 1, plan.rounds);
    for (std::size_t i = 0; i < cases.size(); ++i) {
      for (std::size_t k = 0; k < modes.size(); ++k) {
        const std::size_t m = (k + round + i) % modes.size();
        if (modes[m] == nullptr) continue;
        Mode& mode = *modes[m];
        const auto start = Clock::now();
        const std::size_t warm = plan.warm(cases[i].rows);
        if (Status s = mode.run(i, warm, start + segment / 4, nullptr); !s.ok()) return s;
        const std::size_t planned = plan.per_round(cases[i].rows);
        const auto t0 = Clock::now();
        if (Status s = mode.run(i, planned, start + segment, &samples[m][i]); !s.ok()) return s;
        samples[m][i].end_segment(planned, elapsed_ns(t0, Clock::now()));
      }
    }
  }
  return Status::Ok();  // the servers stop here, before anything is printed
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"estimator-bench: round-trip latency of the shared-memory ring against a unix "
               "socket carrying the same bytes and a raw shared-memory ping-pong"};
  bool quick = false;
  std::string csv;
  Plan plan;
  std::size_t iterations = 0;
  std::size_t rounds = 0;
  double spin_us = 1000;
  unsigned timeout_ms = 2000;
  app.add_flag("--quick", quick,
               "20k round trips per case (5k at 500 rows) in 4 rounds; well under 30 s");
  app.add_option("--csv", csv,
                 "also write the results to this file "
                 "(mode,rows,features,p50_us,p90_us,p99_us,p999_us,max_us,req_per_s,rows_per_s)");
  app.add_option("--iterations", iterations,
                 "timed round trips per case up to 100 rows (a quarter of it at 500 rows)");
  app.add_option("--rounds", rounds, "interleaved rounds the round trips are split into");
  std::vector<std::string> mode_names{kModeOrder.begin(), kModeOrder.end()};
  app.add_option("--modes", mode_names, "modes to run (ratios needing a missing one are nan)")
      ->check(CLI::IsMember({"ring", "socket", "floor"}))
      ->delimiter(',');
  std::vector<std::uint32_t> row_counts{kRowCounts.begin(), kRowCounts.end()};
  app.add_option("--rows", row_counts, "row counts to measure (ratios need 1 and 100)")
      ->check(CLI::Range(std::uint32_t{1}, kMaxRows))
      ->delimiter(',');
  double budget_s = 0;
  app.add_option("--budget-s", budget_s,
                 "time budget of the measurement (default 150, 22 with --quick); round trips "
                 "stop early when it runs out");
  app.add_option("--spin-us", spin_us,
                 "how long the daemon, the client and the floor server spin for their peer")
      ->capture_default_str();
  app.add_option("--timeout-ms", timeout_ms, "a server silent this long fails the run")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  if (quick) plan = Plan{20'000, 5'000, 1'000, 250, 4, 22};
  if (iterations != 0) {
    plan.iterations = iterations;
    plan.iterations_500 = std::max<std::size_t>(1, iterations / 4);
  }
  if (rounds != 0) plan.rounds = rounds;
  if (budget_s > 0) plan.budget_s = budget_s;
  std::array<bool, 3> wanted{};
  for (const std::string& name : mode_names) {
    for (std::size_t m = 0; m < kModeOrder.size(); ++m) {
      wanted[m] = wanted[m] || name == kModeOrder[m];
    }
  }
  ModeOptions options;
  options.spin = std::chrono::microseconds(static_cast<std::int64_t>(spin_us));
  options.timeout = std::chrono::milliseconds(timeout_ms);

  spdlog::set_level(spdlog::level::warn);
  std::shared_ptr<const models::Registry> registry =
      models::Registry::build(models::embedded_model_folders());
  auto cases = make_cases(registry, row_counts);
  if (!cases.ok()) {
    std::fprintf(stderr, "estimator-bench: the workload fails locally: %s\n",
                 cases.status().to_string().c_str());
    print_ratios({});
    return 1;
  }

  std::printf("estimator-bench: one request of rows x %u features (2 used by the model), "
              "model %.*s (%.*s %.*s)\n",
              kFeatureCount, static_cast<int>(kExpectedModel.size()), kExpectedModel.data(),
              static_cast<int>(kSource.size()), kSource.data(),
              static_cast<int>(kOutputType.size()), kOutputType.data());
  std::printf("%zu round trips per case (%zu at 500 rows) in %zu interleaved rounds, warm-up "
              "%zu (%zu) per round; budget %.0f s; spin %.0f us\n",
              plan.per_round(1) * plan.rounds, plan.per_round(500) * plan.rounds, plan.rounds,
              plan.warmup, plan.warmup_500, plan.budget_s, spin_us);
  const std::string load_start = load_average();
  std::printf("ring: daemon core + client::Client; socket: unix stream, length-prefixed "
              "FlatBuffers, same handler; floor: raw shm ping-pong of the same byte counts\n");

  std::array<std::vector<Samples>, 3> samples;
  const Status status = measure(*cases, registry, plan, options, wanted, samples);
  std::printf("%ld CPUs, nothing pinned; load average %s at start, %s at end (a load above "
              "the CPU count makes the spinning modes bimodal)\n\n",
              sysconf(_SC_NPROCESSORS_ONLN), load_start.c_str(), load_average().c_str());

  // A round trip longer than the spin time is one where a side gave up spinning and slept
  // (or was descheduled): the slow% column counts them.
  const auto slow_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(options.spin).count();
  std::vector<Row> rows;
  for (std::size_t i = 0; i < cases->size(); ++i) {
    for (std::size_t m = 0; m < kModeOrder.size(); ++m) {
      if (samples[m].size() <= i || samples[m][i].size() == 0) continue;
      rows.push_back({kModeOrder[m], &(*cases)[i],
                      samples[m][i].summarize((*cases)[i].rows, slow_ns)});
    }
  }
  print_table(rows);
  std::printf("\n");
  int exit_code = 0;
  if (!status.ok()) {
    std::fprintf(stderr, "estimator-bench: run failed: %s\n", status.to_string().c_str());
    exit_code = 1;
  }
  if (!csv.empty()) {
    if (Status s = write_csv(csv, rows); !s.ok()) {
      std::fprintf(stderr, "estimator-bench: %s\n", s.to_string().c_str());
      exit_code = 1;
    }
  }
  print_ratios(status.ok() ? rows : std::vector<Row>{});
  return exit_code;
}
