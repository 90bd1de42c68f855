// estimator: the operator's command line. Subcommands talk to a running daemon
// (estimate, ping) or run the whole thing for a first look (demo).
#include <CLI/CLI.hpp>
#include <cstdlib>
#include <fstream>
#include <iostream>

#include "clients/cpp/estimator_client.h"
#include "service/csv.h"
#include "service/demo.h"
#include "service/models_command.h"
#include "service/predict_command.h"
#include "shm/segment.h"

using namespace estimator;

namespace {

int run_estimate(const client::ClientOptions& options, const std::string& csv_path,
                 const client::Selector& selector, int timeout_ms) {
  std::ifstream file;
  std::istream* in = &std::cin;
  if (csv_path != "-") {
    file.open(csv_path);
    if (!file) {
      std::cerr << "estimator: cannot open " << csv_path << "\n";
      return 2;
    }
    in = &file;
  }
  auto table = service::read_feature_csv(*in);
  if (!table.ok()) {
    std::cerr << "estimator: " << csv_path << ": " << table.status().message() << "\n";
    return 2;
  }
  std::vector<std::string_view> names(table->features.begin(), table->features.end());
  std::vector<SystemValue> system;
  for (const auto& [k, v] : table->system_values) system.push_back({k, v});
  client::Client c(options);
  auto reply = c.estimate({.selector = selector,
                           .features = names,
                           .matrix = table->values.data(),
                           .rows = static_cast<std::uint32_t>(table->rows),
                           .cols = static_cast<std::uint32_t>(names.size()),
                           .system_values = system},
                          std::chrono::milliseconds(timeout_ms));
  if (!reply.ok()) {
    std::cerr << "estimator: " << reply.status().to_string() << "\n";
    return 1;
  }
  std::vector<std::string> comps;
  for (std::uint32_t i = 0; i < reply->cols(); ++i) comps.emplace_back(reply->component(i));
  service::write_power_csv(std::cout, comps, reply->powers().data(), reply->rows());
  std::cerr << "model: " << reply->model().name << " (" << reply->model().source << " "
            << reply->model().output_type << ", mae " << reply->model().mae << ")\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"estimator: command line of the shared-memory power estimator"};
  app.require_subcommand(1);
  client::ClientOptions options{.shm_name = shm::default_segment_name()};
  std::string shm_mode;
  int timeout_ms = 1000;
  // Who must own the segment and its widest mode (estimator_client.h): a segment of
  // another user is refused rather than believed.
  const auto add_segment_options = [&](CLI::App* cmd) {
    cmd->add_option("--shm-name", options.shm_name, "daemon segment name")->capture_default_str();
    cmd->add_option("--daemon-uid", options.daemon_uid,
                    "uid that must own the segment (default: $ESTIMATOR_DAEMON_UID, else ours)")
        ->check(CLI::Range(0, 0x7FFFFFFF));
    cmd->add_option("--shm-mode", shm_mode,
                    "widest mode the segment may have, octal (default: $ESTIMATOR_SHM_MODE, "
                    "else 0660)");
  };

  auto* est = app.add_subcommand("estimate", "estimate the power of each CSV row (CSV on stdout)");
  std::string csv = "-";
  std::string model, trainer, output_type, source, filter;
  add_segment_options(est);
  est->add_option("--csv", csv, "input CSV: header of feature names, one row per workload "
                                "('-' = stdin)")->required();
  est->add_option("--model", model, "model name (default: smallest error that fits)");
  est->add_option("--trainer", trainer, "trainer name, e.g. SGDRegressorTrainer");
  est->add_option("--filter", filter, "Kepler filter, e.g. \"mae:0.5;mape:10\"");
  est->add_option("--output-type", output_type, "AbsPower or DynPower");
  est->add_option("--source", source, "energy source, e.g. rapl-sysfs, acpi");
  est->add_option("--timeout-ms", timeout_ms, "deadline")->capture_default_str();

  auto* ping = app.add_subcommand("ping", "exit 0 when a daemon answers");
  add_segment_options(ping);
  ping->add_option("--timeout-ms", timeout_ms, "deadline")->capture_default_str();

  auto* demo = app.add_subcommand("demo", "start a daemon on the default models, drive it "
                                          "like an exporter and print per-pod power");
  service::DemoOptions demo_opts;
  demo->add_option("--pods", demo_opts.pods, "simulated pods")->capture_default_str();
  demo->add_option("--intervals", demo_opts.intervals, "sampling intervals")->capture_default_str();
  demo->add_option("--interval-ms", demo_opts.interval_ms, "interval length")->capture_default_str();
  demo->add_option("--estimatord", demo_opts.daemon_path,
                   "daemon binary (default: estimatord beside this program)");

  auto* list = app.add_subcommand("models", "list the models a directory holds, accepted or "
                                            "refused with the reason, and which one would be picked");
  service::ModelsOptions models_opts;
  list->add_option("--model-dir", models_opts.model_dir, "directory (default: the embedded defaults)");
  list->add_option("--features", models_opts.features, "request columns, to show the selection")
      ->delimiter(',');
  list->add_option("--output-type", models_opts.output_type, "AbsPower or DynPower");
  list->add_option("--source", models_opts.source, "energy source");
  list->add_option("--model", models_opts.name, "model name");
  list->add_option("--filter", models_opts.filter, "Kepler filter, e.g. \"mae:0.5;mape:10\"");
  list->add_option("--error-key", models_opts.error_key, "figure whose smallest value wins")
      ->capture_default_str();
  list->add_option("--node-type", models_opts.node_type, "prefer models of this node_type");

  auto* predict = app.add_subcommand("predict", "evaluate one model offline (no daemon) on a CSV");
  service::PredictOptions predict_opts;
  predict->add_option("--model", predict_opts.model_path,
                      "model folder, zip, or file (weight JSON, XGBoost JSON, .pkl, .h5, .keras)")
      ->required();
  predict->add_option("--csv", predict_opts.csv_path, "input CSV ('-' = stdin)")->required();
  predict->add_option("--components", predict_opts.components,
                      "output columns by name, or the names of a nameless model's outputs, in order")
      ->delimiter(',');

  CLI11_PARSE(app, argc, argv);

  if (list->parsed()) return service::run_models(models_opts);
  if (predict->parsed()) return service::run_predict(predict_opts);

  if (!shm_mode.empty()) {
    char* end = nullptr;
    const long mode = std::strtol(shm_mode.c_str(), &end, 8);
    if (*end != '\0' || mode < 0 || mode > 07777) {
      std::cerr << "estimator: --shm-mode " << shm_mode << " is not an octal mode\n";
      return 2;
    }
    options.shm_mode = static_cast<std::int32_t>(mode);
  }
  if (est->parsed()) {
    return run_estimate(options, csv, {model, trainer, output_type, source, filter}, timeout_ms);
  }
  if (ping->parsed()) {
    client::Client c(options);
    const Status s = c.ping(std::chrono::milliseconds(timeout_ms));
    if (!s.ok()) {
      std::cerr << "estimator: " << s.to_string() << "\n";
      return 1;
    }
    std::cout << "ok\n";
    return 0;
  }
  return service::run_demo(demo_opts, argv[0]);
}
