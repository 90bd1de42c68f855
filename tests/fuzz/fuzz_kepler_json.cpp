// libFuzzer target: Kepler's JSON requests on the unix socket - the reader, the reply
// writers and the whole adapter (parse, select, evaluate, format). Must never crash, hang
// or read out of bounds, and every reply must be valid JSON of the promised shape
// (checked with nlohmann::json, an independent parser; a violation aborts).
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "models/embedded_defaults.h"
#include "service/kepler_adapter.h"
#include "service/kepler_json.h"

using namespace estimator;
using namespace estimator::service;

namespace {

void check_reply(std::string_view reply) {
  const auto j = nlohmann::json::parse(reply, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("msg") || !j["msg"].is_string() ||
      !j.contains("powers") || !(j["powers"].is_object() || j["powers"].is_array())) {
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static RegistryHolder holder(models::Registry::build(models::embedded_model_folders()));
  static KeplerAdapter adapter(holder);
  static kepler::KeplerJsonReader reader;
  static kepler::KeplerRequest request;
  static std::string out;
  const std::string_view doc(reinterpret_cast<const char*>(data), size);

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
    kepler::write_error(request.form, s.message(), out);
    check_reply(out);
  }
  check_reply(adapter.answer(doc));
  return 0;
}
