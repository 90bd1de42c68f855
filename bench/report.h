// SPDX-License-Identifier: Apache-2.0
// What a run prints and writes: the table, the CSV, the targets with whether this
// run meets them, and the one-line ratios (the last line, for scripts).
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "bench/stats.h"
#include "bench/workload.h"
#include "common/status.h"

namespace estimator::bench {

// Which lane measured a row: mode ("ring", "socket", ...), its variant ("spin", "block",
// "default", "poll", ...) and the number of client threads.
struct LaneLabel {
  std::string mode;
  std::string variant;
  unsigned clients = 1;
};

struct Row {
  LaneLabel lane;
  const Case* c = nullptr;
  Summary s;
};

void print_table(const std::vector<Row>& rows);

// The threads set's lanes: variant "threads-1" and "threads-2" (the daemon's dispatch
// threads), each with these client counts.
inline constexpr unsigned kThreadsClients[] = {1, 2, 4};

// The threads lanes side by side: per client count, req/s, rows/s and p50 with 1 and
// with 2 dispatch threads, and the throughput ratio.
void print_threads(const std::vector<Row>& rows);

struct PeriodicRow;  // bench/periodic.h

// mode,variant,clients,model,rows,features,req_bytes,resp_bytes,n,p50_us,p90_us,p99_us,
// p999_us,max_us,slow_pct,req_per_s,rows_per_s,period_ms,server_cpu_pct: the table's rows
// (period_ms 0: back to back; no server_cpu_pct), then the periodic lanes' rows.
Status write_csv(const std::string& path, const std::vector<Row>& rows,
                 const std::vector<PeriodicRow>& periodic);

// The targets of the measurement (issue #6), each "met", "NOT met" or "not measured",
// with the figure that decides it.
void print_targets(const std::vector<Row>& rows);

// The periodic lanes' figures of the last line (bench/periodic.h), at P = 10 ms and 1 row;
// NaN when not measured.
struct PeriodicFigures {
  double predict_p50_us = std::numeric_limits<double>::quiet_NaN();  // ring, predictive wake-up
  double predict_cpu_pct = std::numeric_limits<double>::quiet_NaN();  // its daemon's CPU
  double default_p50_us = std::numeric_limits<double>::quiet_NaN();  // ring as shipped
  double socket_p50_us = std::numeric_limits<double>::quiet_NaN();   // blocking socket
};

// The last two lines; "nan" for a ratio whose measurements are missing. First the
// like-for-like ratios: spin_ring_vs_poll_socket_p50 default_ring_vs_socket_p50
// ring_vs_floor_p50_1. Last, the line: ring_vs_limit_p50_100 ring_vs_socket_p50
// ring_vs_socket_p50_100 json_vs_socket_p50_100 periodic_vs_hot_p50
// periodic_daemon_cpu_pct ring_default_vs_socket_blocking_p50.
void print_ratios(const std::vector<Row>& rows, const PeriodicFigures& periodic);

}  // namespace estimator::bench
