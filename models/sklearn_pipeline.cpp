// SPDX-License-Identifier: Apache-2.0
// scikit-learn's Pipeline: transforms in order, then an optional last regressor.
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "models/sklearn_estimators.h"

namespace estimator::models::sklearn {

namespace {

using pickle::Object;
using pickle::Value;

// A Pipeline's transforms in order, then its last step's regressor. The transforms
// alternate between two of the regressor's scratch slots; the last step gets a nested
// Scratch, so that its own slots never meet them.
class StepsRegressor final : public Regressor {
 public:
  StepsRegressor(std::vector<std::unique_ptr<Transform>> transforms,
                 std::unique_ptr<Regressor> last)
      : transforms_(std::move(transforms)), last_(std::move(last)) {}

  Eigen::Index inputs() const override { return transforms_.front()->inputs(); }
  Eigen::Index outputs() const override { return last_->outputs(); }
  void predict(const ConstRowsD& in, RowsD out, Scratch& scratch) const override {
    const Eigen::Index rows = in.rows();
    std::size_t current = kRegressorSlots;
    transforms_.front()->apply(in, scratch.matrix(current, rows, transforms_.front()->outputs()));
    for (std::size_t i = 1; i < transforms_.size(); ++i) {
      const std::size_t next = current == kRegressorSlots ? kRegressorSlots + 1 : kRegressorSlots;
      transforms_[i]->apply(scratch.matrix(current, rows, transforms_[i - 1]->outputs()),
                            scratch.matrix(next, rows, transforms_[i]->outputs()));
      current = next;
    }
    last_->predict(scratch.matrix(current, rows, transforms_.back()->outputs()), out,
                   scratch.nested());
  }
  std::string describe() const override {
    std::string s = "Pipeline(";
    for (const auto& t : transforms_) s += t->describe() + " -> ";
    return s + last_->describe() + ")";
  }

 private:
  std::vector<std::unique_ptr<Transform>> transforms_;
  std::unique_ptr<Regressor> last_;
};

constexpr int kMaxPipelineDepth = 8;

}  // namespace

// steps [(name, estimator), ...] evaluated in order; None and "passthrough" steps are
// skipped; every other step is a supported transform, the last may be a regressor.
Result<SklearnStage> build_pipeline(const Attrs& a, int depth) {
  if (depth >= kMaxPipelineDepth)
    return refuse("Pipelines nested more than " + std::to_string(kMaxPipelineDepth) + " deep");
  SKLEARN_TRY(const Value* steps, a.need("steps"));
  if (steps->kind() != pickle::Kind::kList && steps->kind() != pickle::Kind::kTuple)
    return refuse("Pipeline.steps must be a list, got " + pickle::describe(*steps));
  std::vector<std::unique_ptr<Transform>> transforms;
  std::unique_ptr<Regressor> last;
  std::string last_name;
  for (const Value* step : pickle::items(*steps)) {
    const std::span<Value* const> pair = pickle::items(*step);
    const std::optional<std::string_view> name =
        pair.size() == 2 ? pickle::as_str(*pair[0]) : std::nullopt;
    if (!name) {
      return refuse("Pipeline.steps must hold (name, estimator) pairs, got " +
                    pickle::describe(*step));
    }
    const Value& estimator = *pair[1];
    const std::string where = "Pipeline step '" + std::string(*name) + "'";
    if (estimator.kind() == pickle::Kind::kNone || pickle::as_str(estimator) == "passthrough")
      continue;
    if (last) {
      return refuse(where + " follows the regressor of step '" + last_name +
                    "': only the last step may be a regressor");
    }
    if (estimator.as<Object>() == nullptr)
      return refuse(where + " is " + pickle::describe(estimator) + ", not an estimator");
    Result<SklearnStage> stage = convert_estimator(estimator, depth + 1);
    if (!stage.ok()) return Status(stage.status().code(), where + ": " + stage.status().message());
    if (auto* t = std::get_if<std::unique_ptr<Transform>>(&*stage)) {
      transforms.push_back(std::move(*t));
    } else {
      last = std::move(std::get<std::unique_ptr<Regressor>>(*stage));
      last_name = *name;
    }
  }
  if (!last) {
    if (transforms.size() == 1) return as_transform(std::move(transforms.front()));
    return refuse(transforms.empty() ? std::string("Pipeline has no step to evaluate")
                                     : "a Pipeline of transforms only is not supported (list "
                                       "them as fe_files instead)");
  }
  if (transforms.empty()) return as_regressor(std::move(last));
  for (std::size_t i = 0; i < transforms.size(); ++i) {
    const bool last_transform = i + 1 == transforms.size();
    const Eigen::Index width = transforms[i]->outputs();
    const bool fits = last_transform ? takes_width(*last, width)
                                     : transforms[i + 1]->inputs() == width;
    if (!fits) {
      return refuse("Pipeline: " + transforms[i]->describe() + " gives " +
                    std::to_string(width) + " columns but " +
                    (last_transform ? last->describe() : transforms[i + 1]->describe()) +
                    " takes " +
                    std::to_string(last_transform ? last->inputs() : transforms[i + 1]->inputs()));
    }
  }
  return as_regressor(
      std::make_unique<StepsRegressor>(std::move(transforms), std::move(last)));
}

}  // namespace estimator::models::sklearn
