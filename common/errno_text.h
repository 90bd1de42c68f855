// SPDX-License-Identifier: Apache-2.0
// The words for an errno value, for the messages of every layer that calls the system.
#pragma once

#include <cstring>
#include <string>

namespace estimator {

// strerror's text for err. Taken as an argument, not read from errno, because callers
// usually saved errno before a later call (close, a log line) could change it.
inline std::string errno_text(int err) { return std::strerror(err); }

}  // namespace estimator
