// SPDX-License-Identifier: Apache-2.0
// Helpers shared by the models tests: in-memory model folders and one-call evaluation.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "models/model.h"
#include "models/registry.h"

namespace estimator::models::testing {

inline ModelFolder make_folder(std::string origin, std::map<std::string, std::string> files,
                               std::vector<std::string> hints = {}) {
  ModelFolder f;
  f.origin = std::move(origin);
  f.files = std::move(files);
  f.path_hints = std::move(hints);
  return f;
}

// A weight model folder: metadata.json naming weights.json.
inline ModelFolder weight_folder(std::string origin, std::string metadata, std::string weights,
                                 std::vector<std::string> hints = {}) {
  return make_folder(std::move(origin),
                     {{"metadata.json", std::move(metadata)}, {"weights.json", std::move(weights)}},
                     std::move(hints));
}

inline std::unique_ptr<Model> must_load(const ModelFolder& folder) {
  Result<std::unique_ptr<Model>> m = load_model(folder);
  if (!m.ok()) {
    ADD_FAILURE() << "load_model(" << folder.origin << "): " << m.status().to_string();
    return nullptr;
  }
  return std::move(*m);
}

inline RowMatrixF rows(std::initializer_list<std::initializer_list<float>> r) {
  RowMatrixF m(static_cast<Eigen::Index>(r.size()),
               r.size() == 0 ? 0 : static_cast<Eigen::Index>(r.begin()->size()));
  Eigen::Index i = 0;
  for (const auto& row : r) {
    Eigen::Index j = 0;
    for (float v : row) m(i, j++) = v;
    ++i;
  }
  return m;
}

struct Evaluation {
  Status status;
  RowMatrixF out;
};

// plan() then predict(); the first failure is returned in status.
inline Evaluation evaluate(const Model& model, std::vector<std::string_view> columns,
                           const RowMatrixF& x, std::vector<SystemValue> system = {},
                           std::vector<NodePower> node_power = {}) {
  Evaluation e;
  Result<std::unique_ptr<const Plan>> plan = model.plan(columns);
  if (!plan.ok()) {
    e.status = plan.status();
    return e;
  }
  e.out = RowMatrixF::Constant(x.rows(), static_cast<Eigen::Index>(model.info().components.size()),
                               -1.0F);
  const ModelInput in{ConstMatrixView(x.data(), x.rows(), x.cols()), system, node_power};
  e.status = model.predict(**plan, in, MatrixView(e.out.data(), e.out.rows(), e.out.cols()));
  return e;
}

// Relative comparison at the project's conformance tolerance (DESIGN.md section 7).
inline ::testing::AssertionResult near_rel(double expected, double actual, double rel = 1e-5) {
  const double tol = rel * std::max(1.0, std::abs(expected));
  if (std::abs(expected - actual) <= tol) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "expected " << expected << ", got " << actual;
}

}  // namespace estimator::models::testing
