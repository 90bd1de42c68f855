// SPDX-License-Identifier: Apache-2.0
// Client::get_power: Kepler's 2022 GetPower call (one total per row) over estimate().
#include <array>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "clients/cpp/estimator_client.h"
#include "common/power_total.h"

namespace estimator::client {

Result<std::vector<double>> Client::get_power(std::string_view model_name,
                                              std::span<const std::string_view> feature_names,
                                              std::span<const float> values,
                                              std::span<const float> core_power,
                                              std::span<const float> dram_power,
                                              std::span<const float> gpu_power,
                                              std::span<const float> other_power,
                                              std::chrono::nanoseconds timeout) {
  // The row count is implied by the matrix size, so it must divide exactly: a caller that
  // flattened ragged rows would otherwise get powers for rows it never sent.
  const std::size_t cols = feature_names.size();
  if (cols == 0) return Status(Code::kInvalidArgument, "get_power: no feature names");
  if (values.size() % cols != 0) {
    return Status(Code::kInvalidArgument,
                  "get_power: " + std::to_string(values.size()) + " values do not make rows of " +
                      std::to_string(cols) + " features");
  }
  const std::size_t rows = values.size() / cols;
  if (rows > std::numeric_limits<std::uint32_t>::max() ||
      cols > std::numeric_limits<std::uint32_t>::max()) {
    return Status(Code::kTooLarge, "get_power: " + std::to_string(rows) + " rows");
  }

  // The 2022 protocol names its measured powers per component; the ratio model (the one
  // that uses measured power) expects exactly these component names.
  std::array<NodePower, 4> measured;
  std::size_t n = 0;
  const std::pair<std::string_view, std::span<const float>> given[] = {
      {"core", core_power}, {"dram", dram_power}, {"gpu", gpu_power}, {"other", other_power}};
  for (const auto& [component, watts] : given) {
    if (!watts.empty()) measured[n++] = NodePower{component, watts, {}};
  }

  Request request;
  request.selector.name = model_name;
  request.features = feature_names;
  request.matrix = values.data();
  request.rows = static_cast<std::uint32_t>(rows);
  request.cols = static_cast<std::uint32_t>(cols);
  request.node_power = std::span<const NodePower>(measured.data(), n);
  auto reply = estimate(request, timeout);
  if (!reply.ok()) return reply.status();

  std::vector<std::string_view> components(reply->cols());
  for (std::uint32_t c = 0; c < reply->cols(); ++c) components[c] = reply->component(c);
  std::vector<double> totals(rows);
  const std::span<const float> powers = reply->powers();
  for (std::size_t r = 0; r < rows; ++r) {
    totals[r] = total_power<float>(components, powers.subspan(r * reply->cols(), reply->cols()));
  }
  return totals;
}

}  // namespace estimator::client
