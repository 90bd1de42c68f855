#include "models/weight_model.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

namespace estimator::models {

namespace {

using json::Json;
using json::Where;

struct Term {
  std::uint32_t feature;  // index into ModelInfo::features
  double coefficient;     // weight / scale, or weight / sqrt(variance)
};

struct Categorical {
  std::string feature;
  std::vector<std::pair<std::string, double>> weights;  // value -> weight
};

struct Component {
  std::string name;
  double bias = 0;  // Bias_Weight minus the folded mean terms
  std::vector<Term> terms;
  std::vector<Categorical> categorical;
};

class WeightPlan final : public Plan {
 public:
  std::vector<Eigen::Index> columns;  // request column of each model feature
  Eigen::Index request_columns = 0;
};

class WeightModel final : public Model {
 public:
  WeightModel(ModelInfo info, std::vector<Component> components)
      : Model(std::move(info)), components_(std::move(components)) {}

  Result<std::unique_ptr<const Plan>> plan(
      std::span<const std::string_view> request_features) const override {
    std::string missing = missing_from(request_features);
    if (!missing.empty()) {
      return Status(Code::kMissingFeatures, "model " + info().name +
                                                " needs features missing from the request: " +
                                                missing);
    }
    std::vector<Eigen::Index> columns;
    columns.reserve(info().features.size());
    for (const std::string& f : info().features) {
      const auto it = std::find(request_features.begin(), request_features.end(),
                                std::string_view(f));
      columns.push_back(static_cast<Eigen::Index>(it - request_features.begin()));
    }
    auto p = std::make_unique<WeightPlan>();
    p->columns = std::move(columns);
    p->request_columns = static_cast<Eigen::Index>(request_features.size());
    return std::unique_ptr<const Plan>(std::move(p));
  }

  Status predict(const Plan& plan, const ModelInput& in, MatrixView out) const override {
    const auto* p = dynamic_cast<const WeightPlan*>(&plan);
    if (p == nullptr) {
      return Status(Code::kInternal, "model " + info().name + " got a plan of another model");
    }
    if (in.x.cols() != p->request_columns) {
      return Status(Code::kInvalidArgument,
                    "request has " + std::to_string(in.x.cols()) +
                        " columns but the plan was made for " +
                        std::to_string(p->request_columns));
    }
    if (out.rows() != in.x.rows() ||
        out.cols() != static_cast<Eigen::Index>(components_.size())) {
      return Status(Code::kInvalidArgument,
                    "output is " + std::to_string(out.rows()) + "x" +
                        std::to_string(out.cols()) + ", expected " +
                        std::to_string(in.x.rows()) + "x" +
                        std::to_string(components_.size()));
    }
    for (std::size_t c = 0; c < components_.size(); ++c) {
      const Component& comp = components_[c];
      const double base = comp.bias + categorical_sum(comp, in.system_values);
      const auto col = static_cast<Eigen::Index>(c);
      for (Eigen::Index r = 0; r < in.x.rows(); ++r) {
        double power = base;
        for (const Term& t : comp.terms) {
          power += t.coefficient * static_cast<double>(in.x(r, p->columns[t.feature]));
        }
        if (!std::isfinite(power)) return not_finite(comp, *p, in, r);
        out(r, col) = static_cast<float>(power > 0 ? power : 0.0);
      }
    }
    return Status::Ok();
  }

 private:
  // A system value the model does not know (or a feature the request does not send)
  // contributes nothing, as in Kepler's Go regressor.
  static double categorical_sum(const Component& comp, std::span<const SystemValue> values) {
    double sum = 0;
    for (const Categorical& cat : comp.categorical) {
      for (const SystemValue& sv : values) {
        if (sv.name != cat.feature) continue;
        for (const auto& [value, weight] : cat.weights) {
          if (value == sv.value) {
            sum += weight;
            break;
          }
        }
        break;
      }
    }
    return sum;
  }

  Status not_finite(const Component& comp, const WeightPlan& p, const ModelInput& in,
                    Eigen::Index row) const {
    for (const Term& t : comp.terms) {
      const float v = in.x(row, p.columns[t.feature]);
      if (!std::isfinite(v)) {
        return Status(Code::kInvalidValue, "row " + std::to_string(row) + " feature " +
                                               info().features[t.feature] +
                                               " is not a finite number");
      }
    }
    return Status(Code::kInvalidValue, "model " + info().name + " component " + comp.name +
                                           " overflows on row " + std::to_string(row));
  }

