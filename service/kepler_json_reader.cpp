// SPDX-License-Identifier: Apache-2.0
// The request side of Kepler's JSON protocol: KeplerJsonReader and DocumentEnd (how much
// of a stream is one request). The protocol's rules are in kepler_json.h.
#include "service/kepler_json.h"

#include <algorithm>
#include <array>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstring>
#include <system_error>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "service/utf8.h"

namespace estimator::service::kepler {
namespace {

// The smallest double that rounds to float infinity (FLT_MAX plus half an ulp): anything
// below it in magnitude converts to a finite float.
constexpr double kFloatOverflow = 0x1.ffffffp127;

// The keys the reader knows; a bit each, to detect duplicates and decide the form.
enum Key : unsigned {
  kMetrics = 1u << 0,
  kValues = 1u << 1,
  kOutputType = 1u << 2,
  kSource = 1u << 3,
  kSystemFeatures = 1u << 4,
  kSystemValues = 1u << 5,
  kTrainerName = 1u << 6,
  kFilter = 1u << 7,
  kModelName = 1u << 8,
  kCorePower = 1u << 9,
  kDramPower = 1u << 10,
  kGpuPower = 1u << 11,
  kOtherPower = 1u << 12,
};
// The keys that tell the generations apart (kepler_json.h): each is sent, always, by only
// one generation's client.
constexpr unsigned kV09Keys = kOutputType | kTrainerName;
constexpr unsigned k2022Keys = kModelName;

Form form_of(unsigned seen) {
  if ((seen & kV09Keys) != 0) return Form::kV09;
  if ((seen & k2022Keys) != 0) return Form::k2022;
  return Form::kGeneric;
}

struct KeyName {
  std::string_view name;
  Key key;
};
constexpr KeyName kKeys[] = {
    {"metrics", kMetrics},
    {"values", kValues},
    {"output_type", kOutputType},
    {"source", kSource},
    {"system_features", kSystemFeatures},
    {"system_values", kSystemValues},
    {"trainer_name", kTrainerName},
    {"filter", kFilter},
    {"model_name", kModelName},
    {"core_power", kCorePower},
    {"dram_power", kDramPower},
    {"gpu_power", kGpuPower},
    {"other_power", kOtherPower},
};

bool is_ws(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

// The digits that start the eight bytes at `p`: how many (0 to 8) and their value, from
// one load. ASCII digits xor '0' are the bytes below 10; adding 0x76 to each byte's low
// seven bits sets bit 7 of every other byte without carrying into the next. The digits
// are then shifted to the top (leading zeros below them) and combined in pairs, fours
// and eights by three multiplications.
struct DigitRun {
  std::uint32_t count;
  std::uint32_t value;
};
DigitRun digit_run(const char* p) {
  std::uint64_t chunk;
  std::memcpy(&chunk, p, sizeof chunk);
  if constexpr (std::endian::native == std::endian::big) chunk = __builtin_bswap64(chunk);
  const std::uint64_t x = chunk ^ 0x3030303030303030ULL;
  const std::uint64_t other =
      (((x & 0x7F7F7F7F7F7F7F7FULL) + 0x7676767676767676ULL) | x) & 0x8080808080808080ULL;
  const auto count = static_cast<std::uint32_t>(other == 0 ? 8 : std::countr_zero(other) / 8);
  if (count == 0) return {0, 0};
  std::uint64_t d = x << (8 * (8 - count));       // byte 0 is the most significant digit
  d = d * 10 + (d >> 8);                          // pairs, in bytes 0, 2, 4 and 6
  d = (((d & 0x000000FF000000FFULL) * (100 + (1000000ULL << 32))) +
       (((d >> 16) & 0x000000FF000000FFULL) * (1 + (10000ULL << 32)))) >>
      32;
  return {count, static_cast<std::uint32_t>(d)};
}

void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// A short, printable quote of input bytes for an error message.
std::string excerpt(const char* p, const char* end) {
  std::string s;
  for (; p < end && s.size() < 16; ++p) {
    const auto c = static_cast<unsigned char>(*p);
    s += (c >= 0x20 && c < 0x7F) ? static_cast<char>(c) : '?';
  }
  return s;
}

}  // namespace

// Names the field being read, spelled out only for an error message: `name`, `name[i]`
// or `name[i][j]`.
struct Where {
  Where(std::string_view n) : name(n) {}  // NOLINT: implicit, a plain field name
  Where(const std::string& n) : name(n) {}  // NOLINT
  Where(const char* n) : name(n) {}  // NOLINT
  Where(std::string_view n, long row, long col = -1) : name(n), i(row), j(col) {}
  std::string str() const {
    std::string s(name);
    if (i >= 0) s += "[" + std::to_string(i) + "]";
    if (j >= 0) s += "[" + std::to_string(j) + "]";
    return s;
  }
  std::string_view name;
  long i = -1;
  long j = -1;
};

// One pass over one document; fills the reader's buffers. Each method returns false after
// recording the failure in error_.
class KeplerJsonParser {
 public:
  KeplerJsonParser(KeplerJsonReader& r, std::string_view json)
      : r_(r), begin_(json.data()), p_(json.data()), end_(json.data() + json.size()) {}

