// SPDX-License-Identifier: Apache-2.0
#include "service/command_line.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cinttypes>
#include <cstdio>

#include "schema/schema_version.h"
#include "service/build_info.h"

namespace estimator::service {

int exit_code(const Status& status) {
  if (status.ok()) return kExitOk;
  return status.code() == Code::kInvalidArgument ? kExitUsage : kExitFailure;
}

std::string version_text(std::string_view program) {
  char hash[17];
  std::snprintf(hash, sizeof hash, "%016" PRIx64, schema::kSchemaHash);
  return std::string(program) + " " + kVersion + " (commit " + kGitCommit + ", schema " +
         std::to_string(schema::kSchemaVersion) + " hash " + hash + ")";
}

std::optional<int> parse_command_line(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
    return std::nullopt;
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }
}

void log_to_stderr() {
  // An empty name keeps spdlog's default pattern free of a "[name]" field.
  spdlog::set_default_logger(std::make_shared<spdlog::logger>(
      "", std::make_shared<spdlog::sinks::stderr_color_sink_mt>()));
}

}  // namespace estimator::service