  std::vector<Component> components_;
};

const Json* all_weights(const Json& v) {
  return v.is_object() ? json::optional_member(v, "All_Weights") : nullptr;
}

// Numerical_Variables entries in file order, with their folded coefficient and bias
// offset. A zero scale or variance drops the term (the feature stays required: Kepler
// maps every listed feature).
struct Numerical {
  std::string feature;
  double coefficient;
  double bias_offset;
};

Result<Numerical> parse_numerical(const std::string& feature, const Json& v, const Where& w) {
  if (Status s = json::expect_object(v, w); !s.ok()) return s;
  Result<const Json*> wj = json::member(v, w, "weight");
  if (!wj.ok()) return wj.status();
  Result<double> weight = json::finite_number(**wj, w / "weight");
  if (!weight.ok()) return weight.status();

  if (const Json* sj = json::optional_member(v, "scale")) {
    Result<double> scale = json::finite_number(*sj, w / "scale");
    if (!scale.ok()) return scale.status();
    if (*scale == 0) return Numerical{feature, 0, 0};
    return Numerical{feature, *weight / *scale, 0};
  }
  const Json* mj = json::optional_member(v, "mean");
  const Json* vj = json::optional_member(v, "variance");
  if (mj == nullptr || vj == nullptr) {
    return json::invalid(w, "needs \"scale\", or \"mean\" and \"variance\"");
  }
  Result<double> mean = json::finite_number(*mj, w / "mean");
  if (!mean.ok()) return mean.status();
  Result<double> variance = json::finite_number(*vj, w / "variance");
  if (!variance.ok()) return variance.status();
  if (*variance < 0) return json::invalid(w / "variance", "must not be negative");
  if (*variance == 0) return Numerical{feature, 0, 0};
  const double sd = std::sqrt(*variance);
  return Numerical{feature, *weight / sd, -*weight * *mean / sd};
}

Result<std::vector<Categorical>> parse_categorical(const Json& all, const Where& w) {
  std::vector<Categorical> out;
  const Json* cats = json::optional_member(all, "Categorical_Variables");
  if (cats == nullptr) return out;
  const Where cw = w / "Categorical_Variables";
  if (Status s = json::expect_object(*cats, cw); !s.ok()) return s;
  for (const auto& [feature, values] : cats->items()) {
    const Where fw = cw / feature;
    if (Status s = json::expect_object(values, fw); !s.ok()) return s;
    Categorical cat{feature, {}};
    for (const auto& [value, entry] : values.items()) {
      const Where vw = fw / value;
      Result<const Json*> wj = json::member(entry, vw, "weight");
      if (!wj.ok()) return wj.status();
      Result<double> weight = json::finite_number(**wj, vw / "weight");
      if (!weight.ok()) return weight.status();
      cat.weights.emplace_back(value, *weight);
    }
    out.push_back(std::move(cat));
  }
  return out;
}

struct ParsedComponent {
  Component component;
  std::vector<Numerical> numerical;
};

Result<ParsedComponent> parse_component(std::string name, const Json& all, const Where& w) {
  if (Status s = json::expect_object(all, w); !s.ok()) return s;
  if (all.contains("CurveFit_Weights")) {
    return json::invalid(w / "CurveFit_Weights",
                         "curve-fit models (exponential, logarithmic, logistic) are not "
                         "supported yet");
  }
  ParsedComponent pc;
  pc.component.name = std::move(name);

  Result<const Json*> bj = json::member(all, w, "Bias_Weight");
  if (!bj.ok()) return bj.status();
  Result<double> bias = json::finite_number(**bj, w / "Bias_Weight");
  if (!bias.ok()) return bias.status();
  pc.component.bias = *bias;

  Result<std::vector<Categorical>> cats = parse_categorical(all, w);
  if (!cats.ok()) return cats.status();
  pc.component.categorical = std::move(*cats);

  Result<const Json*> nj = json::member(all, w, "Numerical_Variables");
  if (!nj.ok()) return nj.status();
  const Where nw = w / "Numerical_Variables";
  if (Status s = json::expect_object(**nj, nw); !s.ok()) return s;
  for (const auto& [feature, v] : (*nj)->items()) {
    Result<Numerical> n = parse_numerical(feature, v, nw / feature);
    if (!n.ok()) return n.status();
    pc.component.bias += n->bias_offset;
    pc.numerical.push_back(std::move(*n));
  }
  return pc;
}

bool contains(const std::vector<std::string>& v, std::string_view s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const std::string& s : v) {
    if (!out.empty()) out += ", ";
    out += s;
  }
  return out;
}

}  // namespace

