// SPDX-License-Identifier: Apache-2.0
// estimator: the operator's command line. Subcommands talk to a running daemon
// (estimate, ping) or run the whole thing for a first look (demo).
#include <CLI/CLI.hpp>
#include <cstdlib>
#include <iostream>
#include <limits>

#include "clients/cpp/estimator_client.h"
#include "service/command_line.h"
#include "service/cli/csv.h"
#include "service/cli/demo.h"
#include "service/cli/models_command.h"
#include "service/cli/predict_command.h"
#include "service/cli/validate_command.h"
#include "shm/segment.h"

using namespace estimator;

namespace {

int run_estimate(const client::ClientOptions& options, const std::string& csv_path,
                 const std::vector<std::string>& system_values, const client::Selector& selector,
                 int timeout_ms) {
  auto table = service::read_feature_csv_file(csv_path);
  Status input = table.status();
  if (input.ok()) input = service::add_system_values(*table, system_values);
  if (!input.ok()) {
    std::cerr << "estimator: " << csv_path << ": " << input.message() << "\n";
    return service::kExitUsage;
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
    return service::kExitFailure;
  }
  std::vector<std::string> comps;
  for (std::uint32_t i = 0; i < reply->cols(); ++i) comps.emplace_back(reply->component(i));
  service::write_power_csv(std::cout, comps, reply->powers().data(), reply->rows());
  std::cerr << "model: " << reply->model().name << " (" << reply->model().source << " "
            << reply->model().output_type << ", mae " << reply->model().mae << ")\n";
  return service::kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"estimator: command line of the shared-memory power estimator"};
  app.require_subcommand(1);
  app.set_version_flag("--version", service::version_text("estimator"));
  service::log_to_stderr();  // model loading warns through spdlog; stdout is for results
  client::ClientOptions options{.shm_name = shm::default_segment_name()};
  std::string shm_mode;
  int timeout_ms = 1000;
  const auto output_types = CLI::IsMember({"AbsPower", "DynPower"});
  const auto positive = CLI::Range(1, std::numeric_limits<int>::max());
  const auto non_negative = CLI::Range(0, std::numeric_limits<int>::max());
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
  std::vector<std::string> system_values;
  add_segment_options(est);
  est->add_option("--csv", csv, "input CSV: header of feature names, one row per workload "
                                "('-' = stdin)")->required();
  est->add_option("--model", model, "model name (default: smallest error that fits)");
  est->add_option("--trainer", trainer, "trainer name, e.g. SGDRegressorTrainer");
  est->add_option("--filter", filter, "Kepler filter, e.g. \"mae:0.5;mape:10\"");
  est->add_option("--system", system_values,
                  "system feature NAME=VALUE for every row, e.g. cpu_architecture=Sky Lake "
                  "(repeatable)");
  est->add_option("--output-type", output_type, "AbsPower or DynPower")->check(output_types);
  est->add_option("--source", source, "energy source, e.g. rapl-sysfs, acpi");
  est->add_option("--timeout-ms", timeout_ms, "deadline")
      ->check(positive)
      ->capture_default_str();

  auto* ping = app.add_subcommand("ping", "exit 0 when a daemon answers");
  add_segment_options(ping);
  ping->add_option("--timeout-ms", timeout_ms, "deadline")
      ->check(positive)
      ->capture_default_str();

  auto* demo = app.add_subcommand("demo", "start a daemon on the default models, drive it "
                                          "like an exporter and print per-pod power");
  service::DemoOptions demo_opts;
  demo->add_option("--pods", demo_opts.pods, "simulated pods (1-10000)")
      ->check(CLI::Range(1, 10000))
      ->capture_default_str();
  demo->add_option("--intervals", demo_opts.intervals, "sampling intervals")
      ->check(positive)
      ->capture_default_str();
  demo->add_option("--interval-ms", demo_opts.interval_ms, "interval length")
      ->check(non_negative)
      ->capture_default_str();
  demo->add_option("--estimatord", demo_opts.daemon_path,
                   "daemon binary (default: estimatord beside this program)")
      ->check(CLI::ExistingFile);

