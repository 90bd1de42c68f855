// SPDX-License-Identifier: Apache-2.0
#include "models/model.h"

#include "common/text.h"

namespace estimator::models {

std::string canonical_source(std::string_view source) {
  const std::string s = lower(source);
  // Every RAPL reader measures the same four domains, so models trained on one serve
  // requests naming another.
  if (s == "intel_rapl" || s == "rapl" || s == "rapl-msr" || s == "rapl-sysfs") {
    return "rapl-sysfs";
  }
  // Likewise the platform readers (KEPLER.md section 3): one domain, platform.
  if (s == "acpi" || s == "redfish" || s == "hmc") return "acpi";
  return s;
}

std::string canonical_output_type(std::string_view output_type) {
  if (output_type.find("Abs") != std::string_view::npos) return "AbsPower";
  if (output_type.find("Dyn") != std::string_view::npos) return "DynPower";
  return std::string(output_type);
}

std::string missing_features(std::span<const std::string> wanted,
                             std::span<const std::string_view> have) {
  std::string missing;
  for (const std::string& w : wanted) {
    if (std::find(have.begin(), have.end(), std::string_view(w)) != have.end()) continue;
    if (!missing.empty()) missing += ", ";
    missing += w;
  }
  return missing;
}

std::string Model::missing_from(std::span<const std::string_view> request_features) const {
  return missing_features(info_.features, request_features);
}

Status Model::check_predict_args(const Plan* typed_plan, Eigen::Index plan_columns,
                                 const ModelInput& in, const MatrixView& out) const {
  if (typed_plan == nullptr) {
    return Status(Code::kInternal, "model " + info_.name + " got a plan of another model");
  }
  if (in.x.cols() != plan_columns) {
    return Status(Code::kInvalidArgument, "request has " + std::to_string(in.x.cols()) +
                                              " columns but the plan was made for " +
                                              std::to_string(plan_columns));
  }
  const auto components = static_cast<Eigen::Index>(info_.components.size());
  if (out.rows() != in.x.rows() || out.cols() != components) {
    return Status(Code::kInvalidArgument,
                  "output is " + std::to_string(out.rows()) + "x" + std::to_string(out.cols()) +
                      ", expected " + std::to_string(in.x.rows()) + "x" + std::to_string(components));
  }
  return Status::Ok();
}

}  // namespace estimator::models
