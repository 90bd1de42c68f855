// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: a model folder whose metadata.json and model file are the input (split
// at the first NUL): metadata parsing, weight JSON, curve fits, ratio, component maps.
#include <cstdint>
#include <string>
#include <string_view>

#include "models/registry.h"

using namespace estimator::models;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view all(reinterpret_cast<const char*>(data), size);
  const std::size_t cut = all.find('\0');
  ModelFolder f;
  f.origin = "fuzz";
  f.path_hints = {"rapl-sysfs", "AbsPower"};
  f.files["metadata.json"] = std::string(all.substr(0, cut));
  const std::string model(cut == std::string_view::npos ? std::string_view() : all.substr(cut + 1));
  for (const char* name : {"weights.json", "ratio.json", "M_1.json", "model.json"}) f.files[name] = model;
  auto m = load_model(f);
  if (!m.ok()) return 0;
  std::vector<std::string_view> cols(m.value()->info().features.begin(), m.value()->info().features.end());
  auto plan = m.value()->plan(cols);
  if (!plan.ok()) return 0;
  RowMatrixF x = RowMatrixF::Constant(2, static_cast<Eigen::Index>(cols.size()), 1.0f);
  RowMatrixF out(2, static_cast<Eigen::Index>(m.value()->info().components.size()));
  (void)m.value()->predict(**plan, {ConstMatrixView(x.data(), x.rows(), x.cols()), {}, {}},
                           MatrixView(out.data(), out.rows(), out.cols()));
  return 0;
}
