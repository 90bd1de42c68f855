// SPDX-License-Identifier: Apache-2.0
#include "bench/kepler_codec.h"

#include <algorithm>
#include <charconv>
#include <cmath>

namespace estimator::bench {
namespace {

void append_float(std::string& out, float v) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

void append_string(std::string& out, std::string_view s) {  // names need no escaping
  out += '"';
  out += s;
  out += '"';
}

}  // namespace

// The v0.9 request of `c`, written into `out` as Go's encoding/json would lay it out.
void encode_request(const Case& c, std::string& out) {
  out.clear();
  out += "{\"metrics\":[";
  const auto names = feature_names(c.cols);
  for (std::size_t j = 0; j < names.size(); ++j) {
    if (j != 0) out += ',';
    append_string(out, names[j]);
  }
  out += "],\"values\":[";
  for (std::uint32_t r = 0; r < c.rows; ++r) {
    if (r != 0) out += ',';
    out += '[';
    for (std::uint32_t j = 0; j < c.cols; ++j) {
      if (j != 0) out += ',';
      append_float(out, c.matrix[std::size_t{r} * c.cols + j]);
    }
    out += ']';
  }
  out += "],\"output_type\":";
  append_string(out, kOutputType);
  out += ",\"source\":";
  append_string(out, kSource);
  if (c.by_name) {
    out += ",\"model_name\":";
    append_string(out, c.model_name);
  }
  out += ",\"system_features\":[],\"system_values\":[]}";
}

namespace {

// A reader of exactly the reply's shape; anything else is an error naming the offset.
class ReplyReader {
 public:
  explicit ReplyReader(std::string_view s) : s_(s) {}

  Status read(JsonReply& out) {
    out.components.clear();
    out.counts.clear();
    out.values.clear();
    out.msg = {};
    if (!take('{')) return fail("expected an object");
    bool first = true;
    while (!take('}')) {
      if (!first && !take(',')) return fail("expected ',' or '}'");
      first = false;
      std::string_view key;
      if (!string(key) || !take(':')) return fail("expected a key");
      if (key == "powers") {
        if (Status st = powers(out); !st.ok()) return st;
      } else if (key == "msg") {
        if (!string(out.msg)) return fail("msg: expected a string");
      } else if (key == "core_ratio") {
        if (!number(out.core_ratio)) return fail("core_ratio: expected a number");
      } else {
        return fail("unexpected key '" + std::string(key) + "'");
      }
    }
    ws();
    if (i_ != s_.size()) return fail("bytes after the document");
    return Status::Ok();
  }

 private:
  Status powers(JsonReply& out) {
    if (!take('{')) return fail("powers: expected an object (a list is the error shape)");
    bool first = true;
    while (!take('}')) {
      if (!first && !take(',')) return fail("powers: expected ',' or '}'");
      first = false;
      std::string_view name;
      if (!string(name) || !take(':') || !take('[')) return fail("powers: expected name: [");
      out.components.push_back(name);
      std::uint32_t n = 0;
      bool first_value = true;
      while (!take(']')) {
        if (!first_value && !take(',')) return fail("powers: expected ',' or ']'");
        first_value = false;
        double v = 0;
        if (!number(v)) return fail("powers: expected a number");
        out.values.push_back(static_cast<float>(v));
        ++n;
      }
      out.counts.push_back(n);
    }
    return Status::Ok();
  }

  void ws() {
    while (i_ < s_.size() &&
           (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\r' || s_[i_] == '\t')) {
      ++i_;
    }
  }
  bool take(char ch) {
    ws();
    if (i_ < s_.size() && s_[i_] == ch) {
      ++i_;
      return true;
    }
    return false;
  }
  bool string(std::string_view& out) {  // raw (escapes kept): names and msg are compared only
    if (!take('"')) return false;
    const std::size_t start = i_;
    while (i_ < s_.size() && s_[i_] != '"') i_ += s_[i_] == '\\' ? 2 : 1;
    if (i_ >= s_.size()) return false;
    out = s_.substr(start, i_ - start);
    ++i_;
    return true;
  }
  bool number(double& v) {
    ws();
    const auto r = std::from_chars(s_.data() + i_, s_.data() + s_.size(), v);
    if (r.ec != std::errc{}) return false;
    i_ = static_cast<std::size_t>(r.ptr - s_.data());
    return true;
  }
  Status fail(std::string what) const {
    return Status(Code::kInvalidArgument,
                  "json: reply at byte " + std::to_string(i_) + ": " + what);
  }

  std::string_view s_;
  std::size_t i_ = 0;
};

}  // namespace

Status read_reply(std::string_view text, JsonReply& out) { return ReplyReader(text).read(out); }

// Ok when `r` answers `c` as the local handler did (to float precision of the text).
Status check_json_reply(const Case& c, const JsonReply& r) {
  if (!r.msg.empty()) return Status(Code::kInternal, "json: error reply: " + std::string(r.msg));
  if (r.components.size() != c.components) {
    return Status(Code::kInternal, "json: " + std::to_string(r.components.size()) +
                                       " components, expected " +
                                       std::to_string(c.components));
  }
  for (std::size_t k = 0; k < r.components.size(); ++k) {
    if (k < c.component_names.size() && r.components[k] != c.component_names[k]) {
      return Status(Code::kInternal, "json: component '" + std::string(r.components[k]) +
                                         "', expected '" + c.component_names[k] + "'");
    }
    if (r.counts[k] != c.rows) {
      return Status(Code::kInternal, "json: " + std::to_string(r.counts[k]) + " powers of " +
                                         std::string(r.components[k]) + " for " +
                                         std::to_string(c.rows) + " rows");
    }
  }
  for (std::size_t k = 0; k < c.components; ++k) {
    for (std::uint32_t row = 0; row < c.rows; ++row) {
      const float got = r.values[k * c.rows + row];
      const float want = c.powers[std::size_t{row} * c.components + k];
      const float tolerance = 1e-5F * std::max(1.0F, std::fabs(want));
      if (!std::isfinite(got) || std::fabs(got - want) > tolerance) {
        return Status(Code::kInternal, "json: row " + std::to_string(row) + " " +
                                           c.component_names[k] + " = " + std::to_string(got) +
                                           ", the handler says " + std::to_string(want));
      }
    }
  }
  return Status::Ok();
}

}  // namespace estimator::bench
