// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the daemon's handling of arbitrary request bytes, as copied out of a
// slot (verify, decode, select, evaluate, reply). Must never crash, hang or read out of bounds.
#include <cstdint>
#include <cstring>
#include <vector>

#include "models/embedded_defaults.h"
#include "models/registry.h"
#include "service/request_handler.h"

using namespace estimator;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static service::RegistryHolder holder(models::Registry::build(models::embedded_model_folders()));
  static service::RequestHandler handler(holder, 1 << 16, 1 << 16);
  // Slot areas are 8-byte aligned; keep the bytes so.
  static std::vector<std::uint64_t> aligned((1 << 16) / 8);
  if (size > (1 << 16)) return 0;
  std::memcpy(aligned.data(), data, size);
  (void)handler.handle({reinterpret_cast<const std::uint8_t*>(aligned.data()), size});
  return 0;
}
