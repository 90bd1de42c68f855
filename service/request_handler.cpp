// SPDX-License-Identifier: Apache-2.0
#include "service/request_handler.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <string_view>

#include "models/model.h"
#include "service/measured_selection.h"
#include "service/metrics.h"

namespace estimator::service {
namespace {

// Plans cached per handler; a feature list or selector beyond this evicts the oldest.
constexpr std::size_t kPlanCacheSize = 64;

// The plan cache's hash: eight bytes per multiplication (a byte at a time was most of the
// lookup's cost). A collision costs only a comparison: CachedPlan::matches decides.
std::uint64_t mix(std::uint64_t h, std::uint64_t v) {
  h = (h ^ v) * 0x9E3779B97F4A7C15ULL;
  return h ^ (h >> 32);
}

std::uint64_t hash_text(std::uint64_t h, std::string_view s) {
  const char* p = s.data();
  std::size_t n = s.size();
  h = mix(h, n);  // the length separates ("ab","c") from ("a","bc")
  for (; n >= 8; p += 8, n -= 8) {
    std::uint64_t w;
    std::memcpy(&w, p, 8);
    h = mix(h, w);
  }
  if (n != 0) {
    std::uint64_t w = 0;
    for (std::size_t i = 0; i < n; ++i) w |= std::uint64_t{static_cast<unsigned char>(p[i])} << (8 * i);
    h = mix(h, w);
  }
  return h;
}

std::uint64_t key_hash(const wire::ParsedRequest& r) {
  std::uint64_t h = r.node_power.empty() ? 0 : 1;
  h = hash_text(h, r.model_name);
  h = hash_text(h, r.trainer);
  h = hash_text(h, r.output_type);
  h = hash_text(h, r.source);
  h = hash_text(h, r.filter);
  for (std::string_view f : r.feature_names) h = hash_text(h, f);
  return h;
}

// True when no value is NaN or infinite. Adding one exponent step to the exponent bits
// carries into bit 31 exactly when they are all ones; AND, ADD and OR vectorise even on
// baseline x86-64, unlike a per-value isfinite with an early exit.
bool all_finite(const float* values, std::size_t n) {
  std::uint32_t carry = 0;
  for (std::size_t i = 0; i < n; ++i) {
    std::uint32_t bits;
    std::memcpy(&bits, values + i, sizeof bits);
    carry |= (bits & 0x7F800000u) + 0x00800000u;
  }
  return (carry & 0x80000000u) == 0;
}

std::string figure(double v) {
  return std::isnan(v) ? std::string("unknown") : fmt::format("{:g}", v);
}

// Names everything an operator needs to act: the model answering, and what each better
// one lacked (so the exporter's feature set or the model directory can be fixed).
void log_fallback(const wire::ParsedRequest& req, const models::Model& chosen,
                  std::span<const models::PassedOver> passed_over, const std::string& error_key) {
  std::string features;
  for (std::string_view f : req.feature_names) {
    if (!features.empty()) features += ", ";
    features += f;
  }
  std::string skipped;
  for (const models::PassedOver& p : passed_over) {
    const models::ModelInfo& i = p.model->info();
    if (!skipped.empty()) skipped += "; ";
    skipped += fmt::format("{} ({} {}, from {}) {}", i.name, error_key, figure(i.figure(error_key)),
                           i.origin, models::describe_needs(p));
  }
  const models::ModelInfo& c = chosen.info();
  spdlog::info("fallback: model {} ({} {}, from {}) answers requests for output_type '{}', "
               "source '{}' with features [{}]; better-ranked models passed over: {}",
               c.name, error_key, figure(c.figure(error_key)), c.origin, req.output_type,
               req.source, features, skipped);
}

// The reply's model description and components.
wire::ResponseTail tail_of(const models::ModelInfo& info, double node_cores) {
  const double trained = info.machine_cores;
  const wire::ModelDescription desc{info.name,        info.trainer, info.model_class,
                                    info.output_type, info.source,  info.mae,
                                    info.mape,        trained > 0 ? node_cores / trained : 1.0};
  return wire::make_response_tail(desc, info.components);
}

}  // namespace

bool RegistryHolder::first_report(std::uint64_t shape) const {
  std::lock_guard lock(reported_mu_);
  // Bounded: a client inventing shapes would at worst see some reported twice.
  if (reported_.size() >= 4096) reported_.clear();
  return reported_.insert(shape).second;
}

// The candidates measured selection compares for one request shape, each with what the
// handler needs to evaluate it on one row and to answer with it, built once per shape.
struct RequestHandler::Shadow {
  struct Candidate {
    const models::Model* model;
    std::unique_ptr<const models::Plan> plan;
    std::vector<float> out;  // one row of predictions
    MeasuredSelection::ModelStats* stats;
    wire::ResponseTail tail;
    RequestCell* cell = nullptr;
  };
  std::shared_ptr<MeasuredSelection> selection;
  MeasuredSelection::Group* group = nullptr;
  std::vector<Candidate> candidates;  // [0] = the published choice
  std::array<MeasuredSelection::Observation, MeasuredSelection::kMaxCandidates> observations{};
};

struct RequestHandler::CachedPlan {
  std::uint64_t hash;
  std::string model_name, trainer, output_type, source, filter;
  std::vector<std::string> features;
  bool has_node_power;
  const models::Model* model;
  std::unique_ptr<const models::Plan> plan;
  wire::ResponseTail tail;  // model description and components, encoded once
  RequestCell* cell = nullptr;  // the model's metrics, resolved once (null: no metrics)
  // Counts answers when a better-ranked model was passed over (null: none was, or no metrics).
  std::atomic<std::uint64_t>* fallbacks = nullptr;
  std::unique_ptr<Shadow> shadow;  // null: measured selection does not apply to this shape

