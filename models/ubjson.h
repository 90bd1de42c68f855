// SPDX-License-Identifier: Apache-2.0
// Universal Binary JSON (ubjson.org, draft 12) as XGBoost writes it: Booster.save_model
// ("model.ubj"), the default format of xgboost 2.x, and the "handle" bytes xgboost >= 1.6
// puts in its pickles. The reader builds the same json::Json document the JSON loaders
// read, so the XGBoost loader sees one document type whichever format the file is in.
//
// Types: Z (null), N (no-op), T F (booleans), i U I l L (int8, uint8, int16, int32, int64),
// d D (float32, float64), H (a number written as decimal text), C (char), S (string),
// [ ] and { } (containers), with the optimised container header `$<type>#<count>` and
// `#<count>`. Numbers are big-endian. Object keys are strings without the S marker.
//
// A file is hostile input: every length and count is checked against the bytes that are
// left before anything is reserved, strings must be UTF-8, containers nest at most
// json::kMaxDepth deep, and the document built may cost at most kMaxDomBytesPerByte times
// the input (plus json::kMinDomBudgetBytes), so a short file cannot ask for gigabytes (a
// `[$Z#L` array of 2^62 nulls has no payload at all). Repeated object keys are refused
// (JSON takes the last one; XGBoost never writes one twice, and refusing needs no
// quadratic search).
#pragma once

#include <cstddef>
#include <string_view>

#include "common/status.h"
#include "models/json_fields.h"

namespace estimator::models::ubjson {

// A value costs 16 bytes in the DOM however short its encoding: a uint8 array element is
// one byte, so 16 would never refuse an honest array of bytes; but XGBoost's models mix
// 1-byte and 4-byte elements (about 4.2 DOM bytes per file byte over a tree's arrays), and
// 8 leaves them twice that margin while a hostile file of small values is stopped at 8x.
inline constexpr std::size_t kMaxDomBytesPerByte = 8;

// Parses a whole document (nothing may follow the top value). Never throws. Errors name
// `file`, the field being read and the byte offset; a document over the limits above is
// refused with kTooLarge.
Result<json::Json> parse(std::string_view bytes, std::string_view file);

}  // namespace estimator::models::ubjson
