// SPDX-License-Identifier: Apache-2.0
// The periodic lanes: one client sending one request every P, as an exporter does (Kepler
// every 3 s, fast exporters every 1-10 ms), instead of back to back. What they show is
// whether the server is awake when the request comes, and what staying awake costs it:
// each lane reports the latency of its round trips and the CPU its server process used
// per second of the lane.
//
// The lanes of one period run in one timeline, each with its own server and client, at
// offsets of P / lanes from each other, so that a noisy neighbour hits them alike; each
// server still sees its own client exactly every P. The first kWarmup round trips of each
// lane and period are not counted (a predicting daemon learns the period from them).
// A lane whose server never sleeps (the "awake" bound: what no wake-up policy can beat)
// runs in a timeline of its own after the others, since a server spinning through the
// period would take a CPU from theirs; the others then wait until it has gone back to
// sleep. The bench process sets its timer slack to 1 us so that the client's own period is
// precise; the server's CPU is the sum of its threads' run time (/proc/PID/task/*/
// schedstat, nanoseconds), with utime+stime from /proc/PID/stat (10 ms ticks) beside it.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bench/modes.h"
#include "bench/report.h"

namespace estimator::bench {

struct PeriodicLane {
  LaneLabel label;
  std::unique_ptr<Mode> mode;
  // Nonzero: the server spins this long after an answer (through the whole period); the
  // lane runs alone, and the next timeline starts this long after its last request.
  std::uint64_t alone_spin_ns = 0;
};

struct PeriodicRow {
  LaneLabel label;
  const Case* c = nullptr;
  double period_ms = 0;
  Summary s;
  double cpu_pct = 0;        // server CPU per wall second over the lane, in % of one core
  double cpu_ticks_pct = 0;  // the same from utime+stime
  double late_p50_us = 0;    // how late the client's own tick fired (its clock_nanosleep)
  double late_p90_us = 0;
};

// Runs every lane on every case at every period: `samples(period)` round trips each (after
// the warm-up). Returns the rows, or the first failed round trip's Status.
Result<std::vector<PeriodicRow>> run_periodic(std::vector<PeriodicLane>& lanes,
                                              const std::vector<Case>& cases,
                                              const std::vector<std::size_t>& case_indices,
                                              const std::vector<double>& periods_ms,
                                              bool quick);

void print_periodic(const std::vector<PeriodicRow>& rows);
// The figures of the last line: the lanes at P = 10 ms, 1 row (NaN where missing).
PeriodicFigures periodic_figures(const std::vector<PeriodicRow>& rows);

// The periodic targets, against the hot spinning ring of `table` (same run).
void print_periodic_targets(const std::vector<PeriodicRow>& rows, const std::vector<Row>& table);

}  // namespace estimator::bench
