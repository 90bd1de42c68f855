// SPDX-License-Identifier: Apache-2.0
// The benchmark's output (see report.h).
#include "bench/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "bench/periodic.h"

namespace estimator::bench {
namespace {

constexpr double kNan = std::numeric_limits<double>::quiet_NaN();

struct Key {
  std::string_view mode;
  std::string_view variant;
  unsigned clients = 1;
  ModelKind model = ModelKind::kLinear;
  std::uint32_t cols = kPrimaryFeatures;
};

const Summary* find(const std::vector<Row>& rows, const Key& k, std::uint32_t n) {
  for (const Row& r : rows) {
    if (r.lane.mode == k.mode && (k.variant.empty() || r.lane.variant == k.variant) &&
        r.lane.clients == k.clients && r.c->model == k.model && r.c->cols == k.cols &&
        r.c->rows == n && r.s.count != 0) {
      return &r.s;
    }
  }
  return nullptr;
}

double p50(const std::vector<Row>& rows, const Key& k, std::uint32_t n) {
  const Summary* s = find(rows, k, n);
  return s != nullptr ? s->p50_us : kNan;
}

const Key kHotRing{"ring", "spin"};
const Key kSleepingRing{"ring", "block"};
const Key kSocket{"socket", "block"};
const Key kSocketPoll{"socket", "poll"};
const Key kDefaultRing{"ring", "default"};
const Key kJson{"json", "endpoint"};
const Key kJsonKepler{"json", "kepler"};
const Key kFloor{"floor", "spin"};
const Key kFloorWork{"floor", "work"};
const Key kFutex{"futex", ""};

// One target line: met when `ok`, "not measured" when the figure is NaN.
void verdict(std::string_view target, double figure, bool ok, const std::string& detail) {
  const char* word = std::isnan(figure) ? "not measured" : ok ? "met" : "NOT met";
  std::printf("  %-68.*s %-13s %s\n", static_cast<int>(target.size()), target.data(), word,
              std::isnan(figure) ? "" : detail.c_str());
}

std::string format_figure(const char* format, double a, double b = 0, double c = 0) {
  char buf[160];
  std::snprintf(buf, sizeof buf, format, a, b, c);
  return buf;
}

// Bytes a lane's round trip carries each way: the ping-pongs carry none, the memcpy only
// the request.
std::size_t request_bytes(const Row& r) {
  return r.lane.mode == "cacheline" || r.lane.mode == "futex" ? 0 : r.c->request.size();
}
std::size_t response_bytes(const Row& r) {
  return r.lane.mode == "cacheline" || r.lane.mode == "futex" || r.lane.mode == "memcpy"
             ? 0
             : r.c->response.size();
}

// The threads lane with `threads` dispatch threads and `clients` clients (the set has
// one case).
const Row* threads_lane(const std::vector<Row>& rows, unsigned threads, unsigned clients) {
  const std::string variant = "threads-" + std::to_string(threads);
  for (const Row& r : rows) {
    if (r.lane.mode == "ring" && r.lane.variant == variant && r.lane.clients == clients &&
        r.s.count != 0) {
      return &r;
    }
  }
  return nullptr;
}

}  // namespace

void print_threads(const std::vector<Row>& rows) {
  const Row* any = threads_lane(rows, 1, kThreadsClients[0]);
  if (any == nullptr) return;
  std::printf("dispatch threads (--threads), %u-row %.*s requests, blocking clients:\n",
              any->c->rows, static_cast<int>(model_kind_name(any->c->model).size()),
              model_kind_name(any->c->model).data());
  std::printf("  %7s | %10s %12s %9s | %10s %12s %9s | %s\n", "clients", "1t req/s",
              "1t rows/s", "1t p50_us", "2t req/s", "2t rows/s", "2t p50_us", "2t/1t req/s");
  for (const unsigned n : kThreadsClients) {
    const Row* one = threads_lane(rows, 1, n);
    const Row* two = threads_lane(rows, 2, n);
    const auto field = [](const Row* r, double Summary::*f) {
      return r != nullptr ? r->s.*f : kNan;
    };
    std::printf("  %7u | %10.0f %12.0f %9.1f | %10.0f %12.0f %9.1f | %.2fx\n", n,
                field(one, &Summary::req_per_s), field(one, &Summary::rows_per_s),
                field(one, &Summary::p50_us), field(two, &Summary::req_per_s),
                field(two, &Summary::rows_per_s), field(two, &Summary::p50_us),
                field(two, &Summary::req_per_s) / field(one, &Summary::req_per_s));
  }
}

void print_table(const std::vector<Row>& rows) {
  std::printf("%-9s %-11s %2s %-7s %5s %4s %7s %7s %7s %9s %9s %9s %9s %9s %6s %10s %12s\n",
              "mode", "variant", "cl", "model", "rows", "feat", "req_B", "resp_B", "n", "p50_us",
              "p90_us", "p99_us", "p99.9_us", "max_us", "slow%", "req/s", "rows/s");
  const Case* last = nullptr;
  for (const Row& r : rows) {
    if (last != nullptr && r.c != last) std::printf("\n");
    last = r.c;
    const std::string_view model = model_kind_name(r.c->model);
    std::printf("%-9s %-11s %2u %-7.*s %5u %4u %7zu %7zu %7llu %9.2f %9.2f %9.2f %9.2f %9.1f "
                "%6.2f %10.0f %12.0f\n",
                r.lane.mode.c_str(), r.lane.variant.c_str(), r.lane.clients,
                static_cast<int>(model.size()), model.data(), r.c->rows, r.c->cols,
                request_bytes(r), response_bytes(r),
                static_cast<unsigned long long>(r.s.count), r.s.p50_us, r.s.p90_us, r.s.p99_us,
                r.s.p999_us, r.s.max_us, 100.0 * r.s.slow_fraction, r.s.req_per_s,
                r.s.rows_per_s);
  }
}

Status write_csv(const std::string& path, const std::vector<Row>& rows,
                 const std::vector<PeriodicRow>& periodic) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) return Status(Code::kPermissionDenied, "cannot write " + path);
  std::fprintf(f, "mode,variant,clients,model,rows,features,req_bytes,resp_bytes,n,p50_us,"
                  "p90_us,p99_us,p999_us,max_us,slow_pct,req_per_s,rows_per_s,period_ms,"
                  "server_cpu_pct\n");
  const auto line = [f](const Row& r, double period_ms, double cpu_pct) {
    const std::string_view model = model_kind_name(r.c->model);
    std::fprintf(f, "%s,%s,%u,%.*s,%u,%u,%zu,%zu,%llu,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.1f,%.1f,%g,",
                 r.lane.mode.c_str(), r.lane.variant.c_str(), r.lane.clients,
                 static_cast<int>(model.size()), model.data(), r.c->rows, r.c->cols,
                 request_bytes(r), response_bytes(r),
                 static_cast<unsigned long long>(r.s.count), r.s.p50_us, r.s.p90_us,
                 r.s.p99_us, r.s.p999_us, r.s.max_us, 100.0 * r.s.slow_fraction, r.s.req_per_s,
                 r.s.rows_per_s, period_ms);
    if (!std::isnan(cpu_pct)) std::fprintf(f, "%.4f", cpu_pct);
    std::fputc('\n', f);
  };
  for (const Row& r : rows) line(r, 0, kNan);
  for (const PeriodicRow& p : periodic) line(Row{p.label, p.c, p.s}, p.period_ms, p.cpu_pct);
  const bool ok = std::fclose(f) == 0;
  return ok ? Status::Ok() : Status(Code::kInternal, "error writing " + path);
}

