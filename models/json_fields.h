// SPDX-License-Identifier: Apache-2.0
// Reading JSON model files with errors that name the file and the field.
//
// Every loader in models/ parses with these helpers, so a refused file always says where
// it went wrong ("weights.json: package.All_Weights.Bias_Weight: expected a finite number,
// got string") and no nlohmann exception escapes a loader. Documents keep their key order
// (ordered_json) because feature and component order is taken from the file.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace estimator::models::json {

using Json = nlohmann::ordered_json;

// A position in a document, for messages: "<file>: <dotted path>".
struct Where {
  std::string file;
  std::string path;

  Where operator/(std::string_view key) const;
  std::string describe() const;
};

// kInvalidArgument "<file>: <path>: <problem>".
Status invalid(const Where& where, std::string_view problem);

// Limits every parse applies, because a model file, a fetched file or a CLI argument is
// hostile input. Depth: nlohmann parses and destroys iteratively, but copying a document
// (and dump(), and any walker of ours) recurses once per level, so 300,000 nested arrays in
// a 600 KB file overflowed the stack on the first copy; no real model nests past ~10.
// Size: a value costs 16 bytes in the DOM however short its text ("0," is 2 bytes), so a
// 60 MB array of small numbers would become ~1 GB; real models (an XGBoost dump is ~3.4
// times its text) stay well under the bound below, and a document that does not is refused
// as soon as its parsed form crosses it, before memory grows further.
inline constexpr std::size_t kMaxDepth = 64;
inline constexpr std::size_t kMaxDomBytesPerTextByte = 6;
inline constexpr std::size_t kMinDomBudgetBytes = 1 << 20;  // small documents never hit it

// Parses a whole document. Never throws. A syntax error or a number that does not fit a
// double is reported with its line and column and the field being read; a document nested
// deeper than kMaxDepth or whose parsed form would exceed kMaxDomBytesPerTextByte x its
// size + kMinDomBudgetBytes is refused (kTooLarge) with the limit it broke. A repeated key
// keeps its first place and its last value, as nlohmann's own parse; an object of n members
// costs O(n log n) however many there are (nlohmann's ordered parse: n^2).
Result<Json> parse(std::string_view text, std::string_view file);

// `value` must be an object.
Status expect_object(const Json& value, const Where& where);

// The member `key` of object `obj`; kInvalidArgument when absent.
Result<const Json*> member(const Json& obj, const Where& where, std::string_view key);

// The member `key` of object `obj`, or nullptr when absent or null.
const Json* optional_member(const Json& obj, std::string_view key);

// A finite number. Strings such as "NaN" are refused, not converted.
Result<double> finite_number(const Json& value, const Where& where);

// A string.
Result<std::string> string_value(const Json& value, const Where& where);

// An array of strings.
Result<std::vector<std::string>> string_array(const Json& value, const Where& where);

}  // namespace estimator::models::json