  Status run(KeplerRequest& out);

 private:
  using Slice = KeplerJsonReader::Slice;

  bool fail(Code code, std::string message) {
    if (error_.ok()) error_ = Status(code, std::move(message));
    return false;
  }
  bool fail(std::string message) { return fail(Code::kInvalidArgument, std::move(message)); }
  std::string at() const { return " (byte " + std::to_string(p_ - begin_) + ")"; }
  bool truncated(const Where& inside) {
    return fail("the JSON document ends early, inside " + inside.str());
  }

  void skip_ws() {
    while (p_ < end_ && is_ws(*p_)) ++p_;
  }
  // Skips whitespace and tells whether more input follows.
  bool more(const Where& inside) {
    skip_ws();
    return p_ < end_ || truncated(inside);
  }
  bool literal(std::string_view word) {
    if (static_cast<std::size_t>(end_ - p_) < word.size() ||
        std::memcmp(p_, word.data(), word.size()) != 0) {
      return false;
    }
    p_ += word.size();
    return true;
  }
  // `null` in place of a value: the caller treats the field as empty.
  bool take_null() {
    if (p_ < end_ && *p_ == 'n' && literal("null")) return true;
    return false;
  }

  bool string_into(std::string& out, const Where& what);
  bool string_slice(Slice& s, const Where& what);
  bool number_token(const char*& start, const Where& what);
  bool number(float& v, const Where& what);
  bool fast_number(float& v);
  bool take_digits(const char*& q, std::uint64_t& w, int& digits) const;
  bool skip_value(std::size_t depth);
  bool string_list(std::vector<Slice>& out, std::size_t limit, std::string_view what);
  bool string_field(Slice& s, std::string_view what);
  bool number_list(std::vector<float>& out, std::string_view what);
  bool matrix();
  bool separator(char close, std::string_view inside);
  // A list (null reads as empty) of at most `limit` items, each read by read(item, index);
  // `kind` names the items for the syntax error, `unit` for the size error.
  template <typename T, typename Read>
  bool list(std::vector<T>& out, std::size_t limit, std::string_view what, const char* kind,
            const char* unit, Read&& read);

