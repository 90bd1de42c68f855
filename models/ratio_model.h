// SPDX-License-Identifier: Apache-2.0
// The ratio model: splits measured node power among workloads by their share of a usage
// counter, as Kepler's Go ratio model does (KEPLER.md section 6). It needs the request's
// node power; it has no error figure (it is exact by construction, given the usage
// proxy), so its mae stays unknown.
//
// Our file format (metadata.json "model_class": "ratio", "model_file": "ratio.json"):
//
//   {"components": {"package": "cpu_instructions", "core": "cpu_instructions",
//                   "uncore": "", "dram": "cache_miss", "gpu": "gpu_compute_util",
//                   "other": ""},
//    "fallback_usage": "bpf_cpu_time_ms"}
//
// - "components" maps each output component, in output order, to the request column
//   whose share decides a row's part of that component's node power; "" splits evenly.
// - "fallback_usage" (optional, "" = none) replaces a component's usage column when the
//   request lacks it (Kepler's choice when hardware counters are unavailable).
//
// For component c with node power P_c (sum over packages of the request's NodePower of c)
// and idle power I_c (sum of idle_watts, 0 when not given), row i of n rows gets
//   u_ic / sum_k u_kc * P_c + I_c / n,
// or P_c / n + I_c / n when the split is even or the usage sums to 0. Negative usage
// counts as 0, so the shares always add up to P_c. A component without node power in
// the request gets 0.
//
// The 2022 correlation-weighted variant ("CorrRatio", Kepler PR #104) is recognised by its
// "<component>_score" objects, each weighting several usage columns by correlation:
//
//   {"core_score": {"curr_cpu_cycles": 0.37, "curr_cache_misses": 0.26, ...},
//    "dram_score": {...}, "gpu_score": {...}, "other_score": {...}}
//
// Row i gets, for component c, P_c * sum over m of score_cm * x_im / sum_k x_km (+ I_c / n),
// a column whose usage sums to 0 contributing score_cm / n (an even split). Components are
// output in the document's order; the features are the scored columns.
#pragma once

#include <memory>
#include <string_view>

#include "common/status.h"
#include "models/json_fields.h"
#include "models/model.h"

namespace estimator::models {

// Builds a ratio model from `doc` (the contents of `file`, named in messages). `info`
// comes from metadata.json; components and features are filled from the document.
Result<std::unique_ptr<Model>> load_ratio_model(ModelInfo info, const json::Json& doc,
                                                std::string_view file);

}  // namespace estimator::models
