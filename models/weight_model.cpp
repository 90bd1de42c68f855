// SPDX-License-Identifier: Apache-2.0
#include "models/weight_model.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "common/text.h"
#include "models/curve_fit.h"
#include "models/metadata.h"

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
  double bias = 0;  // Bias_Weight minus the folded mean terms; 0 for a curve
  std::vector<Term> terms;  // empty for a curve
  std::vector<Categorical> categorical;
  // Curve fits use only the model's first feature (in ModelInfo::features order):
  // power = categorical sum + curve(x[curve_feature] / curve_scale).
  Curve curve = Curve::kNone;
  std::uint32_t curve_feature = 0;
  double curve_scale = 1;
  std::array<double, 4> curve_weights{};
};

// A term with its request column resolved, so evaluation is a walk over plain pairs.
struct PlanTerm {
  Eigen::Index column;
  double coefficient;
};

class WeightPlan final : public Plan {
 public:
  std::vector<Eigen::Index> columns;  // request column of each model feature
  std::vector<std::vector<PlanTerm>> terms;  // per component; zero coefficients dropped
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
    for (const Component& comp : components_) {
      std::vector<PlanTerm> terms;
      for (const Term& t : comp.terms) {
        if (t.coefficient != 0) terms.push_back({columns[t.feature], t.coefficient});
      }
      p->terms.push_back(std::move(terms));
    }
    p->columns = std::move(columns);
    p->request_columns = static_cast<Eigen::Index>(request_features.size());
    return std::unique_ptr<const Plan>(std::move(p));
  }

  Status predict(const Plan& plan, const ModelInput& in, MatrixView out) const override {
    const auto* p = dynamic_cast<const WeightPlan*>(&plan);
    if (Status s = check_predict_args(p, p ? p->request_columns : 0, in, out); !s.ok()) return s;
    for (std::size_t c = 0; c < components_.size(); ++c) {
      const Component& comp = components_[c];
      const double base = comp.bias + categorical_sum(comp, in.system_values);
      const auto col = static_cast<Eigen::Index>(c);
      if (comp.curve != Curve::kNone) {
        const Eigen::Index xcol = p->columns[comp.curve_feature];
        for (Eigen::Index r = 0; r < in.x.rows(); ++r) {
          const double x = static_cast<double>(in.x(r, xcol)) / comp.curve_scale;
          const double power = base + curve_value(comp.curve, comp.curve_weights, x);
          if (!std::isfinite(power)) return not_finite(comp, *p, in, r);
          out(r, col) = static_cast<float>(power > 0 ? power : 0.0);
        }
        continue;
      }
      // Raw pointers, term after term over blocks of rows: this loop is most of a linear
      // model's cost per request, and a row-at-a-time walk chains every multiply-add of
      // a row through one accumulator, where across rows they are independent. Each
      // row still adds its terms in the model's order, so the sums are the same.
      const std::vector<PlanTerm>& terms = p->terms[c];
      const float* x = in.x.data();
      const Eigen::Index x_stride = in.x.outerStride();
      float* o = out.data() + col;
      const Eigen::Index o_stride = out.outerStride();
      constexpr Eigen::Index kBlock = 64;
      double power[kBlock];
      double clamped[kBlock];
      for (Eigen::Index r0 = 0; r0 < in.x.rows(); r0 += kBlock) {
        const Eigen::Index n = std::min(kBlock, in.x.rows() - r0);
        for (Eigen::Index i = 0; i < n; ++i) power[i] = base;
        for (const PlanTerm& t : terms) {
          const float* xc = x + r0 * x_stride + t.column;
          for (Eigen::Index i = 0; i < n; ++i) {
            power[i] += t.coefficient * static_cast<double>(xc[i * x_stride]);
          }
        }
        // No branch per row: where the model's sign varies from row to row, a clamp by
        // branch mispredicts; and in two passes the first, over contiguous doubles,
        // vectorises (estimator-stages RingDaemonHandle/rows:100, three alternating runs:
        // 911-968 ns against 951-1036 ns with a branch per row). A power that is not
        // finite fails the whole request, so it is looked for only once the block is
        // written (the reply is then an error): an all-ones exponent (inf or NaN) plus one
        // exponent step carries into bit 63, which no finite value does.
        std::uint64_t exponent_carry = 0;
        for (Eigen::Index i = 0; i < n; ++i) {
          const double v = power[i];
          exponent_carry |= (std::bit_cast<std::uint64_t>(v) & 0x7FF0000000000000ULL) +
                            0x0010000000000000ULL;
          clamped[i] = v > 0 ? v : 0.0;
        }
        for (Eigen::Index i = 0; i < n; ++i) o[(r0 + i) * o_stride] = static_cast<float>(clamped[i]);
        if ((exponent_carry >> 63) != 0) {
          for (Eigen::Index i = 0; i < n; ++i) {
            if (!std::isfinite(power[i])) return not_finite(comp, *p, in, r0 + i);
          }
        }
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
    auto check = [&](std::uint32_t feature) {
      if (std::isfinite(in.x(row, p.columns[feature]))) return Status::Ok();
      return Status(Code::kInvalidValue, "row " + std::to_string(row) + " feature " +
                                             info().features[feature] +
                                             " is not a finite number");
    };
    for (const Term& t : comp.terms) {
      if (Status s = check(t.feature); !s.ok()) return s;
    }
    if (comp.curve != Curve::kNone) {
      if (Status s = check(comp.curve_feature); !s.ok()) return s;
      return Status(Code::kInvalidValue,
                    "model " + info().name + " component " + comp.name +
                        ": the curve is not a finite number on row " + std::to_string(row) +
                        " (" + info().features[comp.curve_feature] + " = " +
                        std::to_string(in.x(row, p.columns[comp.curve_feature])) + ")");
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
  double scale = 0;  // curve fits: the divisor of the feature
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
  Where where;  // of All_Weights
};

// What both kinds of component hold: the categorical variables, parsed into `pc`, and the
// "Numerical_Variables" object, returned for the caller to read as its kind needs.
Result<const Json*> parse_variables(const Json& all, const Where& w, ParsedComponent& pc) {
  Result<std::vector<Categorical>> cats = parse_categorical(all, w);
  if (!cats.ok()) return cats.status();
  pc.component.categorical = std::move(*cats);
  Result<const Json*> nj = json::member(all, w, "Numerical_Variables");
  if (!nj.ok()) return nj.status();
  if (Status s = json::expect_object(**nj, w / "Numerical_Variables"); !s.ok()) return s;
  return nj;
}

// Which curve a curve-fit file uses is not in the file's weights: Kepler's model server
// names it only through the trainer (metadata.json "trainer" or "model_name", or the
// weight file's own "model_name", e.g. ExponentialRegressionTrainer_0).
struct CurveChoice {
  const CurveTrainer* trainer = nullptr;
  std::string problem;  // why there is none, for the message
};

CurveChoice choose_curve(const ModelInfo& info, const Json& doc) {
  std::vector<std::pair<std::string, std::string>> named;  // (who says, trainer)
  named.emplace_back("trainer", info.trainer);
  named.emplace_back("model_name", trainer_from_name(info.name));
  if (const Json* n = json::optional_member(doc, "model_name"); n != nullptr && n->is_string()) {
    named.emplace_back("the weight file's model_name", trainer_from_name(n->get<std::string>()));
  }
  CurveChoice choice;
  std::string chosen_by;
  for (const auto& [who, trainer] : named) {
    const CurveTrainer* c = curve_trainer(trainer);
    if (c == nullptr) continue;
    if (choice.trainer != nullptr && choice.trainer != c) {
      return CurveChoice{nullptr, "the curve is ambiguous: " + chosen_by + " names " +
                                      std::string(choice.trainer->trainer) + " but " + who +
                                      " names " + trainer};
    }
    choice.trainer = c;
    chosen_by = who;
  }
  if (choice.trainer == nullptr) {
    std::string problem = "curve-fit weights need the trainer to choose the curve "
                          "(ExponentialRegressionTrainer, LogarithmicRegressionTrainer or "
                          "LogisticRegressionTrainer); trainer \"" + info.trainer + "\"";
    if (!info.name.empty()) problem += " (model " + info.name + ")";
    problem += " is none of them";
    choice.problem = std::move(problem);
  }
  return choice;
}

// A curve-fit component: {"Categorical_Variables": {...}, "Numerical_Variables":
// {feature: {"scale": s}}, "CurveFit_Weights": [...]}. There is no bias.
Result<ParsedComponent> parse_curve_component(std::string name, const Json& all, const Where& w,
                                              const CurveChoice& choice) {
  const Where cw = w / "CurveFit_Weights";
  if (choice.trainer == nullptr) return json::invalid(cw, choice.problem);
  const CurveTrainer& ct = *choice.trainer;
  ParsedComponent pc;
  pc.where = w;
  pc.component.name = std::move(name);
  pc.component.curve = ct.curve;

  const Json& weights = *all.find("CurveFit_Weights");
  if (!weights.is_array() || weights.size() != ct.parameters) {
    std::string got = weights.is_array() ? std::to_string(weights.size()) + " numbers"
                                         : std::string(weights.type_name());
    return json::invalid(cw, std::string(ct.trainer) + " (" + std::string(ct.formula) +
                                 ") needs an array of " + std::to_string(ct.parameters) +
                                 " weights, got " + got);
  }
  for (std::size_t i = 0; i < ct.parameters; ++i) {
    Result<double> v = json::finite_number(weights[i], cw / ("[" + std::to_string(i) + "]"));
    if (!v.ok()) return v.status();
    pc.component.curve_weights[i] = *v;
  }

  Result<const Json*> nj = parse_variables(all, w, pc);
  if (!nj.ok()) return nj.status();
  const Where nw = w / "Numerical_Variables";
  if ((*nj)->empty()) return json::invalid(nw, "a curve fit needs at least one feature");
  for (const auto& [feature, v] : (*nj)->items()) {
    const Where fw = nw / feature;
    Result<const Json*> sj = json::member(v, fw, "scale");
    if (!sj.ok()) return sj.status();
    Result<double> scale = json::finite_number(**sj, fw / "scale");
    if (!scale.ok()) return scale.status();
    pc.numerical.push_back(Numerical{feature, 0, 0, *scale});
  }
  return pc;
}

Result<ParsedComponent> parse_component(std::string name, const Json& all, const Where& w,
                                        const CurveChoice& curve) {
  if (Status s = json::expect_object(all, w); !s.ok()) return s;
  if (all.contains("CurveFit_Weights")) {
    return parse_curve_component(std::move(name), all, w, curve);
  }
  ParsedComponent pc;
  pc.where = w;
  pc.component.name = std::move(name);

  Result<const Json*> bj = json::member(all, w, "Bias_Weight");
  if (!bj.ok()) return bj.status();
  Result<double> bias = json::finite_number(**bj, w / "Bias_Weight");
  if (!bias.ok()) return bias.status();
  pc.component.bias = *bias;

  Result<const Json*> nj = parse_variables(all, w, pc);
  if (!nj.ok()) return nj.status();
  const Where nw = w / "Numerical_Variables";
  for (const auto& [feature, v] : (*nj)->items()) {
    Result<Numerical> n = parse_numerical(feature, v, nw / feature);
    if (!n.ok()) return n.status();
    pc.component.bias += n->bias_offset;
    pc.numerical.push_back(std::move(*n));
  }
  return pc;
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

  const CurveChoice curve = choose_curve(info, doc);
  std::vector<ParsedComponent> parsed;
  if (const Json* all = json::optional_member(doc, "All_Weights")) {
    Result<ParsedComponent> pc = parse_component("platform", *all, root / "All_Weights", curve);
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
      Result<ParsedComponent> pc =
          parse_component(std::move(name), **all_j, cw / "All_Weights", curve);
      if (!pc.ok()) return pc.status();
      parsed.push_back(std::move(*pc));
    }
  }
  if (parsed.empty()) return json::invalid(root, "no component with All_Weights");

  // The weight file is what the formula uses, so it decides the feature set;
  // metadata.json only orders it.
  // Sets, not searches of the lists: a hostile file may name hundreds of thousands.
  std::vector<std::string> numerical_names;
  std::unordered_set<std::string> numerical_set;
  for (const ParsedComponent& p : parsed) {
    for (const Numerical& n : p.numerical) {
      if (numerical_set.insert(n.feature).second) numerical_names.push_back(n.feature);
    }
  }
  std::vector<std::string> features;
  std::unordered_map<std::string, std::uint32_t> feature_at;  // index into `features`
  const auto add_feature = [&](const std::string& f) {
    if (feature_at.emplace(f, static_cast<std::uint32_t>(features.size())).second) {
      features.push_back(f);
    }
  };
  for (const std::string& f : info.features) {
    if (numerical_set.contains(f)) add_feature(f);
  }
  bool same_set = features.size() == numerical_names.size();
  for (const std::string& f : info.features) same_set = same_set && numerical_set.contains(f);
  if (!info.features.empty() && !same_set) {
    spdlog::warn("{}: metadata.json lists features [{}] but the weights use [{}]; "
                 "the weights decide",
                 file, join(std::span<const std::string>(info.features), ", "),
                 join(std::span<const std::string>(numerical_names), ", "));
  }
  for (const std::string& f : numerical_names) add_feature(f);
  info.features = std::move(features);
  auto feature_index = [&feature_at](const std::string& feature) {
    return feature_at.find(feature)->second;  // every numerical feature is in it
  };
  std::vector<Component> components;
  info.components.clear();
  bool any_curve = false;
  for (ParsedComponent& p : parsed) {
    if (p.component.curve != Curve::kNone) {
      // "The first feature" is the model's first: metadata.json's order when it lists
      // the features (the order the trainer's columns had), else the file's.
      const Numerical* first = nullptr;
      for (const Numerical& n : p.numerical) {
        if (first == nullptr || feature_index(n.feature) < feature_index(first->feature)) {
          first = &n;
        }
      }
      if (first->scale == 0) {
        return json::invalid(p.where / "Numerical_Variables" / first->feature / "scale",
                             "must not be 0: the curve's x is this feature divided by it");
      }
      p.component.curve_feature = feature_index(first->feature);
      p.component.curve_scale = first->scale;
      any_curve = true;
    }
    for (const Numerical& n : p.numerical) {
      if (n.coefficient == 0) continue;
      p.component.terms.push_back(Term{feature_index(n.feature), n.coefficient});
    }
    info.components.push_back(p.component.name);
    components.push_back(std::move(p.component));
  }
  // The class names the format evaluated, whatever the trainer's metadata called it.
  info.model_class = any_curve ? "curvefit" : "weight";
  return std::unique_ptr<Model>(std::make_unique<WeightModel>(std::move(info),
                                                              std::move(components)));
}

}  // namespace estimator::models