  KeplerJsonReader& r_;
  const char* begin_;
  const char* p_;
  const char* end_;
  Status error_;
  unsigned seen_ = 0;
  std::size_t rows_ = 0;
  std::size_t row_width_ = 0;  // of values[0], checked against metrics at the end
  std::string key_;
  std::string scratch_;
  std::string skip_what_;  // names the unknown key being skipped
  Slice output_type_{}, source_{}, trainer_{}, model_{}, filter_{};
};

bool KeplerJsonParser::string_into(std::string& out, const Where& what) {
  if (p_ >= end_ || *p_ != '"') return fail(what.str() + " is not a string" + at());
  ++p_;
  const std::size_t start_size = out.size();
  const std::size_t limit = r_.limits_.max_string_bytes;
  for (;;) {
    // Plain bytes in bulk; stop at the quote, a backslash, a control or a non-ASCII byte.
    const char* run = p_;
    while (p_ < end_) {
      const auto c = static_cast<unsigned char>(*p_);
      if (c == '"' || c == '\\' || c < 0x20 || c >= 0x80) break;
      ++p_;
    }
    out.append(run, p_);
    if (out.size() - start_size > limit) {
      return fail(Code::kTooLarge, what.str() + " is longer than " +
                                       std::to_string(limit) + " bytes");
    }
    if (p_ >= end_) return truncated(what);
    const auto c = static_cast<unsigned char>(*p_);
    if (c == '"') {
      ++p_;
      return true;
    }
    if (c < 0x20) return fail(what.str() + " holds an unescaped control character" + at());
    if (c >= 0x80) {
      const std::size_t n = utf8_sequence(reinterpret_cast<const unsigned char*>(p_),
                                          reinterpret_cast<const unsigned char*>(end_));
      if (n == 0) return fail(what.str() + " is not valid UTF-8" + at());
      out.append(p_, n);
      p_ += n;
      continue;
    }
    // An escape.
    if (end_ - p_ < 2) return truncated(what);
    const char e = p_[1];
    p_ += 2;
    switch (e) {
      case '"': out += '"'; break;
      case '\\': out += '\\'; break;
      case '/': out += '/'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case 'u': {
        auto hex4 = [&](std::uint32_t& cp) {
          if (end_ - p_ < 4) return false;
          cp = 0;
          for (int i = 0; i < 4; ++i) {
            const char h = p_[i];
            cp <<= 4;
            if (h >= '0' && h <= '9') cp |= static_cast<std::uint32_t>(h - '0');
            else if (h >= 'a' && h <= 'f') cp |= static_cast<std::uint32_t>(h - 'a' + 10);
            else if (h >= 'A' && h <= 'F') cp |= static_cast<std::uint32_t>(h - 'A' + 10);
            else return false;
          }
          p_ += 4;
          return true;
        };
        std::uint32_t cp = 0;
        if (!hex4(cp)) return fail(what.str() + " has a bad \\u escape" + at());
        if (cp >= 0xDC00 && cp <= 0xDFFF) {
          return fail(what.str() + " has a lone low surrogate \\u escape" + at());
        }
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          std::uint32_t low = 0;
          if (!literal("\\u") || !hex4(low) || low < 0xDC00 || low > 0xDFFF) {
            return fail(what.str() + " has a high surrogate \\u escape not followed by "
                        "a low one" + at());
          }
          cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
        }
        append_utf8(out, cp);
        break;
      }
      default:
        return fail(what.str() + " has an invalid escape \\" + excerpt(p_ - 1, p_) + at());
    }
  }
}

bool KeplerJsonParser::string_slice(Slice& s, const Where& what) {
  s.offset = r_.arena_.size();
  if (!string_into(r_.arena_, what)) return false;
  s.size = r_.arena_.size() - s.offset;
  return true;
}

// Checks the RFC 8259 number grammar from p_; `start` is the token's first byte.
bool KeplerJsonParser::number_token(const char*& start, const Where& what) {
  start = p_;
  if (p_ < end_ && *p_ == '-') ++p_;
  if (p_ >= end_) return truncated(what);
  if (*p_ == '0') {
    ++p_;
  } else if (*p_ >= '1' && *p_ <= '9') {
    while (p_ < end_ && is_digit(*p_)) ++p_;
  } else {
    p_ = start;
    const char* stop = p_;
    while (stop < end_ && *stop != ',' && *stop != ']' && *stop != '}' && !is_ws(*stop)) ++stop;
    return fail(what.str() + " is not a number: '" + excerpt(p_, stop) + "'" + at());
  }
  if (p_ < end_ && *p_ == '.') {
    ++p_;
    if (p_ >= end_) return truncated(what);
    if (!is_digit(*p_)) return fail(what.str() + " has no digit after the decimal point" + at());
    while (p_ < end_ && is_digit(*p_)) ++p_;
  }
  if (p_ < end_ && (*p_ == 'e' || *p_ == 'E')) {
    ++p_;
    if (p_ < end_ && (*p_ == '+' || *p_ == '-')) ++p_;
    if (p_ >= end_) return truncated(what);
    if (!is_digit(*p_)) return fail(what.str() + " has no digit in its exponent" + at());
    while (p_ < end_ && is_digit(*p_)) ++p_;
  }
  if (static_cast<std::size_t>(p_ - start) > r_.limits_.max_number_chars) {
    return fail(Code::kTooLarge, what.str() + " is a number of more than " +
                                     std::to_string(r_.limits_.max_number_chars) + " characters");
  }
  return true;
}

// Appends the run of digits at q to w, eight bytes at a time while eight remain (a byte
// loop's exit, at a length the branch predictor cannot guess, cost more than the digits).
// False when w would pass 19 digits.
inline bool KeplerJsonParser::take_digits(const char*& q, std::uint64_t& w, int& digits) const {
  static constexpr std::uint64_t kScale[] = {1,      10,      100,      1000,     10000,
                                             100000, 1000000, 10000000, 100000000};
  while (end_ - q >= 8) {
    const DigitRun run = digit_run(q);
    if (digits + static_cast<int>(run.count) > 19) return false;
    w = w * kScale[run.count] + run.value;
    digits += static_cast<int>(run.count);
    q += run.count;
    if (run.count < 8) return true;
  }
  for (; q < end_ && is_digit(*q); ++q) {
    if (++digits > 19) return false;
    w = w * 10 + static_cast<std::uint64_t>(*q - '0');
  }
  return true;
}

// Decimal numbers of at most 19 digits whose mantissa fits 53 bits and whose power of ten
// is within 10^22 are read in one pass without std::from_chars (most of Kepler's rates):
// mantissa and power of ten are then both exact doubles, so one multiplication or division
// rounds correctly (Clinger's fast path) and gives the same double from_chars would, and
// so the same float. Anything else, and every malformed number, takes the strict path
// below.
inline bool KeplerJsonParser::fast_number(float& v) {
  static constexpr double kPow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                      1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                      1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
  static constexpr double kInvPow10[] = {1e0,   1e-1,  1e-2,  1e-3,  1e-4,  1e-5,
                                         1e-6,  1e-7,  1e-8,  1e-9,  1e-10, 1e-11,
                                         1e-12, 1e-13, 1e-14, 1e-15, 1e-16, 1e-17,
                                         1e-18, 1e-19, 1e-20, 1e-21, 1e-22};
  const char* q = p_;
  const bool negative = q < end_ && *q == '-';
  if (negative) ++q;
  if (q >= end_ || !is_digit(*q)) return false;
  std::uint64_t w = 0;
  int digits = 0;  // digits taken into w
  int exp10 = 0;
  if (*q == '0') {
    ++q;  // a leading zero stands alone ("01" is not JSON: the caller sees the '1')
  } else if (!take_digits(q, w, digits)) {
    return false;
  }
  if (q < end_ && *q == '.') {
    ++q;
    const int before = digits;
    if (!take_digits(q, w, digits) || digits == before) return false;
    exp10 = before - digits;
  }
  if (q < end_ && (*q == 'e' || *q == 'E')) {
    ++q;
    bool neg_exp = false;
    if (q < end_ && (*q == '+' || *q == '-')) neg_exp = *q++ == '-';
    if (q >= end_ || !is_digit(*q)) return false;
    int e = 0;
    for (; q < end_ && is_digit(*q); ++q) {
      if (e > 1000) return false;
      e = e * 10 + (*q - '0');
    }
    exp10 += neg_exp ? -e : e;
  }
  if (static_cast<std::size_t>(q - p_) > r_.limits_.max_number_chars) return false;
  double d = 0;
  if (w != 0) {
    if (w > (std::uint64_t{1} << 53) || exp10 < -22 || exp10 > 22) return false;
    d = static_cast<double>(w);
    if (exp10 >= 0) {
      d *= kPow10[exp10];
    } else {
      // A multiplication by the nearest double of 10^-k is within 3 units of the last
      // place of the quotient, and the cast to float drops the last 29 bits: it rounds
      // as the exact quotient would unless those bits are within a few units of half-way
      // (then divide). A division costs several times a multiplication here.
      const double approx = d * kInvPow10[-exp10];
      const std::uint64_t dropped = std::bit_cast<std::uint64_t>(approx) & 0x1FFFFFFFU;
      d = dropped - (0x10000000U - 8) < 16 ? d / kPow10[-exp10] : approx;
    }
  }
  v = static_cast<float>(negative ? -d : d);
  p_ = q;
  return true;
}

bool KeplerJsonParser::number(float& v, const Where& what) {
  if (fast_number(v)) return true;
  const char* start = nullptr;
  if (!number_token(start, what)) return false;
  double d = 0;
  const auto [ptr, ec] = std::from_chars(start, p_, d);
  if (ec == std::errc::result_out_of_range) {
    // Too large or too small for a double: decide which from the decimal magnitude
    // (digits before the point, or minus the zeros after "0.", plus the exponent).
    const char* q = start;
    const bool negative = *q == '-';
    if (negative) ++q;
    long magnitude = 0;
    if (*q == '0') {
      ++q;
      if (q < p_ && *q == '.') {
        for (++q; q < p_ && *q == '0'; ++q) --magnitude;
      }
    } else {
      for (; q < p_ && is_digit(*q); ++q) ++magnitude;
    }
    while (q < p_ && *q != 'e' && *q != 'E') ++q;
    long exponent = 0;
    if (q < p_) {
      ++q;
      const bool neg_exp = *q == '-';
      if (*q == '+' || *q == '-') ++q;
      for (; q < p_ && exponent < 100'000'000; ++q) exponent = exponent * 10 + (*q - '0');
      if (neg_exp) exponent = -exponent;
    }
    if (magnitude + exponent > 0) {
      return fail(Code::kInvalidValue, what.str() + " = " + excerpt(start, p_) +
                                           " is outside the float32 range");
    }
    v = negative ? -0.0f : 0.0f;
    return true;
  }
  if (ec != std::errc() || ptr != p_) {
    return fail(what.str() + " is not a number: '" + excerpt(start, p_) + "'");
  }
  if (d >= kFloatOverflow || d <= -kFloatOverflow) {
    return fail(Code::kInvalidValue,
                what.str() + " = " + excerpt(start, p_) + " is outside the float32 range");
  }
  v = static_cast<float>(d);
  return true;
}

// Skips any JSON value (an unknown key's), nested at most max_depth deep in all.
bool KeplerJsonParser::skip_value(std::size_t depth) {
  const Where what(skip_what_);
  if (!more(what)) return false;
  const char c = *p_;
  if (c == '"') {
    scratch_.clear();
    return string_into(scratch_, what);
  }
  if (c == '-' || is_digit(c)) {
    const char* start = nullptr;
    return number_token(start, what);
  }
  if (literal("true") || literal("false") || literal("null")) return true;
  if (c != '[' && c != '{') return fail(what.str() + " is not JSON: '" + excerpt(p_, end_) + "'" + at());
  if (depth + 1 > r_.limits_.max_depth) {
    return fail(Code::kTooLarge, "the document nests deeper than " +
                                     std::to_string(r_.limits_.max_depth) + " levels" + at());
  }
  const char close = c == '[' ? ']' : '}';
  ++p_;
  if (!more(what)) return false;
  if (*p_ == close) {
    ++p_;
    return true;
  }
  for (;;) {
    if (close == '}') {
      scratch_.clear();
      if (!string_into(scratch_, "a key inside " + what.str())) return false;
      if (!more(what)) return false;
      if (*p_ != ':') return fail("expected ':' after a key inside " + what.str() + at());
      ++p_;
    }
    if (!skip_value(depth + 1)) return false;
    if (!more(what)) return false;
    if (*p_ == ',') {
      ++p_;
      continue;
    }
    if (*p_ == close) {
      ++p_;
      return true;
    }
    return fail(std::string("expected ',' or '") + close + "' inside " + what.str() + at());
  }
}

// After an element of a list: true when the next byte is ',' or `close` (not consumed).
bool KeplerJsonParser::separator(char close, std::string_view inside) {
  if (!more(inside)) return false;
  if (*p_ == ',' || *p_ == close) return true;
  return fail(std::string("expected ',' or '") + close + "' in " + std::string(inside) + ", found '" +
              excerpt(p_, end_) + "'" + at());
}

template <typename T, typename Read>
bool KeplerJsonParser::list(std::vector<T>& out, std::size_t limit, std::string_view what,
                            const char* kind, const char* unit, Read&& read) {
  out.clear();
  if (!more(what)) return false;
  if (take_null()) return true;
  if (*p_ != '[') return fail(std::string(what) + " must be a list of " + kind + at());
  ++p_;
  if (!more(what)) return false;
  if (*p_ == ']') {
    ++p_;
    return true;
  }
  for (;;) {
    if (out.size() == limit) {
      return fail(Code::kTooLarge, std::string(what) + " has more than " +
                                       std::to_string(limit) + " " + unit);
    }
    T v{};
    if (!read(v, static_cast<long>(out.size()))) return false;
    out.push_back(v);
    if (!separator(']', what)) return false;
    if (*p_++ == ']') return true;
  }
}

bool KeplerJsonParser::string_list(std::vector<Slice>& out, std::size_t limit,
                                   std::string_view what) {
  return list(out, limit, what, "strings", "entries", [&](Slice& s, long i) {
    const Where item(what, i);
    return more(item) && string_slice(s, item);
  });
}

bool KeplerJsonParser::string_field(Slice& s, std::string_view what) {
  s = {};
  if (!more(what)) return false;
  if (take_null()) return true;
  return string_slice(s, what);
}

bool KeplerJsonParser::number_list(std::vector<float>& out, std::string_view what) {
  return list(out, r_.limits_.max_packages, what, "numbers", "values", [&](float& v, long i) {
    return more(what) && number(v, Where(what, i));
  });
}

// `values`: a list of rows, each a list of numbers. Rows are checked against the metrics
// when those came first (as Kepler sends them), else against the first row, and the
// width against the metrics once the whole document is read.
bool KeplerJsonParser::matrix() {
  auto& vals = r_.values_;
  vals.clear();
  rows_ = 0;
  row_width_ = 0;
  if (!more("values")) return false;
  if (take_null()) return true;
  if (*p_ != '[') return fail("values must be a list of rows (lists of numbers)" + at());
  ++p_;
  if (!more("values")) return false;
  if (*p_ == ']') {
    ++p_;
    return true;
  }
  const bool metrics_known = (seen_ & kMetrics) != 0;
  const std::size_t expected = r_.metric_slices_.size();
  for (;;) {
    if (rows_ == r_.limits_.max_rows) {
      return fail(Code::kTooLarge,
                  "values has more than " + std::to_string(r_.limits_.max_rows) + " rows");
    }
    if (!more("values")) return false;
    if (*p_ != '[') {
      return fail("values[" + std::to_string(rows_) + "] is not a list of numbers" + at());
    }
    ++p_;
    const std::size_t row_start = vals.size();
    skip_ws();
    if (p_ < end_ && *p_ == ']') {
      ++p_;
    } else {
      // The hot loop: one number per iteration; the field's name is only spelled out
      // when it is wrong.
      for (;;) {
        skip_ws();
        float v = 0;
        // The one-pass reader inline first; number() retries it and explains a failure.
        if (!fast_number(v) && !number(v, Where{"values", static_cast<long>(rows_),
                                                static_cast<long>(vals.size() - row_start)})) {
          return false;
        }
        vals.push_back(v);
        skip_ws();
        if (p_ >= end_) return truncated("values[" + std::to_string(rows_) + "]");
        if (*p_ == ',') {
          ++p_;
          continue;
        }
        if (*p_ == ']') {
          ++p_;
          break;
        }
        return fail("expected ',' or ']' in values[" + std::to_string(rows_) + "], found '" +
                    excerpt(p_, end_) + "'" + at());
      }
    }
    const std::size_t width = vals.size() - row_start;
    if (metrics_known && width != expected) {
      return fail("values[" + std::to_string(rows_) + "] has " + std::to_string(width) +
                  " numbers but metrics names " + std::to_string(expected));
    }
    if (rows_ == 0) {
      row_width_ = width;
    } else if (width != row_width_) {
      return fail("values[" + std::to_string(rows_) + "] has " + std::to_string(width) +
                  " numbers but values[0] has " + std::to_string(row_width_));
    }
    ++rows_;
    if (!separator(']', "values")) return false;
    if (*p_++ == ']') return true;
  }
}

Status KeplerJsonParser::run(KeplerRequest& out) {
  r_.arena_.clear();
  r_.metric_slices_.clear();
  r_.feature_slices_.clear();
  r_.value_slices_.clear();
  r_.values_.clear();
  for (auto& p : r_.powers_) p.clear();
  out = KeplerRequest{};

  skip_ws();
  if (p_ >= end_) {
    fail("empty request: expected a JSON object");
  } else if (*p_ != '{') {
    fail("a request must be a JSON object, found '" + excerpt(p_, end_) + "'" + at());
  } else {
    ++p_;
    bool done = false;
    if (!more("the request object")) {
      done = true;
    } else if (*p_ == '}') {
      ++p_;
      done = true;
    }
    while (!done) {
      if (!more("the request object")) break;
      key_.clear();
      if (!string_into(key_, "a key of the request object")) break;
      if (!more("the request object")) break;
      if (*p_ != ':') {
        fail("expected ':' after key '" + key_ + "'" + at());
        break;
      }
      ++p_;
      unsigned key = 0;
      for (const KeyName& k : kKeys) {
        if (k.name == key_) key = k.key;
      }
      if (key != 0 && (seen_ & key) != 0) {
        fail("duplicate key '" + key_ + "'");
        break;
      }
      seen_ |= key;
      bool ok = true;
      switch (key) {
        case kMetrics: ok = string_list(r_.metric_slices_, r_.limits_.max_columns, "metrics"); break;
        case kValues: ok = matrix(); break;
        case kOutputType: ok = string_field(output_type_, "output_type"); break;
        case kSource: ok = string_field(source_, "source"); break;
        case kTrainerName: ok = string_field(trainer_, "trainer_name"); break;
        case kModelName: ok = string_field(model_, "model_name"); break;
        case kFilter: ok = string_field(filter_, "filter"); break;
        case kSystemFeatures:
          ok = string_list(r_.feature_slices_, r_.limits_.max_system_values, "system_features");
          break;
        case kSystemValues:
          ok = string_list(r_.value_slices_, r_.limits_.max_system_values, "system_values");
          break;
        case kCorePower: ok = number_list(r_.powers_[0], "core_power"); break;
        case kDramPower: ok = number_list(r_.powers_[1], "dram_power"); break;
        case kGpuPower: ok = number_list(r_.powers_[2], "gpu_power"); break;
        case kOtherPower: ok = number_list(r_.powers_[3], "other_power"); break;
        default:
          skip_what_ = "the value of unknown key '" + key_ + "'";
          ok = skip_value(1);
          break;
      }
      if (!ok) break;
      if (!more("the request object")) break;
      if (*p_ == ',') {
        ++p_;
        continue;
      }
      if (*p_ == '}') {
        ++p_;
        done = true;
        break;
      }
      fail("expected ',' or '}' after the value of '" + key_ + "', found '" + excerpt(p_, end_) +
           "'" + at());
      break;
    }
    if (done) {
      skip_ws();
      if (p_ != end_) fail("unexpected data after the JSON document" + at());
    }
  }
  out.form = form_of(seen_);
  if (!error_.ok()) return error_;

  if ((seen_ & kMetrics) == 0) return Status(Code::kInvalidArgument, "missing metrics");
  if ((seen_ & kValues) == 0) return Status(Code::kInvalidArgument, "missing values");
  const std::size_t cols = r_.metric_slices_.size();
  if (rows_ > 0 && row_width_ != cols) {
    return Status(Code::kInvalidArgument, "values[0] has " + std::to_string(row_width_) +
                                              " numbers but metrics names " + std::to_string(cols));
  }
  if (r_.feature_slices_.size() != r_.value_slices_.size()) {
    return Status(Code::kInvalidArgument,
                  "system_values has " + std::to_string(r_.value_slices_.size()) +
                      " strings but system_features names " +
                      std::to_string(r_.feature_slices_.size()));
  }

  // The arena no longer grows: views into it are stable from here.
  const std::string& a = r_.arena_;
  auto view = [&a](const Slice& s) { return std::string_view(a).substr(s.offset, s.size); };
  auto views = [&](const std::vector<Slice>& from, std::vector<std::string_view>& to) {
    to.clear();
    for (const Slice& s : from) to.push_back(view(s));
  };
  views(r_.metric_slices_, r_.metrics_);
  views(r_.feature_slices_, r_.system_features_);
  views(r_.value_slices_, r_.system_values_);
  out.metrics = r_.metrics_;
  out.values = r_.values_;
  out.rows = static_cast<std::uint32_t>(rows_);
  out.cols = static_cast<std::uint32_t>(cols);
  out.output_type = view(output_type_);
  out.source = view(source_);
  out.trainer_name = view(trainer_);
  out.model_name = view(model_);
  out.filter = view(filter_);
  out.system_features = r_.system_features_;
  out.system_values = r_.system_values_;
  out.core_power = r_.powers_[0];
  out.dram_power = r_.powers_[1];
  out.gpu_power = r_.powers_[2];
  out.other_power = r_.powers_[3];
  return Status::Ok();
}

Status KeplerJsonReader::parse(std::string_view json, KeplerRequest& out) {
  KeplerJsonParser parser(*this, json);
  return parser.run(out);
}

namespace {

// Bytes that can change DocumentEnd's state: quotes, the escape and the brackets.
constexpr std::array<bool, 256> kStructural = [] {
  std::array<bool, 256> t{};
  for (const char c : {'"', '\\', '{', '}', '[', ']'}) t[static_cast<unsigned char>(c)] = true;
  return t;
}();

// The first byte at or after p that can change DocumentEnd's state (end if none): sixteen
// bytes per step where SSE2 is there (every x86-64), a table lookup per byte elsewhere.
// Brackets are found by setting bit 5 ('[' becomes '{', ']' becomes '}').
const char* skip_plain(const char* p, const char* end) {
#if defined(__SSE2__)
  const __m128i open = _mm_set1_epi8('{');
  const __m128i close = _mm_set1_epi8('}');
  const __m128i quote = _mm_set1_epi8('"');
  const __m128i backslash = _mm_set1_epi8('\\');
  const __m128i bit5 = _mm_set1_epi8(0x20);
  for (; end - p >= 16; p += 16) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m128i folded = _mm_or_si128(v, bit5);
    const __m128i hit = _mm_or_si128(
        _mm_or_si128(_mm_cmpeq_epi8(folded, open), _mm_cmpeq_epi8(folded, close)),
        _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)));
    if (const int mask = _mm_movemask_epi8(hit); mask != 0) {
      return p + std::countr_zero(static_cast<unsigned>(mask));
    }
  }
