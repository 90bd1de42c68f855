// SPDX-License-Identifier: Apache-2.0
#include "models/pipeline_model.h"

#include <algorithm>
#include <cmath>
#include <map>

namespace estimator::models {
namespace {

// Scratch slots of the pipeline (below kRegressorSlots): the gathered columns, two
// buffers the transforms alternate between, and the regressor's output.
constexpr std::size_t kGathered = 0;
constexpr std::size_t kTransformA = 1;
constexpr std::size_t kTransformB = 2;
constexpr std::size_t kOutput = 3;
static_assert(kOutput < kRegressorSlots);

struct ComponentPipeline {
  std::string component;
  std::vector<std::string> outputs;  // one component name per regressor output
  std::vector<std::string> features;
  std::vector<std::shared_ptr<const Transform>> transforms;  // shared between components
  std::shared_ptr<const Regressor> regressor;
};

class PipelinePlan final : public Plan {
 public:
  std::vector<std::vector<Eigen::Index>> columns;  // per component: request column per feature
  Eigen::Index request_columns = 0;
  // Plans are used by one thread at a time (each dispatch thread caches its own).
  mutable Scratch scratch;
};

class PipelineModel final : public Model {
 public:
  PipelineModel(ModelInfo info, std::vector<ComponentPipeline> components)
      : Model(std::move(info)), components_(std::move(components)) {}

  Result<std::unique_ptr<const Plan>> plan(
      std::span<const std::string_view> request_features) const override {
    if (std::string missing = missing_from(request_features); !missing.empty()) {
      return Status(Code::kMissingFeatures, "model " + info().name +
                                                " needs features missing from the request: " +
                                                missing);
    }
    auto p = std::make_unique<PipelinePlan>();
    p->request_columns = static_cast<Eigen::Index>(request_features.size());
    for (const ComponentPipeline& c : components_) {
      std::vector<Eigen::Index> cols;
      for (const std::string& f : c.features) {
        const auto it = std::find(request_features.begin(), request_features.end(), f);
        cols.push_back(static_cast<Eigen::Index>(it - request_features.begin()));
      }
      p->columns.push_back(std::move(cols));
    }
    return std::unique_ptr<const Plan>(std::move(p));
  }

  Status predict(const Plan& plan, const ModelInput& in, MatrixView out) const override {
    const auto* p = dynamic_cast<const PipelinePlan*>(&plan);
    if (Status s = check_predict_args(p, p ? p->request_columns : 0, in, out); !s.ok()) return s;
    const Eigen::Index rows = in.x.rows();
    Scratch& s = p->scratch;
    Eigen::Index first_column = 0;  // of this pipeline's outputs in `out`
    for (std::size_t c = 0; c < components_.size(); ++c) {
      const ComponentPipeline& comp = components_[c];
      const std::vector<Eigen::Index>& cols = p->columns[c];
      RowsD x = s.matrix(kGathered, rows, static_cast<Eigen::Index>(cols.size()));
      for (Eigen::Index r = 0; r < rows; ++r) {
        for (std::size_t j = 0; j < cols.size(); ++j) {
          x(r, static_cast<Eigen::Index>(j)) = static_cast<double>(in.x(r, cols[j]));
        }
      }
      // Transforms alternate between two buffers; the first reads the gathered columns.
      std::size_t next = kTransformA;
      std::size_t current = kGathered;
      Eigen::Index width = static_cast<Eigen::Index>(cols.size());
      for (const auto& t : comp.transforms) {
        RowsD src = s.matrix(current, rows, width);
        RowsD dst = s.matrix(next, rows, t->outputs());
        t->apply(src, dst);
        width = t->outputs();
        current = next;
        next = next == kTransformA ? kTransformB : kTransformA;
      }
      const auto k = static_cast<Eigen::Index>(comp.outputs.size());
      RowsD y = s.matrix(kOutput, rows, k);
      comp.regressor->predict(s.matrix(current, rows, width), y, s);
      for (Eigen::Index r = 0; r < rows; ++r) {
        for (Eigen::Index j = 0; j < k; ++j) {
          const double v = y(r, j);
          if (!std::isfinite(v)) {
            return Status(Code::kInvalidValue, "model " + info().name + " component " +
                                                   comp.outputs[static_cast<std::size_t>(j)] +
                                                   ": row " + std::to_string(r) +
                                                   " evaluates to a non-finite value");
          }
          out(r, first_column + j) = static_cast<float>(v > 0 ? v : 0.0);
        }
      }
      first_column += k;
    }
    return Status::Ok();
  }