void print_targets(const std::vector<Row>& rows) {
  std::printf("targets (issue #6; linear model, %u features unless said):\n", kPrimaryFeatures);

  // Hot ring within 1.3x of the floor, at every size measured by both (any feature count).
  double worst = kNan;
  std::uint32_t worst_rows = 0, worst_cols = 0;
  for (const Row& r : rows) {
    if (r.lane.mode != "ring" || r.lane.variant != "spin" || r.lane.clients != 1 ||
        r.c->model != ModelKind::kLinear || r.s.count == 0) {
      continue;
    }
    Key floor_key = kFloor;
    floor_key.cols = r.c->cols;
    const double floor = p50(rows, floor_key, r.c->rows);
    const double ratio = r.s.p50_us / floor;
    if (!std::isnan(ratio) && (std::isnan(worst) || ratio > worst)) {
      worst = ratio;
      worst_rows = r.c->rows;
      worst_cols = r.c->cols;
    }
  }
  verdict("hot ring p50 <= 1.3x the floor at every size", worst, worst <= 1.3,
          format_figure("worst %.2fx at %.0f rows x %.0f features", worst, worst_rows, worst_cols));

  const double below_1 = p50(rows, kSocket, 1) / p50(rows, kHotRing, 1);
  verdict("hot ring p50 >= 10x below the socket baseline at 1 row", below_1, below_1 >= 10,
          format_figure("%.1fx below", below_1));
  const double below_100 = p50(rows, kSocket, 100) / p50(rows, kHotRing, 100);
  verdict("hot ring p50 >= 3x below the socket baseline at 100 rows", below_100,
          below_100 >= 3, format_figure("%.1fx below", below_100));

  double tail = kNan;
  std::uint32_t tail_rows = 0, tail_cols = 0;
  double tail_us = kNan;
  for (const Row& r : rows) {
    if (r.lane.mode != "ring" || r.lane.variant != "spin" || r.lane.clients != 1 ||
        r.c->model != ModelKind::kLinear || r.s.count == 0 || r.s.p50_us <= 0) {
      continue;
    }
    const double ratio = r.s.p999_us / r.s.p50_us;
    if (std::isnan(tail) || ratio > tail) {
      tail = ratio;
      tail_rows = r.c->rows;
      tail_cols = r.c->cols;
      tail_us = r.s.p999_us;
    }
  }
  // The floor's own p99.9 at that size says how much of the tail is the machine's.
  Key floor_key = kFloor;
  floor_key.cols = tail_cols;
  const Summary* floor_tail = find(rows, floor_key, tail_rows);
  verdict("hot ring p99.9 <= 5x its p50 at every size", tail, tail <= 5,
          format_figure("worst %.2fx at %.0f rows x %.0f features", tail, tail_rows, tail_cols) +
              format_figure(" (p99.9 %.1f us; the floor's %.1f us)", tail_us,
                            floor_tail != nullptr ? floor_tail->p999_us : kNan));

  // Sleeping ring against a futex ping-pong plus the floor, at each size it ran; the
  // futex ping-pong carries no payload, so any of its rows serves when sizes differ.
  double sleep_worst = kNan;
  std::uint32_t sleep_rows = 0;
  for (const Row& r : rows) {
    if (r.lane.mode != "ring" || r.lane.variant != "block" || r.lane.clients != 1 ||
        r.c->model != ModelKind::kLinear || r.c->cols != kPrimaryFeatures || r.s.count == 0) {
      continue;
    }
    double futex = p50(rows, kFutex, r.c->rows);
    for (const Row& f : rows) {
      if (std::isnan(futex) && f.lane.mode == "futex" && f.s.count != 0) futex = f.s.p50_us;
    }
    const double ratio = r.s.p50_us / (futex + p50(rows, kFloor, r.c->rows));
    if (!std::isnan(ratio) && (std::isnan(sleep_worst) || ratio > sleep_worst)) {
      sleep_worst = ratio;
      sleep_rows = r.c->rows;
    }
  }
  verdict("sleeping ring p50 <= 1.3x (futex ping-pong + floor)", sleep_worst,
          sleep_worst <= 1.3, format_figure("worst %.2fx at %.0f rows", sleep_worst, sleep_rows));

  const double json = p50(rows, kJson, 100) / p50(rows, kSocket, 100);
  const double json_kepler = p50(rows, kJsonKepler, 100) / p50(rows, kSocket, 100);
  verdict("JSON endpoint p50 at 100 rows <= 3x the socket baseline", json, json <= 3,
          format_figure("%.2fx (%.2fx with Kepler's own encoding and decoding)", json,
                        json_kepler));

  const Summary* hot100 = find(rows, kHotRing, 100);
  const double rate = hot100 != nullptr ? hot100->rows_per_s : kNan;
  verdict("one client, 100 rows per request: >= 5,000,000 rows/s", rate, rate >= 5e6,
          format_figure("%.0f rows/s", rate));
  // Parallel dispatch (issue 13): the same two clients, the daemon with 2 dispatch threads
  // against 1.
  const Row* one = threads_lane(rows, 1, 2);
  const Row* two = threads_lane(rows, 2, 2);
  const double speedup =
      one != nullptr && two != nullptr ? two->s.req_per_s / one->s.req_per_s : kNan;
  verdict("2 threads, 2 clients, 1000-row XGBoost: throughput >= 1.7x 1 thread", speedup,
          speedup >= 1.7,
          format_figure("%.2fx (%.0f against %.0f req/s", speedup,
                        two != nullptr ? two->s.req_per_s : kNan,
                        one != nullptr ? one->s.req_per_s : kNan) +
              format_figure(", %.0f rows)", one != nullptr ? one->c->rows : kNan));
  std::printf("  %-68s %s\n", "daemon RSS, idle CPU, start-up time",
              "see estimator-bench --resources");
}

