// SPDX-License-Identifier: Apache-2.0
#include "models/curve_fit.h"

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace estimator::models {
namespace {

constexpr std::array<std::string_view, 3> kPrefixes = {"trainer.", "train.trainer.",
                                                       "kepler_model.train.trainer."};

// A CurveFitModel: out = curve(in[:, column]).
class CurveFitRegressor final : public Regressor {
 public:
  CurveFitRegressor(const CurveTrainer& trainer, std::array<double, 4> parameters,
                    Eigen::Index column)
      : trainer_(trainer), parameters_(parameters), column_(column) {}

  Eigen::Index inputs() const override { return column_ + 1; }
  bool takes_wider_input() const override { return true; }
  void predict(const ConstRowsD& in, RowsD out, Scratch&) const override {
    for (Eigen::Index r = 0; r < in.rows(); ++r) {
      out(r, 0) = curve_value(trainer_.curve, parameters_, in(r, column_));
    }
  }
  std::string describe() const override {
    return "CurveFit(" + std::string(trainer_.formula) + ", x = column " +
           std::to_string(column_) + ")";
  }

 private:
  const CurveTrainer& trainer_;
  std::array<double, 4> parameters_;
  Eigen::Index column_;
};

Status refuse(std::string message) {
  return Status(Code::kInvalidArgument, "CurveFitModel" + std::move(message));
}

// The trainer whose curve function `g` is, or nullptr.
const CurveTrainer* trainer_of(const pickle::Global& g) {
  for (const CurveTrainer& t : kCurveTrainers) {
    if (g.name != t.function) continue;
    for (std::string_view prefix : kPrefixes) {
      if (g.module == std::string(prefix) + std::string(t.trainer) + ".main") return &t;
    }
  }
  return nullptr;
}

}  // namespace

const CurveTrainer* curve_trainer(std::string_view trainer) {
  for (const CurveTrainer& c : kCurveTrainers) {
    if (c.trainer == trainer) return &c;
  }
  return nullptr;
}

std::span<const pickle::ClassName> curve_fit_classes() {
  // ClassName holds views: the spelled-out names live as long as the program.
  struct Names {
    std::vector<std::string> text;
    std::vector<pickle::ClassName> names;
    Names() {
      std::vector<std::pair<std::string, std::string>> pairs;
      for (std::string_view prefix : kPrefixes) {
        pairs.emplace_back(std::string(prefix) + "curvefit", "CurveFitModel");
        for (const CurveTrainer& t : kCurveTrainers) {
          const std::string module = std::string(prefix) + std::string(t.trainer) + ".main";
          pairs.emplace_back(module, std::string(t.function));
          pairs.emplace_back(module, "p0_func");
        }
      }
      text.reserve(2 * pairs.size());  // no reallocation: the views below stay valid
      for (auto& [module, name] : pairs) {
        const std::string& m = text.emplace_back(std::move(module));
        const std::string& n = text.emplace_back(std::move(name));
        names.push_back(pickle::ClassName{m, n});
      }
    }
  };
  static const Names kNames;
  return kNames.names;
}

Result<std::unique_ptr<Regressor>> load_curve_fit(const pickle::Object& model) {
  const pickle::Value* f = model.attr("fit_func");
  if (f == nullptr) return refuse(" has no fit_func");
  const pickle::Global* g = f->as<pickle::Global>();
  if (g == nullptr) return refuse(".fit_func is " + pickle::describe(*f) + ", not a function");
  const CurveTrainer* t = trainer_of(*g);
  if (t == nullptr) {
    return refuse(".fit_func " + g->qualified() +
                  " is not a curve of Kepler's curve-fit trainers (expo_func, log_func, "
                  "logi_func of <Trainer>.main)");
  }

  const pickle::Value* popt = model.attr("popt");
  const pickle::Array* a = popt == nullptr ? nullptr : popt->as<pickle::Array>();
  if (a == nullptr || !a->built) {
    return refuse(".popt must be a numpy array (is it fitted?), got " +
                  (popt == nullptr ? std::string("nothing") : pickle::describe(*popt)));
  }
  Result<std::vector<double>> values = pickle::array_doubles(*a, "CurveFitModel.popt");
  if (!values.ok()) return values.status();
  if (a->shape.size() != 1 || values->size() != t->parameters) {
    return refuse(".popt of " + g->qualified() + " (" + std::string(t->formula) + ") needs " +
                  std::to_string(t->parameters) + " parameters, got " + pickle::describe(*popt));
  }
  std::array<double, 4> parameters{};
  for (std::size_t i = 0; i < values->size(); ++i) {
    if (!std::isfinite((*values)[i]))
      return refuse(".popt[" + std::to_string(i) + "] is not finite");
    parameters[i] = (*values)[i];
  }

  const pickle::Value* fi = model.attr("feature_index");
  const std::optional<std::int64_t> column = fi == nullptr ? std::nullopt : pickle::as_int(*fi);
  if (!column || *column < 0 || *column >= (1 << 20)) {
    return refuse(".feature_index must be a column index, got " +
                  (fi == nullptr ? std::string("nothing") : pickle::describe(*fi)));
  }
  return std::unique_ptr<Regressor>(
      std::make_unique<CurveFitRegressor>(*t, parameters, static_cast<Eigen::Index>(*column)));
}

}  // namespace estimator::models
