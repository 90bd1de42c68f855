// SPDX-License-Identifier: Apache-2.0
// Routes spdlog's default logger into a string for the capture's life, for tests that
// check what the code under test logs.
#pragma once

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace estimator::testing {

class LogCapture {
 public:
  // `pattern` is spdlog's: "%l %v" is the level and the message.
  explicit LogCapture(const std::string& pattern = "%l %v")
      : sink_(std::make_shared<spdlog::sinks::ostream_sink_mt>(text_)),
        saved_(spdlog::default_logger()) {
    auto logger = std::make_shared<spdlog::logger>("capture", sink_);
    logger->set_pattern(pattern);
    logger->set_level(spdlog::level::info);
    spdlog::set_default_logger(logger);
  }
  ~LogCapture() { spdlog::set_default_logger(saved_); }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;

  std::string text() const {
    sink_->flush();
    return text_.str();
  }

  std::vector<std::string> lines_with(std::string_view needle) const {
    std::vector<std::string> out;
    std::istringstream in(text());
    for (std::string line; std::getline(in, line);) {
      if (line.find(needle) != std::string::npos) out.push_back(line);
    }
    return out;
  }

 private:
  std::ostringstream text_;
  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink_;
  std::shared_ptr<spdlog::logger> saved_;
};

}  // namespace estimator::testing
