// SPDX-License-Identifier: Apache-2.0
// The answer the daemon must give, computed in the test's own process: the embedded
// model honest clients in these tests select (AbsPower, rapl-sysfs, three features),
// evaluated here through its own plan. An answer the daemon computed from any other
// request, or one a peer forged, differs from it.
#pragma once

#include <memory>
#include <string_view>
#include <vector>

#include "models/embedded_defaults.h"
#include "models/registry.h"

namespace estimator::testing {

inline const std::string_view kReferenceFeatures[] = {"bpf_cpu_time_ms", "bpf_page_cache_hit",
                                                      "cpu_cycles"};

// One per thread (a plan holds scratch memory).
class ReferenceModel {
 public:
  ReferenceModel() : registry_(models::Registry::build(models::embedded_model_folders())) {
    auto m = registry_->select({.output_type = "AbsPower", .source = "rapl-sysfs"},
                               kReferenceFeatures, false);
    if (!m.ok()) return;
    auto plan = m.value()->plan(kReferenceFeatures);
    if (!plan.ok()) return;
    model_ = m.value();
    plan_ = std::move(plan).value();
  }
  bool ok() const { return plan_ != nullptr; }

  // rows x 3 features in, rows x components watts out; empty if the model refuses.
  std::vector<float> predict(const std::vector<float>& x, std::uint32_t rows) const {
    const std::size_t k = model_->info().components.size();
    std::vector<float> out(rows * k);
    const models::ModelInput in{models::ConstMatrixView(x.data(), rows, 3), {}, {}};
    if (!model_->predict(*plan_, in, models::MatrixView(out.data(), rows, k)).ok()) return {};
    return out;
  }

 private:
  std::shared_ptr<const models::Registry> registry_;
  const models::Model* model_ = nullptr;
  std::unique_ptr<const models::Plan> plan_;
};

}  // namespace estimator::testing