  bool matches(const wire::ParsedRequest& r) const {
    if (model_name != r.model_name || trainer != r.trainer || output_type != r.output_type ||
        source != r.source || filter != r.filter || has_node_power != !r.node_power.empty() ||
        features.size() != r.feature_names.size()) {
      return false;
    }
    for (std::size_t i = 0; i < features.size(); ++i) {
      if (features[i] != r.feature_names[i]) return false;
    }
    return true;
  }
};

RequestHandler::RequestHandler(const RegistryHolder& registry, std::size_t request_capacity,
                               std::size_t response_capacity, Metrics* metrics)
    : registry_(registry),
      reader_(request_capacity),
      builder_(response_capacity),
      node_cores_(static_cast<double>(sysconf(_SC_NPROCESSORS_ONLN))),
      ping_tail_(wire::make_response_tail({}, {})),
      metrics_(metrics) {
  cache_.reserve(kPlanCacheSize);
}

RequestHandler::~RequestHandler() = default;

const RequestHandler::CachedPlan* RequestHandler::find_plan(const wire::ParsedRequest& req,
                                                            Status& error) {
  // The cache is dropped when the registry swaps.
  if (const std::uint64_t generation = registry_.generation(); generation != generation_) {
    auto reg = registry_.get();
    generation_ = generation;
    if (reg != current_) {
      cache_.clear();
      last_ = nullptr;
      current_ = std::move(reg);
    }
  }
  // A client sends one shape again and again: the last plan is tried before hashing.
  if (last_ != nullptr && last_->matches(req)) return last_;
  const std::uint64_t h = key_hash(req);
  for (const auto& c : cache_) {
    if (c->hash == h && c->matches(req)) return last_ = c.get();
  }
  // Miss: select and plan (allocates; once per distinct request shape).
  const models::Selector sel{req.model_name, req.trainer, req.output_type, req.source,
                             req.filter};
  std::vector<models::PassedOver> passed_over;
  Result<const models::Model*> chosen = current_->select(
      sel, req.feature_names, !req.node_power.empty(), registry_.policy(), &passed_over);
  if (const auto observer = registry_.shape_observer(); observer != nullptr) {
    (*observer)(req, chosen.ok() ? chosen.value() : nullptr);
  }
  if (!chosen.ok()) {
    error = chosen.status();
    return nullptr;
  }
  const models::Model* model = chosen.value();
  auto plan = model->plan(req.feature_names);
  if (!plan.ok()) {
    error = plan.status();
    return nullptr;
  }
  auto entry = std::make_unique<CachedPlan>();
  entry->hash = h;
  entry->model_name = req.model_name;
  entry->trainer = req.trainer;
  entry->output_type = req.output_type;
  entry->source = req.source;
  entry->filter = req.filter;
  entry->features.assign(req.feature_names.begin(), req.feature_names.end());
  entry->has_node_power = !req.node_power.empty();
  entry->model = model;
  entry->plan = std::move(plan).value();
  const models::ModelInfo& info = model->info();
  if (metrics_ != nullptr) entry->cell = metrics_->cell(info.name, info.source, info.output_type);
  if (!passed_over.empty()) {
    if (registry_.first_report(h)) log_fallback(req, *model, passed_over, registry_.policy().error_key);
    if (metrics_ != nullptr) {
      entry->fallbacks = metrics_->fallback_counter(info.name, info.source, info.output_type,
                                                    passed_over.front().model->info().name);
    }
  }
  entry->tail = tail_of(info, node_cores_);
  entry->shadow = make_shadow(req, *model);
  if (cache_.size() == kPlanCacheSize) cache_.erase(cache_.begin());
  cache_.push_back(std::move(entry));
  return last_ = cache_.back().get();
}

std::unique_ptr<RequestHandler::Shadow> RequestHandler::make_shadow(const wire::ParsedRequest& req,
                                                                    const models::Model& chosen) {
  // Explicit choices win; measured node power is absolute, so only AbsPower answers
  // compare with it; a model that splits the measurement cannot be judged by it.
  if (!req.model_name.empty() || !req.trainer.empty() || req.node_power.empty() ||
      req.output_type.empty() || models::canonical_output_type(req.output_type) != "AbsPower" ||
      chosen.info().needs_node_power) {
    return nullptr;
  }
  std::shared_ptr<MeasuredSelection> selection = registry_.measured_selection();
  if (selection == nullptr || !selection->config().enabled) return nullptr;
  const models::Selector sel{req.model_name, req.trainer, req.output_type, req.source, req.filter};
  std::vector<const models::Model*> ranked =
      current_->ranked(sel, req.feature_names, true, registry_.policy());
  std::erase_if(ranked, [&](const models::Model* m) {
    return m == &chosen || m->info().needs_node_power;
  });
  ranked.insert(ranked.begin(), &chosen);
  auto shadow = std::make_unique<Shadow>();
  shadow->selection = selection;
  std::vector<const models::Model*> judged;
  for (const models::Model* m : ranked) {
    if (shadow->candidates.size() == MeasuredSelection::kMaxCandidates) break;
    auto plan = m->plan(req.feature_names);
    if (!plan.ok()) continue;
    judged.push_back(m);
    const models::ModelInfo& info = m->info();
    Shadow::Candidate c{m, std::move(plan).value(), std::vector<float>(info.components.size()),
                        selection->stats_for(*m), tail_of(info, node_cores_), nullptr};
    if (metrics_ != nullptr) c.cell = metrics_->cell(info.name, info.source, info.output_type);
    shadow->candidates.push_back(std::move(c));
  }
  if (shadow->candidates.empty() || shadow->candidates.front().model != &chosen) return nullptr;
  shadow->group = selection->group_for(req.source, req.output_type, judged);
  return shadow;
}

std::span<const std::uint8_t> RequestHandler::estimate_measured(const wire::ParsedRequest& req,
                                                                Shadow& shadow,
                                                                const CachedPlan& cp) {
  const models::ModelInput in{models::ConstMatrixView(req.matrix, req.rows, req.cols),
                              req.system_values, req.node_power};
  const std::size_t n = shadow.candidates.size();
  for (std::size_t i = 0; i < n; ++i) {
    Shadow::Candidate& c = shadow.candidates[i];
    const auto ncomp = static_cast<Eigen::Index>(c.out.size());
    const Status s = c.model->predict(*c.plan, in, models::MatrixView(c.out.data(), 1, ncomp));
    shadow.observations[i] = {c.stats, s.ok() ? c.out.data() : nullptr};
  }
  const std::size_t pick =
      shadow.selection->record(*shadow.group, {shadow.observations.data(), n}, req.node_power);
  if (shadow.observations[pick].predicted == nullptr) return {};  // the usual path says why
  const Shadow::Candidate& a = shadow.candidates[pick];
  Result<float*> out = builder_.begin(1, static_cast<std::uint32_t>(a.out.size()), a.tail);
  if (!out.ok()) {
    last_code_ = out.status().code();
    return builder_.error(req.request_id, out.status());
  }
  std::copy(a.out.begin(), a.out.end(), out.value());
  if (a.cell != nullptr) last_cell_ = a.cell;
  if (pick == 0 && cp.fallbacks != nullptr) cp.fallbacks->fetch_add(1, std::memory_order_relaxed);
  last_code_ = Code::kOk;
  return builder_.finish(req.request_id);
}

std::span<const std::uint8_t> RequestHandler::estimate(const wire::ParsedRequest& req) {
  Status error;
  const CachedPlan* cp = find_plan(req, error);
  if (cp == nullptr) {
    last_code_ = error.code();
    return builder_.error(req.request_id, error);
  }
  last_cell_ = cp->cell;
  const models::ModelInfo& info = cp->model->info();
  const auto ncomp = static_cast<std::uint32_t>(info.components.size());
  const models::ConstMatrixView x(req.matrix, req.rows, req.cols);
  if (!all_finite(req.matrix, std::size_t{req.rows} * req.cols)) {
    for (std::uint32_t r = 0; r < req.rows; ++r) {
      for (std::uint32_t c = 0; c < req.cols; ++c) {
        if (!std::isfinite(x(r, c))) {
          last_code_ = Code::kInvalidValue;
          return builder_.error(
              req.request_id,
              Status(Code::kInvalidValue, "row " + std::to_string(r) + ", feature '" +
                                              std::string(req.feature_names[c]) +
                                              "': value is NaN or infinite"));
        }
      }
    }
  }
  // One interval of node-level AbsPower with measured node power: candidates are
  // evaluated on it and the measured choice answers (at most kMaxCandidates evaluations
  // of one row and one short lock: the per-request budget).
  if (cp->shadow != nullptr && req.rows == 1 && !warming_) {
    if (auto reply = estimate_measured(req, *cp->shadow, *cp); !reply.empty()) return reply;
  }
  Result<float*> out = builder_.begin(req.rows, ncomp, cp->tail);
  if (!out.ok()) {
    last_code_ = out.status().code();
    return builder_.error(req.request_id, out.status());
  }
  const models::ModelInput in{x, req.system_values, req.node_power};
  if (Status s = cp->model->predict(*cp->plan, in, models::MatrixView(out.value(), req.rows, ncomp));
      !s.ok()) {
    last_code_ = s.code();
    return builder_.error(req.request_id, s);
  }
  if (cp->fallbacks != nullptr && !warming_) cp->fallbacks->fetch_add(1, std::memory_order_relaxed);
  last_code_ = Code::kOk;
  return builder_.finish(req.request_id);
}

std::span<const std::uint8_t> RequestHandler::handle(std::span<const std::uint8_t> request) {
  if (metrics_ == nullptr) return handle_request(request);
  const auto t0 = std::chrono::steady_clock::now();
  const std::span<const std::uint8_t> reply = handle_request(request);
  if (last_was_ping_) {
    metrics_->count_ping();
    return reply;
  }
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                      std::chrono::steady_clock::now() - t0).count();
  RequestCell* cell = last_cell_ != nullptr ? last_cell_ : metrics_->unattributed();
  cell->record(last_code_, static_cast<std::uint64_t>(ns));
  return reply;
}

void RequestHandler::warm(std::span<const std::uint8_t> request) {
  warming_ = true;
  const Code code = last_code_;
  (void)handle_request(request);
  last_code_ = code;
  warming_ = false;
}

std::span<const std::uint8_t> RequestHandler::handle_request(
    std::span<const std::uint8_t> request) {
  last_cell_ = nullptr;
  last_was_ping_ = false;
  wire::ParsedRequest req;
  if (Status s = reader_.read(request, req); !s.ok()) {
    last_code_ = s.code();
    return builder_.error(req.request_id, s);
  }
  if (req.kind == fb::RequestKind::Ping) {
    last_code_ = Code::kOk;
    last_was_ping_ = true;
    if (Result<float*> r = builder_.begin(0, 0, ping_tail_); !r.ok()) {
      return builder_.error(req.request_id, r.status());
    }
    return builder_.finish(req.request_id);
  }
  return estimate(req);
}

}  // namespace estimator::service
