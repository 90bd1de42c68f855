// SPDX-License-Identifier: Apache-2.0
// Kepler's published kepler-model-db zips (../shared/model-samples), laid out as the model
// server does (<source>/<OutputType>/<FeatureGroup>/<Trainer>_<n>.zip), through the whole
// registry path: scan, load every zip, select, plan, predict. Values come from the
// golden figures in ../shared/model-samples/README.md.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "models/registry.h"
#include "test_util.h"

namespace estimator::models {
namespace {

namespace fs = std::filesystem;
using testing::evaluate;
using testing::near_rel;

const fs::path kZips = fs::path(ESTIMATOR_SHARED_DIR) / "model-samples" / "kepler-model-db";
const std::vector<std::string_view> kFeatures = {"bpf_block_irq", "bpf_cpu_time_ms", "bpf_net_rx_irq",
                                                 "bpf_net_tx_irq", "bpf_page_cache_hit"};
// MaxAbsScaler scale_ of these zips (README): a raw row is a scaled row times this.
const double kScale[] = {1.0, 71901.33333333333, 3337.333333333333, 3.3333333333333335, 1.0};

class ModelDb : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::is_directory(kZips)) {
      GTEST_SKIP() << "kepler-model-db samples not found at " << kZips.string()
                   << " (the shared/ folder beside the repository)";
    }
    root = fs::temp_directory_path() / ("model_db_test_" + std::to_string(getpid()));
    fs::remove_all(root);
    const fs::path dir = root / "ec2" / "rapl-sysfs" / "AbsPower" / "BPFIRQ";
    fs::create_directories(dir);
    for (const auto& e : fs::directory_iterator(kZips)) {
      if (e.path().extension() == ".zip") fs::copy_file(e.path(), dir / e.path().filename());
    }
    std::vector<Refusal> refused;
    auto folders = Registry::scan_directory(root / "ec2", refused);
    ASSERT_TRUE(folders.ok());
    registry = Registry::build(*folders, std::move(refused));
  }
  void TearDown() override { fs::remove_all(root); }

  const Model& named(const std::string& name) {
    auto m = registry->select({.name = name}, kFeatures, false);
    EXPECT_TRUE(m.ok()) << m.status().to_string();
    return *m.value();
  }

  // Raw feature rows from scaled ones, as a request would carry them.
  static RowMatrixF raw(std::initializer_list<std::array<double, 5>> scaled) {
    RowMatrixF m(static_cast<Eigen::Index>(scaled.size()), 5);
    Eigen::Index r = 0;
    for (const auto& row : scaled) {
      for (int c = 0; c < 5; ++c) m(r, c) = static_cast<float>(row[c] * kScale[c]);
      ++r;
    }
    return m;
  }

  fs::path root;
  std::shared_ptr<const Registry> registry;
};

TEST_F(ModelDb, EveryPublishedZipLoadsWithItsKindFromThePath) {
  EXPECT_TRUE(registry->refused().empty()) << registry->refused()[0].origin << ": "
                                           << registry->refused()[0].reason.to_string();
  ASSERT_EQ(registry->models().size(), 7u);
  for (const auto& m : registry->models()) {
    EXPECT_EQ(m->info().source, "rapl-sysfs") << m->info().name;
    EXPECT_EQ(m->info().output_type, "AbsPower") << m->info().name;
    EXPECT_EQ(m->info().components, (std::vector<std::string>{"package", "core", "uncore", "dram"}))
        << m->info().name;
    EXPECT_FALSE(std::isnan(m->info().mae)) << m->info().name;
  }
}

TEST_F(ModelDb, SelectionPicksTheSmallestPublishedError) {
  auto best = registry->select({}, kFeatures, false);
  ASSERT_TRUE(best.ok());
  double smallest = 1e300;
  for (const auto& m : registry->models()) smallest = std::min(smallest, m->info().mae);
  EXPECT_EQ(best.value()->info().mae, smallest);
  EXPECT_EQ(best.value()->info().trainer, "GradientBoostingRegressorTrainer");
}

TEST_F(ModelDb, XgboostThroughScalerMatchesLibxgboostGolden) {
  // README: package.json on scaled rows -> 122.078941, 190.523636, 206.642792.
  auto e = evaluate(named("XgboostFitTrainer_1"),
                    std::vector<std::string_view>(kFeatures.begin(), kFeatures.end()),
                    raw({{0, 0.1, 0.01, 0, 0}, {0, 0.5, 0.2, 0.1, 0}, {0, 0.9, 0.5, 0.5, 0}}));
  ASSERT_TRUE(e.status.ok()) << e.status.to_string();
  EXPECT_TRUE(near_rel(122.078941, e.out(0, 0)));
  EXPECT_TRUE(near_rel(190.523636, e.out(1, 0)));
  EXPECT_TRUE(near_rel(206.642792, e.out(2, 0)));
}

TEST_F(ModelDb, LinearRegressionMatchesItsCoefficients) {
  // README: package coef_ [0, 183.65315084498238, 0, 0, 0], intercept_ 72.19634564668303;
  // dram coef_ [0, 8.091657781787989, 0, 3.002287840886645, 0], intercept_ 20.90483931332082.
  auto e = evaluate(named("LinearRegressionTrainer_1"),
                    std::vector<std::string_view>(kFeatures.begin(), kFeatures.end()),
                    raw({{0, 0.25, 0.5, 0.3, 0}}));
  ASSERT_TRUE(e.status.ok()) << e.status.to_string();
  EXPECT_TRUE(near_rel(72.19634564668303 + 183.65315084498238 * 0.25, e.out(0, 0)));
  EXPECT_TRUE(near_rel(20.90483931332082 + 8.091657781787989 * 0.25 + 3.002287840886645 * 0.3,
                       e.out(0, 3)));
}

TEST_F(ModelDb, EveryModelPredictsFiniteNonNegativePowerInAnyColumnOrder) {
  std::vector<std::string_view> shuffled = {"bpf_page_cache_hit", "extra", "bpf_net_tx_irq",
                                            "bpf_cpu_time_ms", "bpf_block_irq", "bpf_net_rx_irq"};
  RowMatrixF x(2, 6);
  x << 3, 99, 0.5f, 20000, 0, 100,  //
      0, 0, 0, 0, 0, 0;
  for (const auto& m : registry->models()) {
    auto e = evaluate(*m, shuffled, x);
    ASSERT_TRUE(e.status.ok()) << m->info().name << ": " << e.status.to_string();
    EXPECT_TRUE(e.out.allFinite()) << m->info().name;
    EXPECT_GE(e.out.minCoeff(), 0.0f) << m->info().name;
  }
}

}  // namespace
}  // namespace estimator::models
