// SPDX-License-Identifier: Apache-2.0
#include "service/measured_selection.h"

#include <spdlog/spdlog.h>

#include <array>
#include <charconv>
#include <cmath>

#include "service/metrics.h"

namespace estimator::service {

struct MeasuredSelection::ModelStats {
  std::string name, source, output_type;
  double published_mae;
  // Per component, in the model's order: exponentially weighted sums. The weighted mean
  // is sum / weight, exact from the first interval on (no warm-up bias toward zero).
  struct Component {
    std::string name;
    double abs_sum = 0, abs_weight = 0;  // absolute error, watts
    double pct_sum = 0, pct_weight = 0;  // percentage error, intervals with measurement > 0
  };
  std::vector<Component> components;  // at most kMaxComponents; fixed after creation
  std::uint64_t intervals = 0;

  double mae() const {
    double sum = 0;
    int n = 0;
    for (const Component& c : components) {
      if (c.abs_weight > 0) {
        sum += c.abs_sum / c.abs_weight;
        ++n;
      }
    }
    return n == 0 ? NAN : sum / n;
  }
  double mape() const {
    double sum = 0;
    int n = 0;
    for (const Component& c : components) {
      if (c.pct_weight > 0) {
        sum += c.pct_sum / c.pct_weight;
        ++n;
      }
    }
    return n == 0 ? NAN : sum / n;
  }
};

struct MeasuredSelection::Group {
  std::string source, output_type;
  std::string candidates;  // their names, joined by ", "
  const ModelStats* chosen = nullptr;  // answering now (last decision); null: none yet
  bool by_measurement = false;
  std::uint64_t switches = 0;
};

namespace {

// The measured watts of `component` in this interval (summed over packages), or -1 when
// the request does not carry it or carries values that are not finite and non-negative.
double measured_watts(std::span<const NodePower> measured, std::string_view component) {
  for (const NodePower& p : measured) {
    if (p.component != component || p.watts.empty()) continue;
    double sum = 0;
    for (float w : p.watts) {
      if (!std::isfinite(w) || w < 0) return -1;
      sum += w;
    }
    return sum;
  }
  return -1;
}

std::string number(double v) {
  if (std::isnan(v)) return "unknown";
  return fmt::format("{:.4g}", v);
}

void append_double(std::string& out, double v) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

}  // namespace

MeasuredSelection::MeasuredSelection(MeasuredSelectionConfig config)
    : config_(config), alpha_(2.0 / (std::max(config.window, 1.0) + 1.0)) {}

MeasuredSelection::~MeasuredSelection() = default;

MeasuredSelection::ModelStats* MeasuredSelection::stats_for(const models::Model& model) {
  const models::ModelInfo& i = model.info();
  Key key{i.name, i.source, i.output_type};
  std::lock_guard lock(mu_);
  auto& slot = models_[std::move(key)];
  if (slot == nullptr) {
    slot = std::make_unique<ModelStats>();
    slot->name = i.name;
    slot->source = i.source;
    slot->output_type = i.output_type;
    slot->published_mae = i.mae;
    for (std::size_t c = 0; c < i.components.size() && c < kMaxComponents; ++c) {
      slot->components.push_back({i.components[c]});
    }
  }
  return slot.get();
}

MeasuredSelection::Group* MeasuredSelection::group_for(
    std::string_view source, std::string_view output_type,
    std::span<const models::Model* const> candidates) {
  std::string names;
  for (const models::Model* m : candidates) names += (names.empty() ? "" : ", ") + m->info().name;
  Key key{models::canonical_source(source), models::canonical_output_type(output_type), names};
  std::lock_guard lock(mu_);
  auto& slot = groups_[key];
  if (slot == nullptr) {
    slot = std::make_unique<Group>();
    slot->source = std::get<0>(key);
    slot->output_type = std::get<1>(key);
    slot->candidates = std::move(names);
  }
  return slot.get();
}

std::size_t MeasuredSelection::record(Group& group, std::span<const Observation> candidates,
                                      std::span<const NodePower> measured) {
  std::lock_guard lock(mu_);
  const double keep = 1 - alpha_;
  for (const Observation& o : candidates) {
    if (o.predicted == nullptr) continue;
    bool any = false;
    for (std::size_t k = 0; k < o.stats->components.size(); ++k) {
      ModelStats::Component& c = o.stats->components[k];
      const double w = measured_watts(measured, c.name);
      if (w < 0) continue;
      const double err = std::abs(static_cast<double>(o.predicted[k]) - w);
      c.abs_sum = keep * c.abs_sum + alpha_ * err;
      c.abs_weight = keep * c.abs_weight + alpha_;
      if (w > 0) {
        c.pct_sum = keep * c.pct_sum + alpha_ * 100 * err / w;
        c.pct_weight = keep * c.pct_weight + alpha_;
      }
      any = true;
    }
    if (any) ++o.stats->intervals;
  }

  // The best candidate with enough evidence; the current measured choice keeps its place
  // unless clearly beaten.
  std::size_t best = candidates.size();
  double best_mae = INFINITY;
  std::size_t current = candidates.size();
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    const ModelStats& s = *candidates[i].stats;
    if (&s == group.chosen) current = i;
    if (candidates[i].predicted == nullptr || s.intervals < config_.min_intervals) continue;
    const double e = s.mae();
    if (e < best_mae) {
      best_mae = e;
      best = i;
    }
  }
  std::size_t answer = 0;
  if (best != candidates.size()) {
    answer = best;
    if (group.by_measurement && current != candidates.size() && current != best &&
        candidates[current].predicted != nullptr &&
        candidates[current].stats->intervals >= config_.min_intervals &&
        !(best_mae < kSwitchRatio * candidates[current].stats->mae())) {
      answer = current;
    }
  }
  const ModelStats* now = candidates[answer].stats;
  const bool by_measurement = best != candidates.size();
  if (now != group.chosen || by_measurement != group.by_measurement) {
    if (group.chosen != nullptr && now != group.chosen) {
      ++group.switches;
      const ModelStats& was = *group.chosen;
      spdlog::info("selection for {} {} (candidates {}): model {} (measured mae {} W, mape {} % over {} "
                   "intervals; published mae {}) now answers instead of {} (measured mae {} W, "
                   "mape {} %; published mae {}), {}",
                   group.source.empty() ? "any source" : group.source, group.output_type,
                   group.candidates, now->name, number(now->mae()), number(now->mape()), now->intervals,
                   number(now->published_mae), was.name, number(was.mae()), number(was.mape()),
                   number(was.published_mae),
                   by_measurement ? "chosen by measured error" : "the published choice");
    }
    group.chosen = now;
    group.by_measurement = by_measurement;
  }
  return answer;
}

