// SPDX-License-Identifier: Apache-2.0
#include "service/cli/validate_command.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>

#include "service/cli/model_source.h"
#include "service/cli/validate_plot.h"
#include "service/command_line.h"

namespace estimator::service {
namespace {

std::string figure(double v) {
  if (std::isnan(v)) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

std::string csv_number(double v) {
  if (std::isnan(v)) return "";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

std::string csv_text(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

bool is_default_measured(std::string_view name) {
  return std::find(std::begin(kMeasuredColumns), std::end(kMeasuredColumns), name) !=
         std::end(kMeasuredColumns);
}

// Evaluates `m` on every row; the predictions, rows x components.
Result<models::RowMatrixF> predict_all(const models::Model& m, const FeatureTable& t) {
  std::vector<std::string_view> names(t.features.begin(), t.features.end());
  auto plan = m.plan(names);
  if (!plan.ok()) return plan.status();
  std::vector<SystemValue> system;
  for (const auto& [k, v] : t.system_values) system.push_back({k, v});
  const auto rows = static_cast<Eigen::Index>(t.rows);
  models::RowMatrixF out(rows, static_cast<Eigen::Index>(m.info().components.size()));
  const models::ModelInput in{
      models::ConstMatrixView(t.values.data(), rows, static_cast<Eigen::Index>(names.size())),
      system, {}};
  if (Status s = m.predict(**plan, in, models::MatrixView(out.data(), out.rows(), out.cols())); !s.ok()) {
    return s;
  }
  return out;
}

ComponentError errors_of(std::string component, std::vector<double> predicted,
                         const std::vector<double>& measured) {
  ComponentError e{std::move(component), 0, 0, 0, std::move(predicted)};
  double pct = 0;
  std::size_t pct_rows = 0;
  for (std::size_t r = 0; r < measured.size(); ++r) {
    const double err = std::abs(e.predicted[r] - measured[r]);
    e.mae += err;
    e.max_error = std::max(e.max_error, err);
    if (measured[r] > 0) {
      pct += err / measured[r];
      ++pct_rows;
    }
  }
  if (!measured.empty()) e.mae /= static_cast<double>(measured.size());
  e.mape = pct_rows == 0 ? NAN : 100.0 * pct / static_cast<double>(pct_rows);
  return e;
}

Status write_table(const std::string& path, const Validation& v) {
  std::ofstream f(path);
  if (!f) return Status(Code::kPermissionDenied, "cannot write " + path);
  f << "rank,model,trainer,source,output_type,component,mae,mape_percent,max_error,"
       "published_mae,published_mape,origin\n";
  for (std::size_t i = 0; i < v.ranked.size(); ++i) {
    const ModelScore& s = v.ranked[i];
    const models::ModelInfo& m = s.model->info();
    for (const ComponentError& e : s.components) {
      f << i + 1 << ',' << csv_text(m.name) << ',' << csv_text(m.trainer) << ','
        << csv_text(m.source) << ',' << csv_text(m.output_type) << ',' << csv_text(e.component)
        << ',' << csv_number(e.mae) << ',' << csv_number(e.mape) << ',' << csv_number(e.max_error)
        << ',' << csv_number(m.mae) << ',' << csv_number(m.mape) << ',' << csv_text(m.origin)
        << '\n';
    }
  }
  f.flush();
  if (!f) return Status(Code::kPermissionDenied, "cannot write " + path);
  return Status::Ok();
}

Status write_plot(const std::string& path, const Validation& v, const MeasuredTable& t) {
  const std::size_t best = std::min<std::size_t>(v.ranked.size(), std::size(kPlotColours));
  std::vector<PlotPanel> panels;
  for (std::size_t c = 0; c < t.components.size(); ++c) {
    PlotPanel p{t.components[c], t.watts[c], {}};
    bool any = false;
    for (std::size_t i = 0; i < best; ++i) {
      PlotSeries s{v.ranked[i].model->info().name, {}};
      for (const ComponentError& e : v.ranked[i].components) {
        if (e.component == t.components[c]) s.values = e.predicted;
      }
      any = any || !s.values.empty();
      p.predicted.push_back(std::move(s));
    }
    if (any) panels.push_back(std::move(p));
  }
  auto png = plot_png(panels);
  if (!png.ok()) return png.status();
  std::ofstream f(path, std::ios::binary);
  f << *png;
  f.flush();
  if (!f) return Status(Code::kPermissionDenied, "cannot write " + path);
  return Status::Ok();
}

}  // namespace

Result<MeasuredTable> split_measured(FeatureTable table, const std::vector<std::string>& measured) {
  for (const std::string& name : measured) {
    if (std::find(table.features.begin(), table.features.end(), name) == table.features.end()) {
      return Status(Code::kInvalidArgument, "measured column '" + name + "' is not in the CSV");
    }
  }
  std::vector<bool> is_measured(table.features.size());
  MeasuredTable out;
  for (std::size_t c = 0; c < table.features.size(); ++c) {
    const std::string& name = table.features[c];
    is_measured[c] = measured.empty()
                         ? is_default_measured(name)
                         : std::find(measured.begin(), measured.end(), name) != measured.end();
    if (is_measured[c]) out.components.push_back(name);
  }
  if (out.components.empty()) {
    std::string known;
    for (std::string_view k : kMeasuredColumns) known += (known.empty() ? "" : ", ") + std::string(k);
    return Status(Code::kInvalidArgument,
                  "no measured power column (none is named " + known + "; name them with --measured)");
  }
  const std::size_t cols = table.features.size();
  out.watts.assign(out.components.size(), std::vector<double>(table.rows));
  FeatureTable& f = out.features;
  f.rows = table.rows;
  f.system_values = std::move(table.system_values);
  for (std::size_t c = 0; c < cols; ++c) {
    if (!is_measured[c]) f.features.push_back(table.features[c]);
  }
  f.values.reserve(table.rows * f.features.size());
  for (std::size_t r = 0; r < table.rows; ++r) {
    std::size_t k = 0;
    for (std::size_t c = 0; c < cols; ++c) {
      const float v = table.values[r * cols + c];
      if (is_measured[c]) {
        out.watts[k++][r] = v;
      } else {
        f.values.push_back(v);
      }
    }
  }
  return out;
}

Result<Validation> validate_models(const models::Registry& registry, const MeasuredTable& table,
                                   std::string_view output_type, std::string_view source) {
  const std::string want_type = output_type.empty() ? std::string() : models::canonical_output_type(output_type);
  const std::string want_source = source.empty() ? std::string() : models::canonical_source(source);
  std::vector<std::string_view> names(table.features.features.begin(), table.features.features.end());
  Validation v;
  for (const std::unique_ptr<models::Model>& m : registry.models()) {
    const models::ModelInfo& i = m->info();
    if ((!want_type.empty() && i.output_type != want_type) ||
        (!want_source.empty() && i.source != want_source)) {
      continue;  // another kind: not a candidate, not worth listing
    }
    if (i.needs_node_power) {
      // It splits the measurement it would be judged against.
      v.skipped.push_back({m.get(), "divides measured node power: not judged against it"});
      continue;
    }
    if (std::string missing = m->missing_from(names); !missing.empty()) {
      v.skipped.push_back({m.get(), "needs features the CSV lacks: " + missing});
      continue;
    }
    ModelScore s{m.get(), {}, 0};
    const bool measures_any = std::any_of(i.components.begin(), i.components.end(), [&](const std::string& c) {
      return std::find(table.components.begin(), table.components.end(), c) != table.components.end();
    });
    if (!measures_any) {
      std::string comps;
      for (const std::string& c : i.components) comps += (comps.empty() ? "" : ", ") + c;
      v.skipped.push_back({m.get(), "predicts no measured component (it predicts " + comps + ")"});
      continue;
    }
    auto predicted = predict_all(*m, table.features);
    if (!predicted.ok()) {
      return Status(Code::kInternal, "model " + i.name + " from " + i.origin + ": " +
                                         predicted.status().message());
    }
    for (std::size_t c = 0; c < table.components.size(); ++c) {
      const auto it = std::find(i.components.begin(), i.components.end(), table.components[c]);
      if (it == i.components.end()) continue;
      const auto col = static_cast<Eigen::Index>(it - i.components.begin());
      std::vector<double> p(table.features.rows);
      for (std::size_t r = 0; r < p.size(); ++r) p[r] = (*predicted)(static_cast<Eigen::Index>(r), col);
      s.components.push_back(errors_of(table.components[c], std::move(p), table.watts[c]));
      s.score += s.components.back().mae;
    }
    s.score /= static_cast<double>(s.components.size());
    v.ranked.push_back(std::move(s));
  }
  std::sort(v.ranked.begin(), v.ranked.end(), [](const ModelScore& a, const ModelScore& b) {
    if (a.score != b.score) return a.score < b.score;
    if (a.model->info().name != b.model->info().name) return a.model->info().name < b.model->info().name;
    return a.model->info().origin < b.model->info().origin;
  });
  return v;
}

int run_validate(const ValidateOptions& o, std::FILE* out) {
  auto table = read_feature_csv_file(o.csv_path);
  Status read = table.status();
  if (read.ok()) read = add_system_values(*table, o.system_values);
  Result<MeasuredTable> measured = read;
  if (read.ok()) measured = split_measured(std::move(*table), o.measured);
  if (!measured.ok()) {
    std::fprintf(stderr, "estimator: %s: %s\n", o.csv_path.c_str(), measured.status().message().c_str());
    return kExitUsage;
  }
  if (measured->features.rows == 0) {
    std::fprintf(stderr, "estimator: %s: no rows\n", o.csv_path.c_str());
    return kExitUsage;
  }
  const auto registry = load_registry(o.model_dir);
  if (registry == nullptr) return kExitUsage;
  auto v = validate_models(*registry, *measured, o.output_type, o.source);
  if (!v.ok()) {
    std::fprintf(stderr, "estimator: %s\n", v.status().to_string().c_str());
    return kExitFailure;
  }
  std::string comps;
  for (const std::string& c : measured->components) comps += (comps.empty() ? "" : ", ") + c;
  std::fprintf(out, "%zu row(s); measured: %s; %zu model(s) evaluated, ranked by mean MAE:\n",
               measured->features.rows, comps.c_str(), v->ranked.size());
  std::fprintf(out, "  %4s %-36s %-10s %10s %10s %10s %13s\n", "rank", "model", "component", "mae",
               "mape_%", "max_error", "published_mae");
  for (std::size_t i = 0; i < v->ranked.size(); ++i) {
    const ModelScore& s = v->ranked[i];
    const models::ModelInfo& m = s.model->info();
    for (const ComponentError& e : s.components) {
      std::fprintf(out, "  %4zu %-36s %-10s %10s %10s %10s %13s\n", i + 1, m.name.c_str(),
                   e.component.c_str(), figure(e.mae).c_str(), figure(e.mape).c_str(),
                   figure(e.max_error).c_str(), figure(m.mae).c_str());
    }
  }
  for (const SkippedModel& s : v->skipped) {
    std::fprintf(out, "  skipped %s (from %s): %s\n", s.model->info().name.c_str(),
                 s.model->info().origin.c_str(), s.reason.c_str());
  }
  if (v->ranked.empty()) {
    std::fprintf(stderr, "estimator: no model of %s%s%s fits the CSV's features and measured columns\n",
                 o.output_type.empty() ? "any output type" : o.output_type.c_str(),
                 o.source.empty() ? "" : " and source ", o.source.c_str());
    return kExitUsage;
  }
  if (!o.table_path.empty()) {
    if (Status s = write_table(o.table_path, *v); !s.ok()) {
      std::fprintf(stderr, "estimator: %s\n", s.message().c_str());
      return kExitFailure;
    }
  }
  if (!o.plot_path.empty()) {
    if (Status s = write_plot(o.plot_path, *v, *measured); !s.ok()) {
      std::fprintf(stderr, "estimator: %s\n", s.message().c_str());
      return kExitFailure;
    }
  }
  return kExitOk;
}

}  // namespace estimator::service