bool is_weight_document(const Json& doc) {
  if (!doc.is_object()) return false;
  if (doc.contains("All_Weights")) return true;
  for (const auto& [key, v] : doc.items()) {
    if (all_weights(v) != nullptr) return true;
  }
  return false;
}

Result<std::unique_ptr<Model>> load_weight_model(ModelInfo info, const Json& doc,
                                                 std::string_view file) {
  const Where root{std::string(file), ""};
  if (Status s = json::expect_object(doc, root); !s.ok()) return s;

  if (info.name.empty()) {
    if (const Json* n = json::optional_member(doc, "model_name")) {
      Result<std::string> name = json::string_value(*n, root / "model_name");
      if (!name.ok()) return name.status();
      info.name = std::move(*name);
    }
  }

  std::vector<ParsedComponent> parsed;
  if (const Json* all = json::optional_member(doc, "All_Weights")) {
    Result<ParsedComponent> pc = parse_component("platform", *all, root / "All_Weights");
    if (!pc.ok()) return pc.status();
    parsed.push_back(std::move(*pc));
  } else {
    for (const auto& [key, v] : doc.items()) {
      if (key == "model_name") continue;
      const Where cw = root / key;
      Result<const Json*> all_j = json::member(v, cw, "All_Weights");
      if (!all_j.ok()) return all_j.status();
      std::string name = key == "pkg" ? std::string("package") : key;
      for (const ParsedComponent& p : parsed) {
        if (p.component.name == name) return json::invalid(cw, "component " + name + " twice");
      }
      Result<ParsedComponent> pc = parse_component(std::move(name), **all_j, cw / "All_Weights");
      if (!pc.ok()) return pc.status();
      parsed.push_back(std::move(*pc));
    }
  }
  if (parsed.empty()) return json::invalid(root, "no component with All_Weights");

  // The weight file is what the formula uses, so it decides the feature set;
  // metadata.json only orders it.
  std::vector<std::string> numerical_names;
  for (const ParsedComponent& p : parsed) {
    for (const Numerical& n : p.numerical) {
      if (!contains(numerical_names, n.feature)) numerical_names.push_back(n.feature);
    }
  }
  std::vector<std::string> features;
  for (const std::string& f : info.features) {
    if (contains(numerical_names, f) && !contains(features, f)) features.push_back(f);
  }
  bool same_set = features.size() == numerical_names.size();
  for (const std::string& f : info.features) same_set = same_set && contains(numerical_names, f);
  if (!info.features.empty() && !same_set) {
    spdlog::warn("{}: metadata.json lists features [{}] but the weights use [{}]; "
                 "the weights decide",
                 file, join(info.features), join(numerical_names));
  }
  for (const std::string& f : numerical_names) {
    if (!contains(features, f)) features.push_back(f);
  }
  info.features = std::move(features);

  std::vector<Component> components;
  info.components.clear();
  for (ParsedComponent& p : parsed) {
    for (const Numerical& n : p.numerical) {
      if (n.coefficient == 0) continue;
      const auto idx = static_cast<std::uint32_t>(
          std::find(info.features.begin(), info.features.end(), n.feature) -
          info.features.begin());
      p.component.terms.push_back(Term{idx, n.coefficient});
    }
    info.components.push_back(p.component.name);
    components.push_back(std::move(p.component));
  }
  // The class names the format evaluated, whatever the trainer's metadata called it.
  info.model_class = "weight";
  return std::unique_ptr<Model>(std::make_unique<WeightModel>(std::move(info),
                                                              std::move(components)));
}

}  // namespace estimator::models