MeasuredSelection::Figures MeasuredSelection::figures(std::string_view model, std::string_view source,
                                                      std::string_view output_type) const {
  std::lock_guard lock(mu_);
  const auto it = models_.find(Key{std::string(model), std::string(source), std::string(output_type)});
  if (it == models_.end()) return {NAN, NAN, 0};
  return {it->second->mae(), it->second->mape(), it->second->intervals};
}

void MeasuredSelection::render(std::string& out) const {
  std::lock_guard lock(mu_);
  auto labels = [&out](std::initializer_list<std::pair<std::string_view, std::string_view>> l) {
    out += '{';
    bool first = true;
    for (const auto& [k, v] : l) {
      if (!first) out += ',';
      first = false;
      out += k;
      out += "=\"";
      append_label_value(out, v);
      out += '"';
    }
    out += "} ";
  };
  out += "# HELP estimator_model_measured_error Error of a model against the node power "
         "measured on this node, exponentially weighted over the selection window: kind mae "
         "in watts, mape in percent.\n# TYPE estimator_model_measured_error gauge\n";
  for (const auto& [key, s] : models_) {
    for (const ModelStats::Component& c : s->components) {
      if (c.abs_weight > 0) {
        out += "estimator_model_measured_error";
        labels({{"model", s->name}, {"source", s->source}, {"output_type", s->output_type},
                {"component", c.name}, {"kind", "mae"}});
        append_double(out, c.abs_sum / c.abs_weight);
        out += '\n';
      }
      if (c.pct_weight > 0) {
        out += "estimator_model_measured_error";
        labels({{"model", s->name}, {"source", s->source}, {"output_type", s->output_type},
                {"component", c.name}, {"kind", "mape"}});
        append_double(out, c.pct_sum / c.pct_weight);
        out += '\n';
      }
    }
  }
  out += "# HELP estimator_model_measured_intervals Intervals with measured node power a "
         "model was evaluated on.\n# TYPE estimator_model_measured_intervals gauge\n";
  for (const auto& [key, s] : models_) {
    out += "estimator_model_measured_intervals";
    labels({{"model", s->name}, {"source", s->source}, {"output_type", s->output_type}});
    append_double(out, static_cast<double>(s->intervals));
    out += '\n';
  }
  out += "# HELP estimator_model_selected The model answering requests with measured node "
         "power (value 1), by source and output type as requests name them and the candidates "
         "compared; basis measured or published.\n# TYPE estimator_model_selected gauge\n";
  for (const auto& [key, g] : groups_) {
    if (g->chosen == nullptr) continue;
    out += "estimator_model_selected";
    labels({{"source", g->source}, {"output_type", g->output_type}, {"candidates", g->candidates},
            {"model", g->chosen->name}, {"basis", g->by_measurement ? "measured" : "published"}});
    out += "1\n";
  }
  out += "# HELP estimator_model_selection_switches_total Changes of the model answering a "
         "source and output type made by measured selection.\n"
         "# TYPE estimator_model_selection_switches_total counter\n";
  for (const auto& [key, g] : groups_) {
    out += "estimator_model_selection_switches_total";
    labels({{"source", g->source}, {"output_type", g->output_type}, {"candidates", g->candidates}});
    append_double(out, static_cast<double>(g->switches));
    out += '\n';
  }
}

}  // namespace estimator::service