#endif
  while (p < end && !kStructural[static_cast<unsigned char>(*p)]) ++p;
  return p;
}

}  // namespace

std::size_t DocumentEnd::feed(std::string_view bytes) {
  // The state lives in locals for the scan (members would be reloaded after every byte
  // store the compiler cannot prove unrelated) and is saved on the way out.
  std::uint64_t objects = objects_;
  int depth = depth_;
  bool in_string = in_string_;
  bool escape = escape_;
  const char* const begin = bytes.data();
  const char* const end = begin + bytes.size();
  const char* p = begin;
  // Saves the state; returns the bytes up to `last` (null: the document goes on).
  const auto done = [&](const char* last) {
    objects_ = objects;
    depth_ = depth;
    in_string_ = in_string;
    escape_ = escape;
    return last == nullptr ? 0 : static_cast<std::size_t>(last + 1 - begin);
  };
  if (!started_) {
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) ++p;
    if (p == end) return 0;
    started_ = true;
    if (*p != '{' && *p != '[') return done(p);
  }
  for (; p < end; ++p) {
    if (escape) {  // the byte after a backslash, whatever it is
      escape = false;
      continue;
    }
    p = skip_plain(p, end);
    if (p == end) break;
    const char c = *p;
    if (in_string) {
      if (c == '\\') {
        escape = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (depth == 64) return done(p);
      objects = (objects << 1) | (c == '{' ? 1U : 0U);
      ++depth;
    } else if (c == '}' || c == ']') {
      if ((objects & 1U) != (c == '}' ? 1U : 0U)) return done(p);
      objects >>= 1;
      if (--depth == 0) return done(p);
    }
    // a backslash outside a string is invalid JSON; the parser reports it
  }
  return done(nullptr);
}

}  // namespace estimator::service::kepler
