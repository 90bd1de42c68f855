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
    std::string missing = missing_from(have);
    if (!missing.empty()) {
      return Status(Code::kMissingFeatures, "model " + info().name +
                                                " needs features missing from the request: " +
                                                missing);
    }
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
      double node = 0;
      double idle = 0;
      bool measured = false;
      for (const NodePower& np : in.node_power) {
        if (np.component != splits_[c].component) continue;
        measured = true;
        for (float w : np.watts) node += w;
        for (float w : np.idle_watts) idle += w;
      }
      if (!std::isfinite(node) || !std::isfinite(idle)) {
        return Status(Code::kInvalidValue,
                      "node power of " + splits_[c].component + " is not a finite number");
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

}  // namespace

Result<std::unique_ptr<Model>> load_ratio_model(ModelInfo info, const Json& doc,
                                                std::string_view file) {
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
