// SPDX-License-Identifier: Apache-2.0
#include "models/ratio_model.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

namespace estimator::models {

namespace {

using json::Json;
using json::Where;

constexpr Eigen::Index kEvenSplit = -1;

struct Split {
  std::string component;
  std::string usage;  // empty: even split
};

// kMissingFeatures naming what `m` lacks in `have`, or Ok.
Status require_features(const Model& m, std::span<const std::string_view> have) {
  const std::string missing = m.missing_from(have);
  if (missing.empty()) return Status::Ok();
  return Status(Code::kMissingFeatures,
                "model " + m.info().name + " needs features missing from the request: " + missing);
}

// Sums the request's measured power of `component` over CPU packages.
Status node_power_of(std::span<const NodePower> powers, const std::string& component,
                     double& node, double& idle, bool& measured) {
  node = idle = 0;
  measured = false;
  for (const NodePower& np : powers) {
    if (np.component != component) continue;
    measured = true;
    for (float w : np.watts) node += w;
    for (float w : np.idle_watts) idle += w;
  }
  if (!std::isfinite(node) || !std::isfinite(idle)) {
    return Status(Code::kInvalidValue, "node power of " + component + " is not a finite number");
  }
  return Status::Ok();
}

class RatioPlan final : public Plan {
 public:
  std::vector<Eigen::Index> columns;  // per component: usage column or kEvenSplit
  Eigen::Index request_columns = 0;
};

Eigen::Index find_column(std::span<const std::string_view> have, std::string_view name) {
  const auto it = std::find(have.begin(), have.end(), name);
  return it == have.end() ? kEvenSplit : static_cast<Eigen::Index>(it - have.begin());
}

class RatioModel final : public Model {
 public:
  RatioModel(ModelInfo info, std::vector<Split> splits, std::string fallback)
      : Model(std::move(info)), splits_(std::move(splits)), fallback_(std::move(fallback)) {}

  std::string missing_from(std::span<const std::string_view> have) const override {
    std::string missing;
    for (const Split& s : splits_) {
      if (s.usage.empty() || find_column(have, s.usage) != kEvenSplit) continue;
      if (!fallback_.empty() && find_column(have, fallback_) != kEvenSplit) continue;
      std::string what = s.usage;
      if (!fallback_.empty()) what += " (or " + fallback_ + ")";
      if (missing.find(what) != std::string::npos) continue;
      if (!missing.empty()) missing += ", ";
      missing += what;
    }
    return missing;
  }

  Result<std::unique_ptr<const Plan>> plan(
      std::span<const std::string_view> have) const override {
    if (Status s = require_features(*this, have); !s.ok()) return s;
    std::vector<Eigen::Index> columns;
    columns.reserve(splits_.size());
    for (const Split& s : splits_) {
      Eigen::Index col = kEvenSplit;
      if (!s.usage.empty()) {
        col = find_column(have, s.usage);
        if (col == kEvenSplit) col = find_column(have, fallback_);
      }
      columns.push_back(col);
    }
    auto p = std::make_unique<RatioPlan>();
    p->columns = std::move(columns);
    p->request_columns = static_cast<Eigen::Index>(have.size());
    return std::unique_ptr<const Plan>(std::move(p));
  }

