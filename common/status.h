// SPDX-License-Identifier: Apache-2.0
// Status and Result: how every layer reports failure.
//
// Errors are values. Nothing on the request path or across the shared-memory boundary
// throws; set-up code may throw, but converts to Status at its public edge. The codes
// are the ones carried on the wire (schema/estimator.fbs StatusCode), so a server-side
// failure reaches the client unchanged.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace estimator {

// Values are part of the wire format: append only, never renumber.
enum class Code : std::uint8_t {
  kOk = 0,
  kInvalidArgument = 1,    // malformed request or input: shapes, types, syntax
  kNotFound = 2,           // no model with that name / no model fits the request
  kMissingFeatures = 3,    // the chosen model needs features the request lacks
  kInvalidValue = 4,       // NaN or infinite values where numbers are required
  kTooLarge = 5,           // request or reply exceeds a configured capacity
  kIncompatible = 6,       // layout or schema version mismatch between peers
  kUnavailable = 7,        // no estimator answers (not running, died, restarting)
  kDeadlineExceeded = 8,   // the estimator is alive but did not answer in time
  kResourceExhausted = 9,  // no free slot, /dev/shm full, out of memory
  kInternal = 10,          // a bug: an invariant did not hold
  kPermissionDenied = 11,  // the OS refused access (segment mode, file mode)
  kIntegrity = 12,         // a reply did not answer the request: another process wrote the slot
};

// A stable lower-case name for logs, metrics labels and CLI output.
constexpr std::string_view code_name(Code c) {
  switch (c) {
    case Code::kOk: return "ok";
    case Code::kInvalidArgument: return "invalid_argument";
    case Code::kNotFound: return "not_found";
    case Code::kMissingFeatures: return "missing_features";
    case Code::kInvalidValue: return "invalid_value";
    case Code::kTooLarge: return "too_large";
    case Code::kIncompatible: return "incompatible";
    case Code::kUnavailable: return "unavailable";
    case Code::kDeadlineExceeded: return "deadline_exceeded";
    case Code::kResourceExhausted: return "resource_exhausted";
    case Code::kInternal: return "internal";
    case Code::kPermissionDenied: return "permission_denied";
    case Code::kIntegrity: return "integrity";
  }
  return "unknown";
}

// Success costs nothing (no allocation); failure carries a message for a human.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return {}; }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }

  // "<code>: <message>", for logs and CLI errors.
  std::string to_string() const {
    if (ok()) return "ok";
    std::string s(code_name(code_));
    s += ": ";
    s += message_;
    return s;
  }

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

// A value or the Status that explains why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design, like expected
  Result(Status status) : v_(std::move(status)) {}  // NOLINT
  Result(Code code, std::string message) : v_(Status(code, std::move(message))) {}

  bool ok() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  // The failure; an ok Status when there is a value.
  Status status() const { return ok() ? Status::Ok() : std::get<Status>(v_); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace estimator
