// SPDX-License-Identifier: Apache-2.0
// Kepler's JSON messages (KEPLER.md section 4): a purpose-built reader for the requests of
// both generations and the writers of their replies.
//
// Why not a general JSON library: the socket endpoint must stay within a small multiple
// of a binary round trip, and a request is almost entirely numbers. This reader makes one
// pass, keeps its buffers between calls (no allocation per request once warm), converts
// numbers with std::from_chars and trusts no byte: nesting depth, string, number and list
// lengths are bounded, the syntax is strict RFC 8259 (no comments, no trailing commas, no
// NaN or Infinity, valid UTF-8 only) and every error names the field that was wrong.
//
// Which generation a request is (it decides the shape of the reply and the reply size the
// client reads) is told by the keys only one generation's client always sends, never by
// `filter` (Kepler v0.3, a 2022 client, sends "filter" too):
// - `output_type` or `trainer_name` (Kepler v0.6..v0.9 send both, always): kV09, also
//   when `model_name` is there as well (a v0.6+ client naming a model);
// - otherwise `model_name` (the 2022 prototype and Kepler v0.3 send it, always): k2022;
// - neither: kGeneric, a client that is neither of Kepler's (the v0.9 reply shape, no
//   known read size).
// Every key is honoured whatever the form (a v0.9 request may name a model_name, a 2022
// one a source).
//
// Other rules: `metrics` and `values` are required; `null` for any field reads as an empty
// list or string (Go encodes a nil slice as null); unknown keys are skipped (any JSON
// value, within the depth limit); a known key given twice is an error (JSON leaves
// duplicates undefined, and the last-wins choice of some decoders would silently drop
// data); numbers may be integers or decimals and must fit a float32 (the models read
// features as float), a finite value too small for a double reads as 0.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace estimator::service::kepler {

enum class Form : std::uint8_t {
  kV09,      // reply {"powers": {component: [...]}, "msg": "", "core_ratio": r}
  k2022,     // reply {"powers": [total per row], "msg": ""}
  kGeneric,  // the kV09 reply
};

// How many reply bytes a client of each form reads: Kepler v0.6..v0.9's Go client reads
// once into 4096 bytes, the 2022 client (PR #104) and Kepler v0.3 once into 1024
// (KEPLER.md section 4), so a longer reply reaches them cut. 0 = no limit, for clients
// known to read the whole reply (the Python estimator's peers, our benchmarks). A
// kGeneric client has no known limit.
struct ClientReadLimits {
  std::size_t v09 = 4096;
  std::size_t form2022 = 1024;

  // The limit for a client of `form`; 0 when none.
  std::size_t of(Form form) const {
    return form == Form::kV09 ? v09 : form == Form::k2022 ? form2022 : 0;
  }
};

struct JsonLimits {
  std::size_t max_depth = 32;            // nesting of arrays and objects, unknown keys included
  std::size_t max_string_bytes = 4096;   // one string, after unescaping
  std::size_t max_number_chars = 512;    // one number token
  std::size_t max_rows = 100'000;        // rows of `values`
  std::size_t max_columns = 1024;        // names in `metrics` (wire::kMaxFeatures)
  std::size_t max_system_values = 32;    // wire::kMaxSystemValues
  std::size_t max_packages = 64;         // values of each *_power list
};

// One parsed request. Views point into the KeplerJsonReader that filled it and stay valid
// until its next parse().
struct KeplerRequest {
  Form form = Form::kV09;
  std::span<const std::string_view> metrics;
  std::span<const float> values;  // rows x cols, row-major, cols = metrics.size()
  std::uint32_t rows = 0;
  std::uint32_t cols = 0;
  std::string_view output_type;
  std::string_view source;
  std::string_view trainer_name;
  std::string_view model_name;
  std::string_view filter;
  std::span<const std::string_view> system_features;
  std::span<const std::string_view> system_values;  // same length as system_features
  // Measured node power of the 2022 form, one value per CPU package; empty = not measured.
  std::span<const float> core_power;
  std::span<const float> dram_power;
  std::span<const float> gpu_power;
  std::span<const float> other_power;
};

class KeplerJsonReader {
 public:
  explicit KeplerJsonReader(JsonLimits limits = {}) : limits_(limits) {}

  // Parses one request document. On failure `out.form` is the form the keys read so far
  // suggest and the Status says what was wrong and where (kInvalidArgument, kTooLarge or
  // kInvalidValue).
  Status parse(std::string_view json, KeplerRequest& out);

 private:
  friend class KeplerJsonParser;
  JsonLimits limits_;
  std::string arena_;  // unescaped strings, back to back
  struct Slice {
    std::size_t offset, size;
  };
  std::vector<Slice> metric_slices_, feature_slices_, value_slices_;
  std::vector<std::string_view> metrics_, system_features_, system_values_;
  std::vector<float> values_;
  std::vector<float> powers_[4];  // core, dram, gpu, other
};

// Tells when a JSON document that starts at the first non-blank byte has ended, without
// parsing it, as bytes arrive: the brackets open outside strings, kept as a stack of bits.
// Anything that cannot start a request ends the document at once (the parser then says
// what is wrong), and so does a closing bracket that does not match or nesting deeper
// than the stack, so that a malformed request is answered at once instead of waiting for
// its deadline. Bytes that cannot change the state (digits, most of a request) are
// skipped sixteen at a time.
class DocumentEnd {
 public:
  // Scans `bytes` (following those scanned before); returns how many of them belong to
  // the document once it has ended, or 0 while it has not.
  std::size_t feed(std::string_view bytes);

 private:
  std::uint64_t objects_ = 0;  // bit i: the bracket open at depth_-i is '{'
  int depth_ = 0;
  bool started_ = false;
  bool in_string_ = false;
  bool escape_ = false;
};

// ---- replies ---------------------------------------------------------------------------

// Longest error reply: the smallest read of Kepler's clients (the 2022 one's 1024 bytes),
// so that an error always reaches every client whole. A longer message is cut (at a
// UTF-8 boundary, marked with "...").
inline constexpr std::size_t kMaxErrorReplyBytes = 1024;

// Writes the successful reply of `form` into `out` (replacing its contents): `powers` is
// rows x components, row-major, as the daemon answers. The v0.9 reply lists one array per
// component in the model's order; the 2022 reply one total per row
// (estimator::total_power); kGeneric is written as kV09. A non-finite power cannot be
// written as JSON: the reply is then the error reply naming the row and component, and
// that error is returned.
Status write_reply(Form form, std::span<const std::string_view> components,
                 std::span<const float> powers, std::uint32_t rows, double core_ratio,
                 std::string& out);

// Writes the error reply, the same for every form: {"powers":false,"msg":"<message>"}.
// `powers` is there but a scalar, which neither generation's Go client can decode (into
// map[string][]float64 for v0.6..v0.9, into a slice for 2022): an empty map or list would
// decode without error and reach Kepler as "no powers" (v0.9 then indexes the empty slice
// and panics, KEPLER.md section 4). `false` rather than a string or a number, which a
// client might mistake for powers. One
// shape also serves errors sent before the form is known (an oversized request, a
// deadline). The message is never empty.
void write_error(std::string_view message, std::string& out);

// Appends `s` as a JSON string literal (quotes included). Control characters are escaped
// and invalid UTF-8 bytes become U+FFFD, so the result is always valid JSON.
void append_json_string(std::string& out, std::string_view s);

}  // namespace estimator::service::kepler