  Status predict(const Plan& plan, const ModelInput& in, MatrixView out) const override {
    const auto* p = dynamic_cast<const RatioPlan*>(&plan);
    if (Status s = check_predict_args(p, p ? p->request_columns : 0, in, out); !s.ok()) return s;
    const Eigen::Index rows = in.x.rows();
    for (std::size_t c = 0; c < splits_.size(); ++c) {
      const auto oc = static_cast<Eigen::Index>(c);
      double node = 0, idle = 0;
      bool measured = false;
      if (Status s = node_power_of(in.node_power, splits_[c].component, node, idle, measured);
          !s.ok()) {
        return s;
      }
      if (!measured) {
        for (Eigen::Index r = 0; r < rows; ++r) out(r, oc) = 0.0F;
        continue;
      }
      if (rows == 0) continue;

      const Eigen::Index col = p->columns[c];
      double usage_sum = 0;
      if (col != kEvenSplit) {
        for (Eigen::Index r = 0; r < rows; ++r) {
          const float u = in.x(r, col);
          if (!std::isfinite(u)) {
            return Status(Code::kInvalidValue, "row " + std::to_string(r) + " usage column " +
                                                   std::to_string(col) +
                                                   " is not a finite number");
          }
          usage_sum += u > 0 ? u : 0.0F;
        }
      }
      const double n = static_cast<double>(rows);
      const double idle_share = idle / n;
      for (Eigen::Index r = 0; r < rows; ++r) {
        double share = node / n;
        if (col != kEvenSplit && usage_sum > 0) {
          const float u = in.x(r, col);
          share = (u > 0 ? u : 0.0) / usage_sum * node;
        }
        const double power = share + idle_share;
        out(r, oc) = static_cast<float>(power > 0 ? power : 0.0);
      }
    }
    return Status::Ok();
  }

 private:
  std::vector<Split> splits_;
  std::string fallback_;
};

// The 2022 CorrRatio model (see ratio_model.h).
struct Score {
  std::size_t feature;  // index into info().features
  double weight;
};
struct ScoredComponent {
  std::string name;
  std::vector<Score> scores;
};

class CorrRatioPlan final : public Plan {
 public:
  std::vector<Eigen::Index> columns;  // per model feature: its request column
  Eigen::Index request_columns = 0;
  mutable std::vector<double> column_sums;  // scratch, one per model feature
};

class CorrRatioModel final : public Model {
 public:
  CorrRatioModel(ModelInfo info, std::vector<ScoredComponent> components)
      : Model(std::move(info)), components_(std::move(components)) {}

  std::string missing_from(std::span<const std::string_view> have) const override {
    std::string missing;
    for (const std::string& f : info().features) {
      if (find_column(have, f) != kEvenSplit) continue;
      if (!missing.empty()) missing += ", ";
      missing += f;
    }
    return missing;
  }

  Result<std::unique_ptr<const Plan>> plan(
      std::span<const std::string_view> have) const override {
    if (Status s = require_features(*this, have); !s.ok()) return s;
    auto p = std::make_unique<CorrRatioPlan>();
    for (const std::string& f : info().features) p->columns.push_back(find_column(have, f));
    p->request_columns = static_cast<Eigen::Index>(have.size());
    p->column_sums.resize(info().features.size());
    return std::unique_ptr<const Plan>(std::move(p));
  }

  Status predict(const Plan& plan, const ModelInput& in, MatrixView out) const override {
    const auto* p = dynamic_cast<const CorrRatioPlan*>(&plan);
    if (Status s = check_predict_args(p, p ? p->request_columns : 0, in, out); !s.ok()) return s;
    const Eigen::Index rows = in.x.rows();
    // Each scored column's total usage; negative usage counts as 0, as in the Go ratio.
    for (std::size_t f = 0; f < p->columns.size(); ++f) {
      double sum = 0;
      for (Eigen::Index r = 0; r < rows; ++r) {
        const float u = in.x(r, p->columns[f]);
        if (!std::isfinite(u)) {
          return Status(Code::kInvalidValue, "row " + std::to_string(r) + " " +
                                                 info().features[f] + " is not a finite number");
        }
        sum += u > 0 ? u : 0.0F;
      }
      p->column_sums[f] = sum;
    }
    const double n = static_cast<double>(rows);
    for (std::size_t c = 0; c < components_.size(); ++c) {
      const auto oc = static_cast<Eigen::Index>(c);
      double node = 0, idle = 0;
      bool measured = false;
      if (Status s = node_power_of(in.node_power, components_[c].name, node, idle, measured);
          !s.ok()) {
        return s;
      }
      for (Eigen::Index r = 0; r < rows; ++r) {
        double share = 0;
        for (const Score& sc : components_[c].scores) {
          const double sum = p->column_sums[sc.feature];
          const float u = in.x(r, p->columns[sc.feature]);
          share += sc.weight * (sum > 0 ? (u > 0 ? u : 0.0) / sum : 1.0 / n);
        }
        const double power = measured ? share * node + idle / n : 0.0;
        out(r, oc) = static_cast<float>(power > 0 ? power : 0.0);
      }
    }
    return Status::Ok();
  }

