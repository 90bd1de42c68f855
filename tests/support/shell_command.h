// SPDX-License-Identifier: Apache-2.0
// Running a reference program from a test: quoting for /bin/sh and reading its output.
#pragma once

#include <cstdio>
#include <optional>
#include <string>

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

// Standard output of a shell command (binary-safe); nullopt when it cannot start or exits
// with a non-zero status.
inline std::optional<std::string> command_output(const std::string& command) {
  FILE* p = popen(command.c_str(), "r");
  if (p == nullptr) return std::nullopt;
  std::string out;
  char buf[65536];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  if (pclose(p) != 0) return std::nullopt;
  return out;
}

}  // namespace estimator::testing
