// SPDX-License-Identifier: Apache-2.0
// The reply side of Kepler's JSON protocol: the replies of each generation and the error
// reply, within the sizes Kepler's clients read (kepler_json.h).
#include <algorithm>
#include <charconv>
#include <cmath>
#include <string>

#include "common/power_total.h"
#include "service/kepler_json.h"
#include "service/utf8.h"

namespace estimator::service::kepler {

void append_json_string(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    const unsigned char c = *p;
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
      ++p;
    } else if (c < 0x20) {
      switch (c) {
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 0xF];
      }
      ++p;
    } else if (c < 0x80) {
      out += static_cast<char>(c);
      ++p;
    } else if (const std::size_t n = utf8_sequence(p, end); n != 0) {
      out.append(reinterpret_cast<const char*>(p), n);
      p += n;
    } else {
      out += "\\ufffd";
      ++p;
    }
  }
  out += '"';
}

namespace {

template <typename T>
void append_number(std::string& out, T v) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

}  // namespace

void write_error(std::string_view message, std::string& out) {
  static constexpr std::string_view kHead = R"({"powers":false,"msg":)";
  if (message.empty()) message = "unknown error";
  out.assign(kHead);
  append_json_string(out, message);
  out += '}';
  // Too long once escaped: cut the message (at a UTF-8 boundary) until it fits. An input
  // byte takes one to six bytes escaped, so each step drops a sixth of the excess, at
  // least one byte.
  std::size_t keep = std::min(message.size(), kMaxErrorReplyBytes);
  std::string cut;
  while (out.size() > kMaxErrorReplyBytes) {  // ends: with keep = 0 it fits
    while (keep > 0 && keep < message.size() &&
           (static_cast<unsigned char>(message[keep]) & 0xC0) == 0x80) {
      --keep;
    }
    cut.assign(message.substr(0, keep));
    cut += "...";
    out.assign(kHead);
    append_json_string(out, cut);
    out += '}';
    if (out.size() > kMaxErrorReplyBytes) {
      keep -= std::min(keep, std::max<std::size_t>(1, (out.size() - kMaxErrorReplyBytes) / 6));
    }
  }
}

Status write_reply(Form form, std::span<const std::string_view> components,
                 std::span<const float> powers, std::uint32_t rows, double core_ratio,
                 std::string& out) {
  const std::size_t cols = components.size();
  if (powers.size() != std::size_t{rows} * cols) {
    Status s(Code::kInternal, std::to_string(powers.size()) + " powers for " +
                                  std::to_string(rows) + " rows x " + std::to_string(cols) +
                                  " components");
    write_error(s.message(), out);
    return s;
  }
  for (std::size_t i = 0; i < powers.size(); ++i) {
    if (!std::isfinite(powers[i])) {
      Status s(Code::kInvalidValue, "the model gave a non-finite power for row " +
                                        std::to_string(i / cols) + ", component " +
                                        std::string(components[i % cols]));
      write_error(s.message(), out);
      return s;
    }
  }
  out.clear();
  if (form != Form::k2022) {
    out += R"({"powers":{)";
    for (std::size_t c = 0; c < cols; ++c) {
      if (c != 0) out += ',';
      append_json_string(out, components[c]);
      out += ":[";
      for (std::uint32_t r = 0; r < rows; ++r) {
        if (r != 0) out += ',';
        append_number(out, powers[r * cols + c]);
      }
      out += ']';
    }
    out += R"(},"msg":"","core_ratio":)";
    append_number(out, std::isfinite(core_ratio) ? core_ratio : 1.0);
    out += '}';
    return Status::Ok();
  }
  out += R"({"powers":[)";
  for (std::uint32_t r = 0; r < rows; ++r) {
    if (r != 0) out += ',';
    const double total = total_power<float>(components, powers.subspan(r * cols, cols));
    const auto t = static_cast<float>(total);
    if (!std::isfinite(t)) {
      Status s(Code::kInvalidValue, "the total power of row " + std::to_string(r) +
                                        " is not finite");
      write_error(s.message(), out);
      return s;
    }
    append_number(out, t);
  }
  out += R"(],"msg":""})";
  return Status::Ok();
}

}  // namespace estimator::service::kepler
