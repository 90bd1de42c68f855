// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: reading a model zip into memory.
#include <cstdint>
#include <string_view>

#include "models/zip_archive.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  estimator::models::ZipLimits limits;
  limits.max_total_bytes = 16u << 20;
  limits.max_entry_bytes = 16u << 20;
  (void)estimator::models::read_zip(std::string_view(reinterpret_cast<const char*>(data), size),
                                    "fuzz.zip", limits);
  return 0;
}
