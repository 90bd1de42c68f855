// SPDX-License-Identifier: Apache-2.0
// The Kepler side of the JSON mode: what Kepler v0.9's Go client does to a request and a
// reply, written as plainly as Go's encoding/json would lay them out, so that the JSON
// mode's client and the per-stage benchmark (bench/stages.cpp) share one codec.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "bench/workload.h"
#include "common/status.h"

namespace estimator::bench {

// The v0.9 request of `c` ({"metrics", "values", "output_type", "source", ...}) into `out`.
void encode_request(const Case& c, std::string& out);

// A decoded v0.9 reply. Views point into the reply text.
struct JsonReply {
  std::vector<std::string_view> components;
  std::vector<std::uint32_t> counts;  // values per component
  std::vector<float> values;          // component after component
  std::string_view msg;
  double core_ratio = 0;
};

// Decodes a v0.9 reply of exactly that shape; anything else is an error naming the offset.
Status read_reply(std::string_view text, JsonReply& out);

// Ok when `r` answers `c` as the local handler did (to float precision of the text).
Status check_json_reply(const Case& c, const JsonReply& r);

}  // namespace estimator::bench
