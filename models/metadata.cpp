// SPDX-License-Identifier: Apache-2.0
#include "models/metadata.h"

#include <array>
#include <cmath>

#include "models/json_fields.h"

namespace estimator::models {

namespace {

using json::Json;
using json::Where;

constexpr std::array<std::string_view, 7> kKnownSources = {
    "rapl-sysfs", "intel_rapl", "rapl", "rapl-msr", "acpi", "redfish", "hmc"};

// Output-type folder names of every model-server generation; a path element is only
// taken as an output type when it is one of these, so a folder merely containing "Abs"
// in its name is not mistaken for one.
constexpr std::array<std::string_view, 8> kKnownOutputTypes = {
    "AbsPower",          "DynPower",          "AbsModelWeight",          "DynModelWeight",
    "AbsComponentPower", "DynComponentPower", "AbsComponentModelWeight", "DynComponentModelWeight"};

template <std::size_t N>
bool one_of(const std::array<std::string_view, N>& names, std::string_view s) {
  for (std::string_view n : names) {
    if (n == s) return true;
  }
  return false;
}

Result<std::string> optional_string(const Json& doc, const Where& where, std::string_view key) {
  const Json* v = json::optional_member(doc, key);
  if (v == nullptr) return std::string();
  return json::string_value(*v, where / key);
}

// An error figure: absent, null or negative (the model server writes -1) is unknown.
Result<double> error_figure(const Json& doc, const Where& where, std::string_view key) {
  const Json* v = json::optional_member(doc, key);
  if (v == nullptr) return kUnknown;
  Result<double> d = json::finite_number(*v, where / key);
  if (!d.ok()) return d.status();
  return *d < 0 ? kUnknown : *d;
}

// node_type is an integer index in kepler-model-db and a string in hand-written files.
Result<std::string> node_type(const Json& doc, const Where& where) {
  const Json* v = json::optional_member(doc, "node_type");
  if (v == nullptr) return std::string();
  if (v->is_number_integer()) return std::to_string(v->get<std::int64_t>());
  if (v->is_string()) return v->get<std::string>();
  return json::invalid(where / "node_type",
                       std::string("expected an integer or a string, got ") + v->type_name());
}

Result<double> machine_cores(const Json& doc, const Where& where) {
  const Json* spec = json::optional_member(doc, "machine_spec");
  if (spec == nullptr) return 0.0;
  if (Status s = json::expect_object(*spec, where / "machine_spec"); !s.ok()) return s;
  const Json* cores = json::optional_member(*spec, "cores");
  if (cores == nullptr) return 0.0;
  Result<double> d = json::finite_number(*cores, where / "machine_spec" / "cores");
  if (!d.ok()) return d.status();
  if (*d < 0) return json::invalid(where / "machine_spec" / "cores", "must not be negative");
  return *d;
}

}  // namespace

ModelKind kind_from_weight_file_name(std::string_view file_name) {
  std::string_view stem = file_name;
  if (!stem.ends_with(".json")) return {};
  stem.remove_suffix(5);
  if (!stem.ends_with("Model")) return {};
  stem.remove_suffix(5);
  // The output type never holds an underscore, so the last one ends the source.
  const std::size_t us = stem.rfind('_');
  if (us == std::string_view::npos) return {};
  const std::string_view source = stem.substr(0, us);
  const std::string_view output_type = stem.substr(us + 1);
  if (!one_of(kKnownSources, source) || !one_of(kKnownOutputTypes, output_type)) return {};
  return {canonical_source(source), canonical_output_type(output_type)};
}

std::string trainer_from_name(std::string_view model_name) {
  const std::size_t us = model_name.rfind('_');
  if (us == std::string_view::npos || us + 1 == model_name.size()) {
    return std::string(model_name);
  }
  for (std::size_t i = us + 1; i < model_name.size(); ++i) {
    if (model_name[i] < '0' || model_name[i] > '9') return std::string(model_name);
  }
  return std::string(model_name.substr(0, us));
}

std::string file_label(const ModelFolder& folder, std::string_view file) {
  std::string label = folder.origin;
  if (!label.empty() && label.back() != '/' && label.back() != ':') label += '/';
  label += file;
  return label;
}

Result<Metadata> parse_metadata(const ModelFolder& folder) {
  const auto it = folder.files.find("metadata.json");
  if (it == folder.files.end()) {
    return Status(Code::kNotFound, folder.origin + ": no metadata.json");
  }
  const Where where{file_label(folder, "metadata.json"), ""};
  Result<Json> parsed = json::parse(it->second, where.file);
  if (!parsed.ok()) return parsed.status();
  const Json& doc = *parsed;
  if (Status s = json::expect_object(doc, where); !s.ok()) return s;

  Metadata md;
  ModelInfo& info = md.info;
  info.origin = folder.origin;

  Result<std::string> name = optional_string(doc, where, "model_name");
  if (!name.ok()) return name.status();
  info.name = std::move(*name);

  Result<std::string> trainer = optional_string(doc, where, "trainer");
  if (!trainer.ok()) return trainer.status();
  info.trainer = trainer->empty() ? trainer_from_name(info.name) : std::move(*trainer);

  Result<std::string> model_class = optional_string(doc, where, "model_class");
  if (!model_class.ok()) return model_class.status();
  info.model_class = std::move(*model_class);

  Result<std::string> model_file = optional_string(doc, where, "model_file");
  if (!model_file.ok()) return model_file.status();
  md.model_file = std::move(*model_file);

  if (const Json* features = json::optional_member(doc, "features")) {
    Result<std::vector<std::string>> f = json::string_array(*features, where / "features");
    if (!f.ok()) return f.status();
    info.features = std::move(*f);
  }

  for (const std::string& hint : folder.path_hints) {
    if (one_of(kKnownOutputTypes, hint)) info.output_type = canonical_output_type(hint);
    if (one_of(kKnownSources, hint)) info.source = canonical_source(hint);
  }
  Result<std::string> output_type = optional_string(doc, where, "output_type");
  if (!output_type.ok()) return output_type.status();
  if (!output_type->empty()) info.output_type = canonical_output_type(*output_type);

  for (std::string_view key : {"source", "energy_source"}) {
    Result<std::string> source = optional_string(doc, where, key);
    if (!source.ok()) return source.status();
    if (!source->empty()) {
      info.source = canonical_source(*source);
      break;
    }
  }

  Result<double> mae = error_figure(doc, where, "mae");
  if (!mae.ok()) return mae.status();
  info.mae = *mae;
  Result<double> mape = error_figure(doc, where, "mape");
  if (!mape.ok()) return mape.status();
  info.mape = *mape;

  for (const auto& [key, value] : doc.items()) {
    if (!value.is_number()) continue;
    const double d = value.get<double>();
    if (std::isfinite(d) && d >= 0) info.figures.emplace(key, d);
  }

  Result<std::string> nt = node_type(doc, where);
  if (!nt.ok()) return nt.status();
  info.node_type = std::move(*nt);

  Result<double> cores = machine_cores(doc, where);
  if (!cores.ok()) return cores.status();
  info.machine_cores = *cores;

  return md;
}

}  // namespace estimator::models
