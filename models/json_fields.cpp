#include "models/json_fields.h"

#include <cmath>
#include <cstdint>

namespace estimator::models::json {

Where Where::operator/(std::string_view key) const {
  Where w{file, path};
  if (!w.path.empty() && !key.starts_with('[')) w.path += '.';
  w.path += key;
  return w;
}

std::string Where::describe() const {
  if (path.empty()) return file;
  return file + ": " + path;
}

Status invalid(const Where& where, std::string_view problem) {
  std::string msg = where.describe();
  msg += ": ";
  msg += problem;
  return Status(Code::kInvalidArgument, std::move(msg));
}

namespace {

// Replays a document that failed to parse, without building it, to learn which field the
// parser was reading when it stopped: nlohmann's own message gives only a position.
class PathTracker {
 public:
  using number_integer_t = Json::number_integer_t;
  using number_unsigned_t = Json::number_unsigned_t;
  using number_float_t = Json::number_float_t;
  using string_t = Json::string_t;
  using binary_t = Json::binary_t;

  bool null() { return value(); }
  bool boolean(bool /*unused*/) { return value(); }
  bool number_integer(number_integer_t /*unused*/) { return value(); }
  bool number_unsigned(number_unsigned_t /*unused*/) { return value(); }
  bool number_float(number_float_t /*unused*/, const string_t& /*unused*/) { return value(); }
  bool string(string_t& /*unused*/) { return value(); }
  bool binary(binary_t& /*unused*/) { return value(); }
  bool start_object(std::size_t /*unused*/) {
    stack_.push_back(Level{true, {}, 0});
    return true;
  }
  bool key(string_t& k) {
    stack_.back().key = k;
    return true;
  }
  bool end_object() { return close(); }
  bool start_array(std::size_t /*unused*/) {
    stack_.push_back(Level{false, {}, 0});
    return true;
  }
  bool end_array() { return close(); }
  bool parse_error(std::size_t /*unused*/, const std::string& /*unused*/,
                   const Json::exception& ex) {
    message_ = ex.what();
    return false;
  }

  std::string path() const {
    std::string p;
    for (const Level& l : stack_) {
      if (l.is_object) {
        if (l.key.empty()) continue;
        if (!p.empty()) p += '.';
        p += l.key;
      } else {
        p += '[' + std::to_string(l.index) + ']';
      }
    }
    return p;
  }
  const std::string& message() const { return message_; }

 private:
  struct Level {
    bool is_object;
    std::string key;
    std::size_t index;
  };

  // A finished value moves the position past it: the next error is in the enclosing
  // object (before its next key) or at the next array index.
  bool value() {
    if (stack_.empty()) return true;
    if (stack_.back().is_object) {
      stack_.back().key.clear();
    } else {
      ++stack_.back().index;
    }
    return true;
  }
  bool close() {
    stack_.pop_back();
    return value();
  }

  std::vector<Level> stack_;
  std::string message_;
};

// nlohmann prefixes its messages with "[json.exception.parse_error.101] "; the id means
// nothing to a user.
std::string strip_exception_id(const std::string& what) {
  if (!what.empty() && what.front() == '[') {
    const std::size_t end = what.find("] ");
    if (end != std::string::npos) return what.substr(end + 2);
  }
  return what;
}

}  // namespace

Result<Json> parse(std::string_view text, std::string_view file) {
  Json doc = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_discarded()) return doc;

  PathTracker tracker;
  Json::sax_parse(text, &tracker, Json::input_format_t::json, /*strict=*/true);
  std::string msg(file);
  msg += ": not valid JSON";
  const std::string path = tracker.path();
  if (!path.empty()) msg += " (in " + path + ")";
  msg += ": ";
  msg += tracker.message().empty() ? std::string("parse error")
                                   : strip_exception_id(tracker.message());
  return Status(Code::kInvalidArgument, std::move(msg));
}

Status expect_object(const Json& value, const Where& where) {
  if (value.is_object()) return Status::Ok();
  return invalid(where, std::string("expected an object, got ") + value.type_name());
}

Result<const Json*> member(const Json& obj, const Where& where, std::string_view key) {
  if (Status s = expect_object(obj, where); !s.ok()) return s;
  const auto it = obj.find(key);
  if (it == obj.end()) return invalid(where / key, "missing");
  return &*it;
}

const Json* optional_member(const Json& obj, std::string_view key) {
  if (!obj.is_object()) return nullptr;
  const auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

Result<double> finite_number(const Json& value, const Where& where) {
  if (!value.is_number()) {
    return invalid(where, std::string("expected a finite number, got ") + value.type_name());
  }
  const double d = value.get<double>();
  if (!std::isfinite(d)) {
    return Status(Code::kInvalidValue, where.describe() + ": not a finite number");
  }
  return d;
}

Result<std::string> string_value(const Json& value, const Where& where) {
  if (!value.is_string()) {
    return invalid(where, std::string("expected a string, got ") + value.type_name());
  }
  return value.get<std::string>();
}

Result<std::vector<std::string>> string_array(const Json& value, const Where& where) {
  if (!value.is_array()) {
    return invalid(where, std::string("expected an array of strings, got ") +
                              value.type_name());
  }
  std::vector<std::string> out;
  out.reserve(value.size());
  for (std::size_t i = 0; i < value.size(); ++i) {
    if (!value[i].is_string()) {
      return invalid(where / ("[" + std::to_string(i) + "]"),
                     std::string("expected a string, got ") + value[i].type_name());
    }
    out.push_back(value[i].get<std::string>());
  }
  return out;
}

}  // namespace estimator::models::json
