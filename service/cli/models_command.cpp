// SPDX-License-Identifier: Apache-2.0
#include "service/cli/models_command.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <tuple>

#include "common/text.h"
#include "models/registry.h"
#include "service/cli/model_source.h"
#include "service/command_line.h"

namespace estimator::service {
namespace {

// Comma-separated with no spaces, so that a listing line stays one token per column.
std::string commas(std::span<const std::string> v) { return join(v, ","); }

std::string figure(double v) {
  if (std::isnan(v)) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

using ModelKey = std::tuple<std::string, std::string, std::string>;  // name, source, output type

// The measured figures of one model in a scrape: the mean over its components.
struct Measured {
  double mae_sum = 0, mape_sum = 0;
  int mae_n = 0, mape_n = 0;
  double intervals = NAN;
  double mae() const { return mae_n == 0 ? NAN : mae_sum / mae_n; }
  double mape() const { return mape_n == 0 ? NAN : mape_sum / mape_n; }
};

// The labels of a sample line `name{k="v",...} value`, unescaped; false when malformed.
bool parse_sample(const std::string& line, std::map<std::string, std::string>& labels,
                  double& value) {
  std::size_t i = line.find('{');
  if (i == std::string::npos) return false;
  ++i;
  while (i < line.size() && line[i] != '}') {
    const std::size_t eq = line.find("=\"", i);
    if (eq == std::string::npos) return false;
    std::string key = line.substr(i, eq - i), v;
    for (i = eq + 2; i < line.size() && line[i] != '"'; ++i) {
      if (line[i] == '\\' && i + 1 < line.size()) {
        ++i;
        v += line[i] == 'n' ? '\n' : line[i];
      } else {
        v += line[i];
      }
    }
    if (i >= line.size()) return false;
    labels[key] = v;
    ++i;
    if (i < line.size() && line[i] == ',') ++i;
  }
  if (i >= line.size()) return false;
  const char* begin = line.data() + i + 1;
  while (begin < line.data() + line.size() && *begin == ' ') ++begin;
  const auto [end, ec] = std::from_chars(begin, line.data() + line.size(), value);
  return ec == std::errc() && end != begin;
}

std::map<ModelKey, Measured> read_measured(std::istream& in) {
  std::map<ModelKey, Measured> out;
  for (std::string line; std::getline(in, line);) {
    const bool error = line.starts_with("estimator_model_measured_error{");
    const bool intervals = line.starts_with("estimator_model_measured_intervals{");
    if (!error && !intervals) continue;
    std::map<std::string, std::string> l;
    double v = 0;
    if (!parse_sample(line, l, v)) continue;
    Measured& m = out[{l["model"], l["source"], l["output_type"]}];
    if (intervals) {
      m.intervals = v;
    } else if (l["kind"] == "mae") {
      m.mae_sum += v;
      ++m.mae_n;
    } else if (l["kind"] == "mape") {
      m.mape_sum += v;
      ++m.mape_n;
    }
  }
  return out;
}

}  // namespace

int run_models(const ModelsOptions& o, std::FILE* out) {
  const auto registry = load_registry(o.model_dir);
  if (registry == nullptr) return kExitUsage;
  std::map<ModelKey, Measured> measured;
  if (!o.measured_from.empty()) {
    if (o.measured_from == "-") {
      measured = read_measured(std::cin);
    } else {
      std::ifstream f(o.measured_from);
      if (!f) {
        std::fprintf(stderr, "estimator: cannot read %s\n", o.measured_from.c_str());
        return kExitUsage;
      }
      measured = read_measured(f);
    }
  }

  std::fprintf(out, "%zu model(s) accepted:\n", registry->models().size());
  std::fprintf(out, "  %-36s %-9s %-11s %-9s %8s %8s  %s\n", "name", "class", "source", "output",
               "mae", "mape", "features / origin");
  for (const auto& m : registry->models()) {
    const models::ModelInfo& i = m->info();
    // "unknown": such a model is chosen by name or trainer only, for requests naming a kind.
    std::fprintf(out, "  %-36s %-9s %-11s %-9s %8s %8s  %s\n", i.name.c_str(),
                 i.model_class.c_str(), i.source.empty() ? "unknown" : i.source.c_str(),
                 i.output_type.empty() ? "unknown" : i.output_type.c_str(), figure(i.mae).c_str(),
                 figure(i.mape).c_str(), commas(i.features).c_str());
    std::fprintf(out, "  %-36s components %s; from %s\n", "", commas(i.components).c_str(),
                 i.origin.c_str());
    if (!o.measured_from.empty()) {
      const auto it = measured.find({i.name, i.source, i.output_type});
      if (it == measured.end() || std::isnan(it->second.mae())) {
        std::fprintf(out, "  %-36s measured on the node: none\n", "");
      } else {
        std::fprintf(out, "  %-36s measured on the node: mae %s, mape %s over %s intervals "
                          "(published mae %s, mape %s)\n",
                     "", figure(it->second.mae()).c_str(), figure(it->second.mape()).c_str(),
                     figure(it->second.intervals).c_str(), figure(i.mae).c_str(),
                     figure(i.mape).c_str());
      }
    }
  }
  std::fprintf(out, "%zu file(s) refused:\n", registry->refused().size());
  for (const auto& r : registry->refused()) {
    std::fprintf(out, "  %s\n    %s\n", r.origin.c_str(), r.reason.to_string().c_str());
  }
  if (!o.features.empty()) {
    std::vector<std::string_view> cols(o.features.begin(), o.features.end());
    const models::Selector sel{o.name, {}, o.output_type, o.source, o.filter};
    std::vector<models::PassedOver> passed_over;
    auto chosen = registry->select(sel, cols, false, {o.error_key, o.node_type}, &passed_over);
    if (chosen.ok()) {
      const models::ModelInfo& c = chosen.value()->info();
      std::fprintf(out, "selection for [%s]: %s (%s %s; from %s)\n", commas(o.features).c_str(),
                   c.name.c_str(), o.error_key.c_str(), figure(c.figure(o.error_key)).c_str(),
                   c.origin.c_str());
      for (const models::PassedOver& p : passed_over) {
        const models::ModelInfo& i = p.model->info();
        std::fprintf(out, "  skipped, ranked better: %s (%s %s; from %s): %s\n", i.name.c_str(),
                     o.error_key.c_str(), figure(i.figure(o.error_key)).c_str(), i.origin.c_str(),
                     models::describe_needs(p).c_str());
      }
    } else {
      std::fprintf(out, "selection for [%s]: none: %s\n", commas(o.features).c_str(),
                   chosen.status().message().c_str());
    }
  }
  return 0;
}

}  // namespace estimator::service