void print_ratios(const std::vector<Row>& rows, const PeriodicFigures& periodic) {
  const double ring_1 = p50(rows, kHotRing, 1);
  const double ring_100 = p50(rows, kHotRing, 100);
  const double socket_1 = p50(rows, kSocket, 1);
  const double socket_100 = p50(rows, kSocket, 100);
  std::printf("spin_ring_vs_poll_socket_p50=%.3f default_ring_vs_socket_p50=%.3f "
              "ring_vs_floor_p50_1=%.3f ring_vs_floor_work_p50_1=%.3f "
              "ring_vs_floor_work_p50_100=%.3f\n",
              ring_1 / p50(rows, kSocketPoll, 1), p50(rows, kDefaultRing, 1) / socket_1,
              ring_1 / p50(rows, kFloor, 1), ring_1 / p50(rows, kFloorWork, 1),
              ring_100 / p50(rows, kFloorWork, 100));
  std::printf("ring_vs_limit_p50_100=%.3f ring_vs_socket_p50=%.3f ring_vs_socket_p50_100=%.3f "
              "json_vs_socket_p50_100=%.3f periodic_vs_hot_p50=%.3f "
              "periodic_daemon_cpu_pct=%.3f ring_default_vs_socket_blocking_p50=%.3f\n",
              ring_100 / p50(rows, kFloor, 100), ring_1 / socket_1, ring_100 / socket_100,
              p50(rows, kJson, 100) / socket_100, periodic.predict_p50_us / ring_1,
              periodic.predict_cpu_pct, periodic.default_p50_us / periodic.socket_p50_us);
  std::fflush(stdout);
}

}  // namespace estimator::bench
