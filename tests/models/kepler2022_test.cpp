// SPDX-License-Identifier: Apache-2.0
// The seed's own 2022 model folders (../shared/model-samples/kepler-2022), loaded as the
// daemon loads them (Registry::scan_directory, Registry::build):
//   - the three scikit-learn folders agree with scikit-learn (tools/kepler2022_reference.py:
//     scaler.pkl, then fe_files, then model.sav, all by scikit-learn's own code) to 1e-5
//     relative, on rows within and beyond the scaler's range;
//   - auto-selection takes the folder whose metadata.json publishes the smallest mae;
//   - CorrRatio splits measured power by KEPLER.md section 6's formula, written out here
//     from ratio.json's scores.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "kepler2022_reference.h"
#include "models/registry.h"
#include "test_files.h"
#include "test_util.h"

namespace estimator::models {
namespace {

namespace k22 = ::estimator::testing::kepler2022;
using testing::evaluate;

std::shared_ptr<const Registry> load_all() {
  auto folders = Registry::scan_directory(k22::models_dir());
  if (!folders.ok()) {
    ADD_FAILURE() << folders.status().to_string();
    return nullptr;
  }
  return Registry::build(*folders);
}

const Model* named(const Registry& reg, std::string_view name) {
  for (const auto& m : reg.models()) {
    if (m->info().name == name) return m.get();
  }
  ADD_FAILURE() << "no model " << name;
  return nullptr;
}

nlohmann::json read_json(const std::string& folder, const std::string& file) {
  const auto bytes = testing::read_file_bytes(k22::models_dir() / folder / file);
  if (!bytes) {
    ADD_FAILURE() << "cannot read " << folder << "/" << file;
    return {};
  }
  return nlohmann::json::parse(*bytes);
}

std::vector<std::string_view> feature_columns() {
  return {k22::kFeatures.begin(), k22::kFeatures.end()};
}

TEST(Kepler2022, EveryFolderLoads) {
  REQUIRE_KEPLER_2022();
  auto reg = load_all();
  ASSERT_NE(reg, nullptr);
  for (const Refusal& r : reg->refused()) ADD_FAILURE() << r.origin << ": " << r.reason.to_string();
  ASSERT_EQ(reg->models().size(), 4u);
  for (const std::string& name : k22::kScikitModels) {
    const Model* m = named(*reg, name);
    ASSERT_NE(m, nullptr);
    EXPECT_EQ(m->info().features, std::vector<std::string>(k22::kFeatures.begin(), k22::kFeatures.end()));
    EXPECT_EQ(m->info().components, std::vector<std::string>{"power"});
  }
}

TEST(Kepler2022, ScikitFoldersMatchScikitLearnWithinAndBeyondTheScalersRange) {
  REQUIRE_KEPLER_2022();
  REQUIRE_SKLEARN_REFERENCE();
  auto reg = load_all();
  ASSERT_NE(reg, nullptr);
  const std::vector<float> x = k22::rows_over_the_range();
  const auto n = static_cast<Eigen::Index>(x.size() / k22::kFeatures.size());
  const RowMatrixF rows = Eigen::Map<const RowMatrixF>(x.data(), n, static_cast<Eigen::Index>(k22::kFeatures.size()));
  for (const std::string& name : k22::kScikitModels) {
    SCOPED_TRACE(name);
    const Model* m = named(*reg, name);
    ASSERT_NE(m, nullptr);
    const std::vector<double> want = k22::reference(name, x);
    ASSERT_EQ(want.size(), static_cast<std::size_t>(n));
    auto e = evaluate(*m, feature_columns(), rows);
    ASSERT_TRUE(e.status.ok()) << e.status.to_string();
    double worst = 0;
    int positive = 0;
    for (Eigen::Index r = 0; r < n; ++r) {
      const double ref = want[static_cast<std::size_t>(r)];
      const double err = k22::relative_error(e.out(r, 0), ref);
      worst = std::max(worst, err);
      positive += ref > 0;
      EXPECT_LE(err, k22::kTolerance) << "row " << r << ": scikit-learn " << ref << ", ours " << e.out(r, 0);
    }
    // Most rows must be real numbers, not clamped zeros on both sides.
    EXPECT_GE(positive, n / 2);
    std::printf("[ max rel ] %s vs scikit-learn, %d rows (%d > 0): %.3g\n", name.c_str(),
                static_cast<int>(n), positive, worst);
  }
}

TEST(Kepler2022, AutoSelectionTakesTheSmallestPublishedMae) {
  REQUIRE_KEPLER_2022();
  auto reg = load_all();
  ASSERT_NE(reg, nullptr);
  std::string smallest;
  double best = 0;
  for (const std::string& name : k22::kScikitModels) {
    const double mae = read_json(name, "metadata.json")["mae"].get<double>();
    if (smallest.empty() || mae < best) {
      smallest = name;
      best = mae;
    }
  }
  const auto columns = feature_columns();
  auto picked = reg->select(Selector{}, columns, /*has_node_power=*/false);
  ASSERT_TRUE(picked.ok()) << picked.status().to_string();
  EXPECT_EQ((*picked)->info().name, smallest);
  EXPECT_DOUBLE_EQ((*picked)->info().mae, best);
  // With node power the ratio model could serve too, but it publishes no mae: still last.
  auto with_power = reg->select(Selector{}, columns, /*has_node_power=*/true);
  ASSERT_TRUE(with_power.ok()) << with_power.status().to_string();
  EXPECT_EQ((*with_power)->info().name, smallest);
}

// KEPLER.md section 6: row i's power of component c is P_c * sum_m score_cm * x_im / sum_k
// x_km, with P_c the measured power of c summed over CPU packages (an even split for a
// column whose usage sums to 0).
TEST(Kepler2022, CorrRatioSplitsMeasuredPowerByTheScores) {
  REQUIRE_KEPLER_2022();
  auto reg = load_all();
  ASSERT_NE(reg, nullptr);
  const Model* m = named(*reg, "CorrRatio");
  ASSERT_NE(m, nullptr);
  const nlohmann::json scores = read_json("CorrRatio", "ratio.json");
  const std::vector<std::string> usage = {"curr_cache_misses", "curr_cpu_cycles", "curr_cpu_instructions"};
  ASSERT_EQ(m->info().components, (std::vector<std::string>{"core", "dram", "gpu", "other"}));

  const float core[] = {31.5F, 12.25F};  // two CPU packages
  const float dram[] = {7.5F};
  const float gpu[] = {40};
  const float other[] = {3};
  const std::vector<NodePower> power = {{"core", core, {}}, {"dram", dram, {}}, {"gpu", gpu, {}}, {"other", other, {}}};
  const std::map<std::string, double> measured = {{"core", 31.5 + 12.25}, {"dram", 7.5}, {"gpu", 40}, {"other", 3}};
  auto by_hand = [&](const std::vector<std::vector<double>>& x, std::size_t row, const std::string& comp) {
    double share = 0;
    for (std::size_t j = 0; j < usage.size(); ++j) {
      double sum = 0;
      for (const auto& r : x) sum += r[j];
      const double s = scores[comp + "_score"][usage[j]].get<double>();
      share += s * (sum > 0 ? x[row][j] / sum : 1.0 / static_cast<double>(x.size()));
    }
    return measured.at(comp) * share;
  };
  const std::vector<std::string_view> columns = {usage[0], usage[1], usage[2]};

  // One row (the seed's use): it gets all the measured power, even with a counter at 0.
  for (const std::vector<double>& row : {std::vector<double>{120, 3e9, 4e9}, std::vector<double>{0, 2e9, 1e9}}) {
    const RowMatrixF x = testing::rows({{static_cast<float>(row[0]), static_cast<float>(row[1]),
                                         static_cast<float>(row[2])}});
    auto e = evaluate(*m, columns, x, {}, power);
    ASSERT_TRUE(e.status.ok()) << e.status.to_string();
    double total = 0, all = 0;
    for (Eigen::Index c = 0; c < 4; ++c) {
      const std::string& comp = m->info().components[static_cast<std::size_t>(c)];
      EXPECT_NEAR(e.out(0, c), by_hand({row}, 0, comp), 1e-5 * by_hand({row}, 0, comp)) << comp;
      total += e.out(0, c);
      all += measured.at(comp);
    }
    EXPECT_NEAR(total, all, 1e-5 * all);  // the scores of each component sum to 1 (to 1e-6)
  }

  // Several rows: each component's measured power shared by the formula.
  const std::vector<std::vector<double>> x = {{10, 2e6, 3e6}, {30, 1e6, 1e6}, {0, 5e5, 2e6}, {5, 0, 0}};
  const RowMatrixF xf = testing::rows({{10, 2e6, 3e6}, {30, 1e6, 1e6}, {0, 5e5, 2e6}, {5, 0, 0}});
  auto e = evaluate(*m, columns, xf, {}, power);
  ASSERT_TRUE(e.status.ok()) << e.status.to_string();
  for (std::size_t r = 0; r < x.size(); ++r) {
    for (Eigen::Index c = 0; c < 4; ++c) {
      const std::string& comp = m->info().components[static_cast<std::size_t>(c)];
      const double want = by_hand(x, r, comp);
      EXPECT_NEAR(e.out(static_cast<Eigen::Index>(r), c), want, 1e-5 * std::max(want, 1.0)) << r << " " << comp;
    }
  }
}

}  // namespace
}  // namespace estimator::models
