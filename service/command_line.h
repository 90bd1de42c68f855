// SPDX-License-Identifier: Apache-2.0
// What estimator and estimatord share on their command lines: the exit codes every
// subcommand keeps, parsing that maps CLI11's own exit codes onto them, the --version text
// and --log-level's levels, and logging to stderr.
#pragma once

#include <CLI/CLI.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace estimator::service {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;  // a runtime failure: the daemon refused or is gone, ...
inline constexpr int kExitUsage = 2;    // bad usage or input: options, CSV, model files

// kExitUsage for an invalid_argument (a bad option value found late), else kExitFailure;
// kExitOk for ok.
int exit_code(const Status& status);

// "estimatord 0.1.0 (commit 0123456789ab, schema 2 hash 0123456789abcdef)"
std::string version_text(std::string_view program);

// Parses argv; the exit code when the program ends here (--help, --version: 0; any usage
// error, reported on stderr: kExitUsage), nullopt when it runs. CLI11's own codes (106 for
// a missing option, 109 for an unknown one) never leak out.
std::optional<int> parse_command_line(CLI::App& app, int argc, char** argv);

// Accepted by --log-level (a typo is a usage error, not logging turned off).
inline const std::vector<std::string> kLogLevels = {"trace", "debug", "info", "warn", "error", "off"};

// Sends spdlog's default logger to stderr: stdout carries results (CSV, tables), and a
// daemon's stdout may be its parent's output.
void log_to_stderr();

}  // namespace estimator::service
