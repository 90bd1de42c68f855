// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: Kepler's JSON requests on the unix socket - where a document ends, the
// reader, the reply writers and the whole adapter (parse, select, evaluate, format). Must
// never crash, hang or read out of bounds; the document end must not depend on how the
// bytes were split and must equal a byte-at-a-time reference; every reply must be valid
// JSON of the promised shape (checked with nlohmann::json, an independent parser). A
// violation aborts.
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "models/embedded_defaults.h"
#include "models/registry.h"
#include "service/kepler_adapter.h"
#include "service/kepler_json.h"

using namespace estimator;
using namespace estimator::service;

namespace {

// A success has powers as a map or a list and an empty msg; an error has powers false, a
// message, and fits every Kepler client's read.
void check_reply(std::string_view reply) {
  const auto j = nlohmann::json::parse(reply, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("msg") || !j["msg"].is_string() ||
      !j.contains("powers")) {
    std::abort();
  }
  const bool error = !j["msg"].get<std::string>().empty();
  const auto& powers = j["powers"];
  if (error ? !(powers.is_boolean() && reply.size() <= kepler::kMaxErrorReplyBytes)
            : !(powers.is_object() || powers.is_array())) {
    std::abort();
  }
}

// DocumentEnd's rules, one byte at a time and without shortcuts: the reference for the
// skipping scan.
std::size_t reference_end(std::string_view doc) {
  std::vector<bool> objects;
  bool started = false, in_string = false, escape = false;
  for (std::size_t i = 0; i < doc.size(); ++i) {
    const char c = doc[i];
    if (in_string) {
      if (escape) {
        escape = false;
      } else if (c == '\\') {
        escape = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (!started) {
      if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
      started = true;
      if (c != '{' && c != '[') return i + 1;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (objects.size() == 64) return i + 1;
      objects.push_back(c == '{');
    } else if (c == '}' || c == ']') {
      if (objects.back() != (c == '}')) return i + 1;
      objects.pop_back();
      if (objects.empty()) return i + 1;
    }
  }
  return 0;
}

void check_document_end(std::string_view doc) {
  const std::size_t want = reference_end(doc);
  kepler::DocumentEnd whole;
  if (whole.feed(doc) != want) std::abort();
  // Split where the input's first byte says: the scan must carry its state across.
  const std::size_t piece = doc.empty() ? 1 : static_cast<unsigned char>(doc[0]) % 23 + 1;
  kepler::DocumentEnd split;
  std::size_t got = 0;
  for (std::size_t at = 0; at < doc.size() && got == 0; at += piece) {
    const std::size_t n = split.feed(doc.substr(at, piece));
    if (n != 0) got = at + n;
  }
  if (got != want) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static RegistryHolder holder(models::Registry::build(models::embedded_model_folders()));
  static KeplerAdapter adapter(holder);
  static kepler::KeplerJsonReader reader;
  static kepler::KeplerRequest request;
  static std::string out;
  const std::string_view doc(reinterpret_cast<const char*>(data), size);
  check_document_end(doc);

  const Status s = reader.parse(doc, request);
  if (s.ok()) {
    // Feed the parsed values back as powers, under the request's own names (arbitrary
    // strings) as components: the writer must escape them and reject non-finite totals.
    const std::uint32_t cols = request.cols;
    if (cols > 0) {
      const Status w = kepler::write_reply(request.form, request.metrics, request.values,
                                           request.rows, 1.0, out);
      (void)w;
      check_reply(out);
    }
  } else {
    if (s.message().empty()) std::abort();
    kepler::write_error(s.message(), out);
    check_reply(out);
  }
  check_reply(adapter.answer(doc));
  return 0;
}
