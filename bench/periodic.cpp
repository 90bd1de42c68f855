// SPDX-License-Identifier: Apache-2.0
#include "bench/periodic.h"

#include <dirent.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>

#include "shm/segment.h"

namespace estimator::bench {
namespace {

constexpr std::size_t kWarmup = 8;
constexpr double kNan = std::numeric_limits<double>::quiet_NaN();
// Round trips slower than this (the shipped spin) count as slow: a side slept.
constexpr std::int64_t kSlowNs = 50'000;

struct CpuTime {
  std::uint64_t run_ns = 0;  // schedstat, all threads
  std::uint64_t ticks = 0;   // utime + stime
};

CpuTime cpu_time(pid_t pid) {
  CpuTime t;
  if (pid <= 0) return t;
  const std::string base = "/proc/" + std::to_string(pid);
  if (DIR* d = opendir((base + "/task").c_str())) {
    while (const dirent* e = readdir(d)) {
      if (e->d_name[0] == '.') continue;
      std::ifstream f(base + "/task/" + e->d_name + "/schedstat");
      std::uint64_t ns = 0;
      if (f >> ns) t.run_ns += ns;
    }
    closedir(d);
  }
  std::ifstream stat(base + "/stat");
  std::string line;
  std::getline(stat, line);
  // Fields after the command (which may hold spaces) start after the last ')'.
  const auto close = line.rfind(')');
  if (close != std::string::npos) {
    std::istringstream rest(line.substr(close + 2));
    std::string field;
    std::uint64_t utime = 0, stime = 0;
    for (int i = 3; i <= 15 && rest >> field; ++i) {
      if (i == 14) utime = std::stoull(field);
      if (i == 15) stime = std::stoull(field);
    }
    t.ticks = utime + stime;
  }
  return t;
}

std::size_t samples_for(double period_ms, bool quick) {
  // Enough for a p50 and a p90 in a bounded time: a few seconds per period, at least a
  // few dozen round trips (30 s at 1 s).
  const double seconds = quick ? 2.0 : 6.0;
  const auto n = static_cast<std::size_t>(seconds * 1000.0 / period_ms);
  return std::clamp<std::size_t>(n, 30, quick ? 1000 : 3000);
}

void sleep_until_ns(std::uint64_t t) {
  const timespec ts{static_cast<time_t>(t / 1'000'000'000ULL),
                    static_cast<long>(t % 1'000'000'000ULL)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
}

}  // namespace

Result<std::vector<PeriodicRow>> run_periodic(std::vector<PeriodicLane>& lanes,
                                              const std::vector<Case>& cases,
                                              const std::vector<std::size_t>& case_indices,
                                              const std::vector<double>& periods_ms,
                                              bool quick) {
  prctl(PR_SET_TIMERSLACK, 1000UL, 0UL, 0UL, 0UL);
  const double tick_ns = 1e9 / static_cast<double>(sysconf(_SC_CLK_TCK));
  // The shared timeline first, then each lone lane's.
  std::vector<std::vector<std::size_t>> timelines(1);
  for (std::size_t j = 0; j < lanes.size(); ++j) {
    if (lanes[j].alone_spin_ns == 0) {
      timelines[0].push_back(j);
    } else {
      timelines.push_back({j});
    }
  }
  std::vector<PeriodicRow> rows;
  for (const double period_ms : periods_ms) {
    const auto period_ns = static_cast<std::uint64_t>(period_ms * 1e6);
    const std::size_t n = samples_for(period_ms, quick);
    for (const std::size_t ci : case_indices) {
      std::fprintf(stderr, "estimator-bench: periodic, every %g ms, %u rows: %zu round trips\n",
                   period_ms, cases[ci].rows, n);
      for (const std::vector<std::size_t>& timeline : timelines) {
        const std::size_t L = timeline.size();
        if (L == 0) continue;
        std::vector<Samples> samples(L);
        std::vector<std::vector<std::uint64_t>> late(L);
        std::vector<CpuTime> cpu0(L), cpu1(L);
        std::vector<std::uint64_t> wall0(L), wall1(L);
        const std::uint64_t t0 = shm::monotonic_ns() + period_ns;
        for (std::size_t k = 0; k < kWarmup + n; ++k) {
          for (std::size_t j = 0; j < L; ++j) {
            PeriodicLane& lane = lanes[timeline[j]];
            const std::uint64_t tick = t0 + k * period_ns + j * period_ns / L;
            sleep_until_ns(tick);
            const bool timed = k >= kWarmup;
            if (timed) late[j].push_back(shm::monotonic_ns() - tick);
            if (k == kWarmup) {
              cpu0[j] = cpu_time(lane.mode->server_pid());
              wall0[j] = shm::monotonic_ns();
            }
            // A generous deadline: the lane measures latency, a stall is a sample too.
            if (Status s = lane.mode->run(ci, 1, Clock::now() + std::chrono::seconds(10),
                                          timed ? &samples[j] : nullptr);
                !s.ok()) {
              return Status(s.code(), "periodic " + lane.label.mode + "/" +
                                          lane.label.variant + ": " + s.message());
            }
          }
        }
        // Up to the end of the last period, so that every lane's span is n periods.
        sleep_until_ns(t0 + (kWarmup + n) * period_ns);
        for (std::size_t j = 0; j < L; ++j) {
          cpu1[j] = cpu_time(lanes[timeline[j]].mode->server_pid());
          wall1[j] = shm::monotonic_ns();
        }
        for (std::size_t j = 0; j < L; ++j) {
          const PeriodicLane& lane = lanes[timeline[j]];
          const double wall = static_cast<double>(wall1[j] - wall0[j]);
          samples[j].end_segment(n, static_cast<std::int64_t>(wall));
          PeriodicRow r;
          r.label = lane.label;
          r.c = &cases[ci];
          r.period_ms = period_ms;
          r.s = samples[j].summarize(cases[ci].rows, kSlowNs);
          const bool known = lane.mode->server_pid() > 0;
          r.cpu_pct = known ? 100.0 * static_cast<double>(cpu1[j].run_ns - cpu0[j].run_ns) / wall
                            : kNan;
          r.cpu_ticks_pct =
              known ? 100.0 * static_cast<double>(cpu1[j].ticks - cpu0[j].ticks) * tick_ns / wall
                    : kNan;
          std::sort(late[j].begin(), late[j].end());
          if (!late[j].empty()) {
            r.late_p50_us = static_cast<double>(late[j][late[j].size() / 2]) / 1e3;
            r.late_p90_us = static_cast<double>(late[j][late[j].size() * 9 / 10]) / 1e3;
          }
          rows.push_back(r);
          // A lone server spinning on would take a CPU from the next timeline.
          if (lane.alone_spin_ns != 0) sleep_until_ns(shm::monotonic_ns() + lane.alone_spin_ns);
        }
      }
    }
  }
  return rows;
}

void print_periodic(const std::vector<PeriodicRow>& rows) {
  std::printf("periodic: one client, one request every P (lanes interleaved at P/lanes); "
              "server CPU in %% of one core over the lane (schedstat; utime+stime beside)\n");
  std::printf("(tick_late: how late the client's own tick fired, p50/p90: the rhythm the "
              "daemon had to learn)\n");
  std::printf("%-7s %-9s %-10s %5s %6s %9s %9s %9s %9s %6s %8s %8s %15s\n", "P_ms", "mode",
              "variant", "rows", "n", "p50_us", "p90_us", "p99_us", "max_us", "slow%",
              "cpu%", "cpu%tck", "tick_late_us");
  for (const PeriodicRow& r : rows) {
    std::printf("%-7g %-9s %-10s %5u %6llu %9.2f %9.2f %9.2f %9.1f %6.2f %8.4f %8.3f %7.1f/%-7.1f\n",
                r.period_ms, r.label.mode.c_str(), r.label.variant.c_str(), r.c->rows,
                static_cast<unsigned long long>(r.s.count), r.s.p50_us, r.s.p90_us, r.s.p99_us,
                r.s.max_us, 100.0 * r.s.slow_fraction, r.cpu_pct, r.cpu_ticks_pct,
                r.late_p50_us, r.late_p90_us);
  }
}

namespace {

const PeriodicRow* find_periodic(const std::vector<PeriodicRow>& rows, std::string_view mode,
                                 std::string_view variant, double period_ms,
                                 std::uint32_t n) {
  for (const PeriodicRow& r : rows) {
    if (r.label.mode == mode && r.label.variant == variant && r.period_ms == period_ms &&
        r.c->rows == n && r.c->model == ModelKind::kLinear && r.c->cols == kPrimaryFeatures) {
      return &r;
    }
  }
  return nullptr;
}

double hot_p50(const std::vector<Row>& table, std::uint32_t n) {
  for (const Row& r : table) {
    if (r.lane.mode == "ring" && r.lane.variant == "spin" && r.lane.clients == 1 &&
        r.c->model == ModelKind::kLinear && r.c->cols == kPrimaryFeatures && r.c->rows == n &&
        r.s.count != 0) {
      return r.s.p50_us;
    }
  }
  return kNan;
}

}  // namespace

PeriodicFigures periodic_figures(const std::vector<PeriodicRow>& rows) {
  PeriodicFigures f;
  if (const PeriodicRow* r = find_periodic(rows, "ring", "predict", 10.0, 1)) {
    f.predict_p50_us = r->s.p50_us;
    f.predict_cpu_pct = r->cpu_pct;
  }
  if (const PeriodicRow* r = find_periodic(rows, "ring", "default", 10.0, 1)) {
    f.default_p50_us = r->s.p50_us;
  }
  if (const PeriodicRow* r = find_periodic(rows, "socket", "block", 10.0, 1)) {
    f.socket_p50_us = r->s.p50_us;
  }
  return f;
}

void print_periodic_targets(const std::vector<PeriodicRow>& rows,
                            const std::vector<Row>& table) {
  std::printf("periodic targets (issue #13; ring/predict = with the predictive wake-up; "
              "against the hot spinning ring of this run):\n");
  for (const double p : {10.0, 1000.0}) {
    for (const std::uint32_t n : {1U, 100U}) {
      const PeriodicRow* r = find_periodic(rows, "ring", "predict", p, n);
      const double ratio = r != nullptr ? r->s.p50_us / hot_p50(table, n) : kNan;
      char target[96], detail[256];
      std::snprintf(target, sizeof target, "P = %g ms, %u row(s): ring p50 <= 1.5x hot ring", p,
                    n);
      const PeriodicRow* old = find_periodic(rows, "ring", "default", p, n);
      const PeriodicRow* sock = find_periodic(rows, "socket", "block", p, n);
      const PeriodicRow* awake = find_periodic(rows, "ring", "awake", p, n);
      const PeriodicRow* floor_work = find_periodic(rows, "floor", "work-awake", p, n);
      const auto us = [](const PeriodicRow* x) { return x != nullptr ? x->s.p50_us : kNan; };
      std::snprintf(detail, sizeof detail,
                    "%.2fx (%.1f us vs %.1f us; without prediction %.1f us, never asleep %.1f "
                    "us, floor with the work never asleep %.1f us, socket %.1f us)",
                    ratio, us(r), hot_p50(table, n), us(old), us(awake), us(floor_work),
                    us(sock));
      const char* word = std::isnan(ratio) ? "not measured" : ratio <= 1.5 ? "met" : "NOT met";
      std::printf("  %-68s %-13s %s\n", target, word, std::isnan(ratio) ? "" : detail);
    }
    double cpu = kNan;
    for (const PeriodicRow& r : rows) {
      if (r.label.mode == "ring" && r.label.variant == "predict" && r.period_ms == p) {
        cpu = std::isnan(cpu) ? r.cpu_pct : std::max(cpu, r.cpu_pct);
      }
    }
    const double limit = p == 10.0 ? 1.0 : 0.1;
    char target[96], detail[96];
    std::snprintf(target, sizeof target, "P = %g ms: daemon CPU <= %g %% of a core", p, limit);
    std::snprintf(detail, sizeof detail, "%.3f %% (the higher of 1 and 100 rows)", cpu);
    const char* word = std::isnan(cpu) ? "not measured" : cpu <= limit ? "met" : "NOT met";
    std::printf("  %-68s %-13s %s\n", target, word, std::isnan(cpu) ? "" : detail);
  }
}

}  // namespace estimator::bench