  auto* list = app.add_subcommand("models", "list the models a directory holds, accepted or "
                                            "refused with the reason, and which one would be picked");
  service::ModelsOptions models_opts;
  list->add_option("--model-dir", models_opts.model_dir, "directory (default: the embedded defaults)")
      ->check(CLI::ExistingDirectory);
  list->add_option("--features", models_opts.features, "request columns, to show the selection")
      ->delimiter(',');
  list->add_option("--output-type", models_opts.output_type, "AbsPower or DynPower")
      ->check(output_types);
  list->add_option("--source", models_opts.source, "energy source");
  list->add_option("--model", models_opts.name, "model name");
  list->add_option("--filter", models_opts.filter, "Kepler filter, e.g. \"mae:0.5;mape:10\"");
  list->add_option("--error-key", models_opts.error_key, "figure whose smallest value wins")
      ->capture_default_str();
  list->add_option("--node-type", models_opts.node_type, "prefer models of this node_type");
  list->add_option("--measured-from", models_opts.measured_from,
                   "a scrape of estimatord's /metrics (file, or '-' for stdin): show the errors "
                   "measured on its node beside the published ones");

  auto* predict = app.add_subcommand("predict", "evaluate one model offline (no daemon) on a CSV");
  service::PredictOptions predict_opts;
  predict->add_option("--model", predict_opts.model_path,
                      "model folder, zip, or file (weight JSON, XGBoost JSON, .pkl, .h5, .keras)")
      ->required();
  predict->add_option("--csv", predict_opts.csv_path, "input CSV ('-' = stdin)")->required();
  predict->add_option("--system", predict_opts.system_values,
                      "system feature NAME=VALUE for every row (repeatable)");
  predict->add_option("--components", predict_opts.components,
                      "output columns by name, or the names of a nameless model's outputs, in order")
      ->delimiter(',');

  auto* validate = app.add_subcommand(
      "validate", "rank the models of a directory by their error against power measured on "
                  "this node (no daemon)");
  service::ValidateOptions validate_opts;
  validate->add_option("--model-dir", validate_opts.model_dir,
                       "directory (default: the embedded defaults)")
      ->check(CLI::ExistingDirectory);
  validate->add_option("--csv", validate_opts.csv_path,
                       "node-level rows, one per interval: feature columns and measured power "
                       "columns in watts ('-' = stdin)")
      ->required();
  validate->add_option("--measured", validate_opts.measured,
                       "the measured power columns (default: those named package, core, uncore, "
                       "dram, platform, gpu, other)")
      ->delimiter(',');
  validate->add_option("--output-type", validate_opts.output_type,
                       "AbsPower or DynPower (the measurement must then exclude idle power)")
      ->check(output_types)
      ->capture_default_str();
  validate->add_option("--source", validate_opts.source, "energy source (default: any)");
  validate->add_option("--system", validate_opts.system_values,
                       "system feature NAME=VALUE for every row (repeatable)");
  validate->add_option("--output", validate_opts.table_path, "write the ranking as CSV to this file");
  validate->add_option("--plot", validate_opts.plot_path,
                       "write a PNG of predicted vs measured power of the best three models");

  if (auto code = service::parse_command_line(app, argc, argv)) return *code;

  if (list->parsed()) return service::run_models(models_opts);
  if (predict->parsed()) return service::run_predict(predict_opts);
  if (validate->parsed()) return service::run_validate(validate_opts);

  if (!shm_mode.empty()) {
    char* end = nullptr;
    const long mode = std::strtol(shm_mode.c_str(), &end, 8);
    if (*end != '\0' || mode < 0 || mode > 07777) {
      std::cerr << "estimator: --shm-mode " << shm_mode << " is not an octal mode\n";
      return service::kExitUsage;
    }
    options.shm_mode = static_cast<std::int32_t>(mode);
  }
  if (est->parsed()) {
    return run_estimate(options, csv, system_values, {model, trainer, output_type, source, filter},
                        timeout_ms);
  }
  if (ping->parsed()) {
    client::Client c(options);
    const Status s = c.ping(std::chrono::milliseconds(timeout_ms));
    if (!s.ok()) {
      std::cerr << "estimator: " << s.to_string() << "\n";
      return service::kExitFailure;
    }
    std::cout << "ok\n";
    return service::kExitOk;
  }
  return service::run_demo(demo_opts, argv[0]);
}