 private:
  std::vector<ComponentPipeline> components_;
};

Status refuse(std::string_view origin, std::string_view file, const std::string& what) {
  return Status(Code::kInvalidArgument, std::string(origin) + ": " + std::string(file) + ": " + what);
}

}  // namespace

bool is_component_map(const json::Json& doc) {
  if (!doc.is_object() || doc.empty()) return false;
  for (const auto& [key, value] : doc.items()) {
    if (!value.is_object() || !value.contains("model_file")) return false;
  }
  return true;
}

Result<std::unique_ptr<Model>> load_pipeline_model(ModelInfo info, const json::Json& map,
                                                   std::string_view map_file,
                                                   const ModelFolder& folder,
                                                   const StageLoader& load) {
  std::map<std::string, Stage, std::less<>> loaded;  // file name -> stage, loaded once
  std::map<std::string, std::shared_ptr<const Transform>, std::less<>> transforms;
  auto stage_of = [&](const std::string& file) -> Result<Stage*> {
    if (auto it = loaded.find(file); it != loaded.end()) return &it->second;
    const auto f = folder.files.find(file);
    if (f == folder.files.end()) return refuse(folder.origin, map_file, "names missing file '" + file + "'");
    Result<Stage> s = load(file, f->second);
    if (!s.ok()) return s.status();
    return &loaded.emplace(file, std::move(s).value()).first->second;
  };

  std::vector<ComponentPipeline> components;
  std::vector<std::string> all_features;
  const json::Where where{std::string(map_file), ""};
  for (const auto& [component, entry] : map.items()) {
    const json::Where at = where / component;
    ComponentPipeline cp;
    cp.component = component == "pkg" ? "package" : component;
    auto model_file = json::member(entry, at, "model_file");
    if (!model_file.ok()) return model_file.status();
    auto file = json::string_value(**model_file, at / "model_file");
    if (!file.ok()) return file.status();
    if (const json::Json* f = json::optional_member(entry, "features")) {
      auto names = json::string_array(*f, at / "features");
      if (!names.ok()) return names.status();
      cp.features = std::move(names).value();
    } else {
      cp.features = info.features;
    }
    if (cp.features.empty()) return json::invalid(at / "features", "no features");
    if (const json::Json* fe = json::optional_member(entry, "fe_files")) {
      auto names = json::string_array(*fe, at / "fe_files");
      if (!names.ok()) return names.status();
      for (const std::string& name : *names) {
        if (auto it = transforms.find(name); it != transforms.end()) {
          cp.transforms.push_back(it->second);
          continue;
        }
        auto stage = stage_of(name);
        if (!stage.ok()) return stage.status();
        auto* t = std::get_if<std::unique_ptr<Transform>>(*stage);
        if (t == nullptr || *t == nullptr) {
          return refuse(folder.origin, name, "is a regressor where a feature transform was expected");
        }
        std::shared_ptr<const Transform> shared(std::move(*t));
        transforms.emplace(name, shared);
        cp.transforms.push_back(std::move(shared));
      }
    }
    auto stage = stage_of(*file);
    if (!stage.ok()) return stage.status();
    auto* r = std::get_if<std::unique_ptr<Regressor>>(*stage);
    if (r == nullptr || *r == nullptr) {
      return refuse(folder.origin, *file, "is not a regressor (or is used twice)");
    }
    cp.regressor = std::move(*r);
    if (const json::Json* names = json::optional_member(entry, "outputs")) {
      auto outputs = json::string_array(*names, at / "outputs");
      if (!outputs.ok()) return outputs.status();
      if (outputs->empty()) return json::invalid(at / "outputs", "no names");
      cp.outputs = std::move(outputs).value();
    } else {
      cp.outputs = {cp.component};
    }

    // Widths must chain: features -> transforms -> regressor, one output per name.
    Eigen::Index width = static_cast<Eigen::Index>(cp.features.size());
    for (const auto& t : cp.transforms) {
      if (t->inputs() != width) {
        return refuse(folder.origin, map_file, "component " + cp.component + ": " + t->describe() +
                                                   " takes " + std::to_string(t->inputs()) +
                                                   " inputs but receives " + std::to_string(width));
      }
      width = t->outputs();
    }
    const auto named = static_cast<Eigen::Index>(cp.outputs.size());
    if (!takes_width(*cp.regressor, width) || cp.regressor->outputs() != named) {
      return refuse(folder.origin, *file,
                    "component " + cp.component + ": " + cp.regressor->describe() + " takes " +
                        std::to_string(cp.regressor->inputs()) + " inputs (receives " +
                        std::to_string(width) + ") and gives " +
                        std::to_string(cp.regressor->outputs()) + " outputs for " +
                        std::to_string(named) + " component name(s)");
    }
    for (const std::string& f : cp.features) {
      if (std::find(all_features.begin(), all_features.end(), f) == all_features.end()) {
        all_features.push_back(f);
      }
    }
    components.push_back(std::move(cp));
  }
  if (components.empty()) return json::invalid(where, "no component");
  info.features = std::move(all_features);
  info.components.clear();
  for (const auto& c : components) {
    for (const std::string& name : c.outputs) {
      if (std::find(info.components.begin(), info.components.end(), name) != info.components.end()) {
        return json::invalid(where, "component " + name + " is named twice");
      }
      info.components.push_back(name);
    }
  }
  return std::unique_ptr<Model>(new PipelineModel(std::move(info), std::move(components)));
}

}  // namespace estimator::models
