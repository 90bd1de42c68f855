// SPDX-License-Identifier: Apache-2.0
// Running a program from a test through /bin/sh: quoting, and reading its output.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <optional>
#include <string>
#include <utility>

namespace estimator::testing {

// `s` as one single-quoted /bin/sh word.
inline std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'') {
      q += "'\\''";
    } else {
      q += c;
    }
  }
  return q + "'";
}

// What a shell command wrote on its standard output (binary-safe) and how it ended.
struct CommandResult {
  int exit_code = -1;  // -1: it could not start, or a signal ended it
  std::string out;
};

inline CommandResult run_command(const std::string& command) {
  CommandResult r;
  FILE* p = popen(command.c_str(), "r");
  if (p == nullptr) return r;
  char buf[65536];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) r.out.append(buf, n);
  const int status = pclose(p);
  if (status != -1 && WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  return r;
}

// Standard output of a shell command; nullopt when it cannot start or does not exit 0.
inline std::optional<std::string> command_output(const std::string& command) {
  CommandResult r = run_command(command);
  if (r.exit_code != 0) return std::nullopt;
  return std::move(r.out);
}

}  // namespace estimator::testing