 private:
  std::vector<ScoredComponent> components_;
};

constexpr std::string_view kScoreSuffix = "_score";

bool is_corr_ratio(const Json& doc) {
  if (!doc.is_object()) return false;
  for (const auto& [key, value] : doc.items()) {
    if (key.size() > kScoreSuffix.size() && key.ends_with(kScoreSuffix)) return true;
  }
  return false;
}

Result<std::unique_ptr<Model>> load_corr_ratio_model(ModelInfo info, const Json& doc,
                                                     std::string_view file) {
  const Where root{std::string(file), ""};
  std::vector<std::string> features;
  std::vector<ScoredComponent> components;
  for (const auto& [key, value] : doc.items()) {
    if (key.size() <= kScoreSuffix.size() || !key.ends_with(kScoreSuffix)) continue;
    const Where cw = root / key;
    if (Status s = json::expect_object(value, cw); !s.ok()) return s;
    ScoredComponent comp{key.substr(0, key.size() - kScoreSuffix.size()), {}};
    for (const auto& [feature, score] : value.items()) {
      Result<double> w = json::finite_number(score, cw / feature);
      if (!w.ok()) return w.status();
      auto it = std::find(features.begin(), features.end(), feature);
      if (it == features.end()) it = features.insert(features.end(), feature);
      comp.scores.push_back(Score{static_cast<std::size_t>(it - features.begin()), *w});
    }
    components.push_back(std::move(comp));
  }
  info.components.clear();
  for (const ScoredComponent& c : components) info.components.push_back(c.name);
  info.features = std::move(features);
  info.model_class = "ratio";
  info.needs_node_power = true;
  return std::unique_ptr<Model>(
      std::make_unique<CorrRatioModel>(std::move(info), std::move(components)));
}

}  // namespace

Result<std::unique_ptr<Model>> load_ratio_model(ModelInfo info, const Json& doc,
                                                std::string_view file) {
  if (is_corr_ratio(doc)) return load_corr_ratio_model(std::move(info), doc, file);
  const Where root{std::string(file), ""};
  Result<const Json*> comps = json::member(doc, root, "components");
  if (!comps.ok()) return comps.status();
  const Where cw = root / "components";
  if (Status s = json::expect_object(**comps, cw); !s.ok()) return s;

  std::vector<Split> splits;
  for (const auto& [component, usage] : (*comps)->items()) {
    Result<std::string> u = json::string_value(usage, cw / component);
    if (!u.ok()) return u.status();
    splits.push_back(Split{component, std::move(*u)});
  }
  if (splits.empty()) return json::invalid(cw, "no components");

  std::string fallback;
  if (const Json* f = json::optional_member(doc, "fallback_usage")) {
    Result<std::string> fs = json::string_value(*f, root / "fallback_usage");
    if (!fs.ok()) return fs.status();
    fallback = std::move(*fs);
  }

  info.components.clear();
  info.features.clear();
  for (const Split& s : splits) {
    info.components.push_back(s.component);
    if (!s.usage.empty() &&
        std::find(info.features.begin(), info.features.end(), s.usage) == info.features.end()) {
      info.features.push_back(s.usage);
    }
  }
  if (!fallback.empty() &&
      std::find(info.features.begin(), info.features.end(), fallback) == info.features.end()) {
    info.features.push_back(fallback);
  }
  info.model_class = "ratio";
  info.needs_node_power = true;
  return std::unique_ptr<Model>(
      std::make_unique<RatioModel>(std::move(info), std::move(splits), std::move(fallback)));
}

}  // namespace estimator::models
