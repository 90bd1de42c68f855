// SPDX-License-Identifier: Apache-2.0
// The raw table behind embedded_model_folders(): every file of data/model as bytes,
// written at build time by models/embed_files.cmake. Internal to estimator_default_models.
#pragma once

#include <cstddef>
#include <span>

namespace estimator::models::detail {

struct EmbeddedFile {
  const char* path;  // relative to data/model, '/'-separated
  const unsigned char* data;
  std::size_t size;
};

// In path order.
std::span<const EmbeddedFile> embedded_files();

}  // namespace estimator::models::detail
