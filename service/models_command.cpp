#include "service/models_command.h"

#include <cmath>
#include <cstdio>

#include "common/text.h"
#include "models/embedded_defaults.h"
#include "models/registry.h"

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

}  // namespace

int run_models(const ModelsOptions& o, std::FILE* out) {
  std::vector<models::ModelFolder> folders;
  std::vector<models::Refusal> refused;
  if (o.model_dir.empty()) {
    folders = models::embedded_model_folders();
  } else {
    auto scanned = models::Registry::scan_directory(o.model_dir, refused);
    if (!scanned.ok()) {
      std::fprintf(stderr, "estimator: %s\n", scanned.status().to_string().c_str());
      return 1;
    }
    folders = std::move(scanned).value();
  }
  const auto registry = models::Registry::build(folders, std::move(refused));

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
