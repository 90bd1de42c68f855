// SPDX-License-Identifier: Apache-2.0
#include "service/cli/predict_command.h"

#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "models/json_fields.h"
#include "models/metadata.h"
#include "models/registry.h"
#include "models/weight_model.h"
#include "models/zip_archive.h"
#include "service/command_line.h"
#include "service/cli/csv.h"

namespace estimator::service {
namespace {

namespace fs = std::filesystem;

Result<std::string> slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return Status(Code::kNotFound, "cannot open " + p.string());
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The model as a folder: a directory's files, a zip's members, or one file with the
// metadata its name and the CSV's columns imply.
Result<models::ModelFolder> folder_of(const fs::path& path, const std::vector<std::string>& columns) {
  models::ModelFolder f;
  f.origin = path.string();
  if (fs::is_directory(path)) {
    auto scanned = models::Registry::scan_directory(path);
    if (!scanned.ok()) return scanned.status();
    if (scanned->size() != 1) {
      return Status(Code::kInvalidArgument, path.string() + " holds " + std::to_string(scanned->size()) +
                                                " models; name one folder or file");
    }
    return std::move(scanned->front());
  }
  auto bytes = slurp(path);
  if (!bytes.ok()) return bytes.status();
  if (path.extension() == ".zip") {
    auto members = models::read_zip(*bytes, path.string());
    if (!members.ok()) return members.status();
    f.files = std::move(members).value();
    return f;
  }
  const std::string name = path.filename().string();
  models::json::Json md = {{"model_name", path.stem().string()}, {"model_file", name}};
  const auto doc = models::json::parse(*bytes, name);
  if (doc.ok() && models::is_weight_document(*doc)) {
    md["model_class"] = "weight";
  } else {
    md["features"] = columns;  // a bare regressor takes the columns in order
  }
  f.files.emplace("metadata.json", md.dump());
  f.files.emplace(name, std::move(*bytes));
  return f;
}

// `names` become the component names of a model whose metadata.json lists none (one
// model file, whose outputs have no names of their own; models/registry.cpp), in output
// order. For any other model they only select columns.
Status name_outputs(models::ModelFolder& folder, const std::vector<std::string>& names) {
  const auto it = folder.files.find("metadata.json");
  if (it == folder.files.end()) return Status::Ok();  // load_model says what is missing
  auto md = models::json::parse(it->second, models::file_label(folder, "metadata.json"));
  if (!md.ok()) return md.status();
  if (!md->is_object() || md->contains("components")) return Status::Ok();
  (*md)["components"] = names;
  it->second = md->dump();
  return Status::Ok();
}

}  // namespace

int run_predict(const PredictOptions& o) {
  auto table = read_feature_csv_file(o.csv_path);
  Status read = table.status();
  if (read.ok()) read = add_system_values(*table, o.system_values);
  if (!read.ok()) {
    std::cerr << "estimator: " << o.csv_path << ": " << read.message() << "\n";
    return kExitUsage;
  }
  auto folder = folder_of(o.model_path, table->features);
  if (!folder.ok()) {
    std::cerr << "estimator: " << folder.status().to_string() << "\n";
    return kExitUsage;
  }
  if (!o.components.empty()) {
    if (Status s = name_outputs(*folder, o.components); !s.ok()) {
      std::cerr << "estimator: " << s.to_string() << "\n";
      return kExitUsage;
    }
  }
  // The model and the CSV are the user's input: a model that does not load, or that needs
  // columns the CSV lacks, is bad input (2); only evaluation failing is a runtime failure.
  auto model = models::load_model(*folder);
  if (!model.ok()) {
    std::cerr << "estimator: " << model.status().to_string() << "\n";
    return kExitUsage;
  }
  const models::Model& m = **model;
  std::vector<std::string_view> names(table->features.begin(), table->features.end());
  auto plan = m.plan(names);
  if (!plan.ok()) {
    std::cerr << "estimator: " << plan.status().to_string() << "\n";
    return kExitUsage;
  }
  std::vector<SystemValue> system;
  for (const auto& [k, v] : table->system_values) system.push_back({k, v});
  const auto ncomp = static_cast<Eigen::Index>(m.info().components.size());
  models::RowMatrixF out(static_cast<Eigen::Index>(table->rows), ncomp);
  const models::ModelInput input{
      models::ConstMatrixView(table->values.data(), static_cast<Eigen::Index>(table->rows),
                              static_cast<Eigen::Index>(names.size())),
      system, {}};
  if (Status s = m.predict(**plan, input, models::MatrixView(out.data(), out.rows(), out.cols())); !s.ok()) {
    std::cerr << "estimator: " << s.to_string() << "\n";
    return kExitFailure;
  }

  // Output columns: all components, or a selection by name.
  std::vector<std::string> header = m.info().components;
  std::vector<Eigen::Index> cols;
  for (Eigen::Index c = 0; c < ncomp; ++c) cols.push_back(c);
  if (!o.components.empty()) {
    cols.clear();
    for (const std::string& want : o.components) {
      const auto it = std::find(m.info().components.begin(), m.info().components.end(), want);
      if (it == m.info().components.end()) {
        std::cerr << "estimator: model " << m.info().name << " has no component " << want << "\n";
        return kExitUsage;
      }
      cols.push_back(it - m.info().components.begin());
    }
    header = o.components;
  }
  std::vector<float> selected;
  selected.reserve(table->rows * cols.size());
  for (Eigen::Index r = 0; r < out.rows(); ++r) {
    for (Eigen::Index c : cols) selected.push_back(out(r, c));
  }
  write_power_csv(std::cout, header, selected.data(), table->rows);
  std::cerr << "model: " << m.info().name << " (" << m.info().model_class << ") from " << m.info().origin
            << "\n";
  return kExitOk;
}

}  // namespace estimator::service
