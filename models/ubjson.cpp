// SPDX-License-Identifier: Apache-2.0
#include "models/ubjson.h"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <limits>
#include <new>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace estimator::models::ubjson {

namespace {

using json::Json;

// DOM costs, estimated from the types' sizes as json_fields.cpp does for JSON.
constexpr std::size_t kValueCost = sizeof(Json);
constexpr std::size_t kArrayCost = sizeof(Json::array_t);
constexpr std::size_t kObjectCost = sizeof(Json::object_t);
constexpr std::size_t kMemberCost = sizeof(std::pair<const std::string, Json>) - sizeof(Json);
constexpr std::size_t string_bytes(std::size_t n) { return n > 15 ? n + 1 : 0; }

// Bytes of payload after the marker of a fixed-size type; -1 for other markers.
constexpr int payload_size(char marker) {
  switch (marker) {
    case 'Z': case 'T': case 'F': return 0;
    case 'i': case 'U': case 'C': return 1;
    case 'I': return 2;
    case 'l': case 'd': return 4;
    case 'L': case 'D': return 8;
    default: return -1;
  }
}

bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t len = 0;
    std::uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    }
    if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (s.size() - i < len) return false;
    for (std::size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    // Overlong forms, surrogates and code points past U+10FFFF are not UTF-8 (nlohmann's
    // dump() would throw on them later).
    const std::uint32_t min_cp[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

class Reader {
 public:
  Reader(std::string_view in, std::string_view file)
      : in_(in),
        file_(file),
        budget_(kMaxDomBytesPerByte * in.size() + json::kMinDomBudgetBytes) {}

  Result<Json> run() {
    Json doc;
    char m = 0;
    if (!next_marker(m) || !value(m, doc, 0)) return std::move(error_);
    if (pos_ != in_.size()) {
      path_.clear();
      fail(std::to_string(in_.size() - pos_) + " bytes follow the document");
      return std::move(error_);
    }
    return doc;
  }

 private:
  struct Step {
    std::string_view key;  // into in_; the current member of an object
    std::size_t index;     // the current element of an array
    bool in_object;
  };

  bool fail(const std::string& why, std::size_t at) {
    std::string msg(file_);
    msg += ": not valid UBJSON";
    if (const std::string p = path(); !p.empty()) msg += " (in " + p + ")";
    msg += ": " + why + " at byte " + std::to_string(at);
    error_ = Status(Code::kInvalidArgument, std::move(msg));
    return false;
  }
  bool fail(const std::string& why) { return fail(why, pos_); }

  bool refuse(const std::string& why) {
    std::string msg(file_);
    msg += ": refused";
    if (const std::string p = path(); !p.empty()) msg += " (in " + p + ")";
    msg += ": " + why;
    error_ = Status(Code::kTooLarge, std::move(msg));
    return false;
  }

  std::string path() const {
    std::string p;
    for (const Step& s : path_) {
      if (s.in_object) {
        if (!p.empty()) p += '.';
        p += s.key;
      } else {
        p += '[' + std::to_string(s.index) + ']';
      }
    }
    return p;
  }

  bool charge(std::size_t cost) {
    if (cost <= budget_ - cost_) {
      cost_ += cost;
      return true;
    }
    return refuse("its parsed form would take more than " + std::to_string(budget_ >> 20) +
                  " MiB (" + std::to_string(kMaxDomBytesPerByte) +
                  " times the document's size, plus " +
                  std::to_string(json::kMinDomBudgetBytes >> 20) +
                  " MiB): too many values for its size");
  }

  bool take(std::size_t n, const char*& p) {
    if (in_.size() - pos_ < n) {
      return fail("truncated: " + std::to_string(n) + " more bytes needed, " +
                  std::to_string(in_.size() - pos_) + " left");
    }
    p = in_.data() + pos_;
    pos_ += n;
    return true;
  }

  bool byte(char& c) {
    const char* p = nullptr;
    if (!take(1, p)) return false;
    c = *p;
    return true;
  }

  // The next marker, skipping no-ops (N), which the format allows between values.
  bool next_marker(char& c) {
    do {
      if (!byte(c)) return false;
    } while (c == 'N');
    return true;
  }

  template <typename U>
  bool big_endian(U& out) {
    const char* p = nullptr;
    if (!take(sizeof(U), p)) return false;
    U v = 0;
    for (std::size_t k = 0; k < sizeof(U); ++k) {
      v = static_cast<U>((v << 8) | static_cast<unsigned char>(p[k]));
    }
    out = v;
    return true;
  }

  // The payload of an integer marker; false (with the error set) for any other marker.
  bool integer(char marker, std::int64_t& out) {
    switch (marker) {
      case 'i': {
        std::uint8_t v = 0;
        if (!big_endian(v)) return false;
        out = static_cast<std::int8_t>(v);
        return true;
      }
      case 'U': {
        std::uint8_t v = 0;
        if (!big_endian(v)) return false;
        out = v;
        return true;
      }
      case 'I': {
        std::uint16_t v = 0;
        if (!big_endian(v)) return false;
        out = static_cast<std::int16_t>(v);
        return true;
      }
      case 'l': {
        std::uint32_t v = 0;
        if (!big_endian(v)) return false;
        out = static_cast<std::int32_t>(v);
        return true;
      }
      case 'L': {
        std::uint64_t v = 0;
        if (!big_endian(v)) return false;
        out = static_cast<std::int64_t>(v);
        return true;
      }
      default:
        return fail(std::string("expected an integer type (i U I l L), got ") + describe(marker),
                    pos_ - 1);
    }
  }

  // A length or count: an integer marker and value, not negative.
  bool count(std::int64_t& out) {
    char m = 0;
    if (!byte(m) || !integer(m, out)) return false;
    if (out < 0) return fail("negative length " + std::to_string(out));
    return true;
  }

  static std::string describe(char marker) {
    const auto u = static_cast<unsigned char>(marker);
    if (u >= 0x20 && u < 0x7F) return std::string("'") + marker + "'";
    static constexpr char kHex[] = "0123456789abcdef";
    return std::string("byte 0x") + kHex[u >> 4] + kHex[u & 15];
  }

  // `n` bytes of text that must be UTF-8.
  bool text(std::int64_t n, std::string_view& out) {
    const char* p = nullptr;
    if (static_cast<std::uint64_t>(n) > in_.size() - pos_) {
      return fail("truncated: a string of " + std::to_string(n) + " bytes but " +
                  std::to_string(in_.size() - pos_) + " left");
    }
    const std::size_t at = pos_;
    if (!take(static_cast<std::size_t>(n), p)) return false;
    out = std::string_view(p, static_cast<std::size_t>(n));
    if (!valid_utf8(out)) return fail("string is not valid UTF-8", at);
    return true;
  }

  // The payload of a value of type `marker` (already read) into `out`.
  bool value(char marker, Json& out, std::size_t depth) {
    if (!charge(kValueCost)) return false;
    switch (marker) {
      case 'Z':
        out = nullptr;
        return true;
      case 'T':
        out = true;
        return true;
      case 'F':
        out = false;
        return true;
      case 'i': case 'U': case 'I': case 'l': case 'L': {
        std::int64_t v = 0;
        if (!integer(marker, v)) return false;
        out = v;
        return true;
      }
      case 'd': {
        std::uint32_t bits = 0;
        if (!big_endian(bits)) return false;
        out = static_cast<double>(std::bit_cast<float>(bits));
        return true;
      }
      case 'D': {
        std::uint64_t bits = 0;
        if (!big_endian(bits)) return false;
        out = std::bit_cast<double>(bits);
        return true;
      }
      case 'C': {
        char c = 0;
        const std::size_t at = pos_;
        if (!byte(c)) return false;
        if (static_cast<unsigned char>(c) > 0x7F) return fail("char is not ASCII", at);
        out = std::string(1, c);
        return true;
      }
      case 'S': {
        std::int64_t n = 0;
        std::string_view s;
        if (!count(n) || !text(n, s)) return false;
        if (!charge(sizeof(std::string) + string_bytes(s.size()))) return false;
        out = std::string(s);
        return true;
      }
      case 'H': return high_precision(out);
      case '[': return array(out, depth + 1);
      case '{': return object(out, depth + 1);
      default:
        return fail("unknown type marker " + describe(marker), pos_ - 1);
    }
  }

  // A number written as text: an integer when it is one that fits int64, else a double.
  bool high_precision(Json& out) {
    std::int64_t n = 0;
    std::string_view s;
    const std::size_t at = pos_;
    if (!count(n) || !text(n, s)) return false;
    const char* end = s.data() + s.size();
    std::int64_t i = 0;
    if (auto [p, ec] = std::from_chars(s.data(), end, i); ec == std::errc() && p == end) {
      out = i;
      return true;
    }
    double d = 0;
    if (auto [p, ec] = std::from_chars(s.data(), end, d); ec == std::errc() && p == end) {
      out = d;
      return true;
    }
    return fail("high-precision number \"" + std::string(s.substr(0, 40)) +
                    "\" is not a number that fits a double",
                at);
  }

  // After '[' or '{': the optional `$<type>` and `#<count>`. count < 0: no count given.
  bool header(char& type, std::int64_t& n) {
    type = 0;
    n = -1;
    if (pos_ < in_.size() && in_[pos_] == '$') {
      ++pos_;
      if (!byte(type)) return false;
      if (type == '[' || type == '{' || type == 'N' || type == '$' || type == '#' ||
          (payload_size(type) < 0 && type != 'S' && type != 'H')) {
        return fail("container element type " + describe(type) + " is not a value type",
                    pos_ - 1);
      }
      if (pos_ >= in_.size() || in_[pos_] != '#') {
        return fail("a typed container ($) must give its count (#)");
      }
    }
    if (pos_ < in_.size() && in_[pos_] == '#') {
      ++pos_;
      if (!count(n)) return false;
      // Every element takes at least one byte unless its type has no payload; those are
      // bounded by the budget below.
      const int size = type != 0 ? payload_size(type) : 1;
      const std::size_t left = in_.size() - pos_;
      if (size > 0 && static_cast<std::uint64_t>(n) > left / static_cast<std::size_t>(size)) {
        return fail("count " + std::to_string(n) + " needs more bytes than the " +
                    std::to_string(left) + " left");
      }
      if (static_cast<std::uint64_t>(n) > (budget_ - cost_) / kValueCost) {
        return charge(static_cast<std::size_t>(-1));  // reports the limit
      }
    }
    return true;
  }

  bool depth_ok(std::size_t depth) {
    if (depth <= json::kMaxDepth) return true;
    return refuse("nests deeper than " + std::to_string(json::kMaxDepth) + " levels");
  }

  bool array(Json& out, std::size_t depth) {
    if (!depth_ok(depth) || !charge(kArrayCost)) return false;
    char type = 0;
    std::int64_t n = -1;
    if (!header(type, n)) return false;
    out = Json::array();
    auto& elements = out.get_ref<Json::array_t&>();
    path_.push_back(Step{{}, 0, false});
    if (n >= 0) {
      elements.reserve(static_cast<std::size_t>(n));
      for (std::int64_t k = 0; k < n; ++k) {
        path_.back().index = static_cast<std::size_t>(k);
        char m = type;
        if (m == 0 && !byte(m)) return false;
        if (m == 'N') return fail("no-op (N) in a counted container", pos_ - 1);
        elements.emplace_back();
        if (!value(m, elements.back(), depth)) return false;
      }
    } else {
      for (std::size_t k = 0;; ++k) {
        path_.back().index = k;
        char m = 0;
        if (!next_marker(m)) return false;
        if (m == ']') break;
        elements.emplace_back();
        if (!value(m, elements.back(), depth)) return false;
      }
    }
    path_.pop_back();
    return true;
  }

  bool object(Json& out, std::size_t depth) {
    if (!depth_ok(depth) || !charge(kObjectCost)) return false;
    char type = 0;
    std::int64_t n = -1;
    if (!header(type, n)) return false;
    out = Json::object();
    // Members are appended to ordered_map's vector directly: its emplace searches the
    // members linearly for the key, quadratic in a hostile object's size. Repeats are
    // found once at the end, sorted.
    auto& members = static_cast<Json::object_t::Container&>(out.get_ref<Json::object_t&>());
    path_.push_back(Step{{}, 0, true});
    const auto member = [&](bool& done) {
      // A key is a string without its S marker: a length, then the bytes.
      std::int64_t len = 0;
      char m = 0;
      if (!next_marker(m)) return false;
      if (n < 0 && m == '}') {
        done = true;
        return true;
      }
      if (!integer(m, len)) return false;
      if (len < 0) return fail("negative key length " + std::to_string(len));
      std::string_view key;
      if (!text(len, key)) return false;
      path_.back().key = key;
      if (!charge(kMemberCost + string_bytes(key.size()))) return false;
      char vm = type;
      if (vm == 0 && !byte(vm)) return false;
      if (vm == 'N') return fail("no-op (N) where a member's value belongs", pos_ - 1);
      members.emplace_back(std::string(key), Json());
      return value(vm, members.back().second, depth);
    };
    bool done = false;
    if (n >= 0) {
      members.reserve(static_cast<std::size_t>(n));
      for (std::int64_t k = 0; k < n; ++k) {
        if (!member(done)) return false;
      }
    } else {
      while (!done) {
        if (!member(done)) return false;
      }
    }
    std::vector<std::string_view> keys;
    keys.reserve(members.size());
    for (const auto& [k, v] : members) keys.emplace_back(k);
    std::sort(keys.begin(), keys.end());
    if (const auto dup = std::adjacent_find(keys.begin(), keys.end()); dup != keys.end()) {
      path_.pop_back();
      return fail("key \"" + std::string(*dup) + "\" appears twice in one object");
    }
    path_.pop_back();
    return true;
  }

  std::string_view in_;
  std::string_view file_;
  std::size_t pos_ = 0;
  std::size_t budget_;
  std::size_t cost_ = 0;
  std::vector<Step> path_;
  Status error_ = Status::Ok();
};

}  // namespace

Result<Json> parse(std::string_view bytes, std::string_view file) {
  try {
    return Reader(bytes, file).run();
  } catch (const std::bad_alloc&) {
    return Status(Code::kResourceExhausted, std::string(file) + ": out of memory parsing " +
                                                std::to_string(bytes.size()) +
                                                " bytes of UBJSON");
  }
}

}  // namespace estimator::models::ubjson
