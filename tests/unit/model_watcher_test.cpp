// SPDX-License-Identifier: Apache-2.0
// Hot reload: models added, changed, broken and removed in the model directory take
// effect without a restart; a broken file leaves its last good version serving. Run with
// inotify and with the polling fallback.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "service/model_watcher.h"

namespace estimator::service {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

class ModelWatcherTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    dir = fs::temp_directory_path() / ("watch_test_" + std::to_string(getpid()) + "_" +
                                       std::to_string(GetParam()));
    fs::remove_all(dir);
    write_model("A_1", 10);
  }
  void TearDown() override { fs::remove_all(dir); }

  void write_model(const std::string& name, double bias) {
    fs::create_directories(dir / name);
    std::ofstream(dir / name / "metadata.json")
        << R"({"model_name": ")" << name << R"(", "model_class": "weight", "model_file": "w.json"})";
    std::ofstream(dir / name / "w.json")
        << R"({"package": {"All_Weights": {"Bias_Weight": )" << bias
        << R"(, "Numerical_Variables": {"x": {"scale": 1, "weight": 1}}}}})";
  }

  // The package power of x = 0 from the model named `name`, or -1 when it is not served.
  static double power(const RegistryHolder& h, const std::string& name) {
    auto reg = h.get();
    const std::string_view cols[] = {"x"};
    auto m = reg->select({.name = name}, cols, false);
    if (!m.ok()) return -1;
    auto plan = m.value()->plan(cols);
    float x = 0, out = 0;
    const models::ModelInput in{models::ConstMatrixView(&x, 1, 1), {}, {}};
    EXPECT_TRUE(m.value()->predict(**plan, in, models::MatrixView(&out, 1, 1)).ok());
    return out;
  }

  template <typename Pred>
  static bool eventually(Pred pred) {
    for (int i = 0; i < 500; ++i) {
      if (pred()) return true;
      std::this_thread::sleep_for(10ms);
    }
    return false;
  }

  fs::path dir;
};

TEST_P(ModelWatcherTest, AddChangeBreakAndRemoveTakeEffectWithoutRestart) {
  RegistryHolder holder(models::Registry::build({}));
  ModelWatcher sut(ModelLoader(dir, {}), holder,
                   {.settle = 50ms, .poll_interval = 100ms, .force_polling = GetParam()});
  ASSERT_EQ(power(holder, "A_1"), 10);
  EXPECT_EQ(sut.using_inotify(), !GetParam());

  write_model("B_1", 20);
  ASSERT_TRUE(eventually([&] { return power(holder, "B_1") == 20; })) << "new model picked up";

  std::this_thread::sleep_for(20ms);  // a distinct mtime for the polling fingerprint
  write_model("A_1", 11);
  ASSERT_TRUE(eventually([&] { return power(holder, "A_1") == 11; })) << "change picked up";

  // Waits for the breakage itself, not for a reload count: the count of the reload that
  // installed A_1 = 11 may land after that registry did, and be taken for this one.
  std::ofstream(dir / "A_1" / "w.json") << R"({"package": {"All_Weights": {"Bias_Weight": )";
  ASSERT_TRUE(eventually([&] { return !holder.get()->refused().empty(); }))
      << "the breakage is reported";
  EXPECT_EQ(power(holder, "A_1"), 11) << "broken file: last good version keeps serving";

  fs::remove_all(dir / "B_1");
  ASSERT_TRUE(eventually([&] { return power(holder, "B_1") == -1; })) << "removed model dropped";
  EXPECT_EQ(power(holder, "A_1"), 11);
}

TEST_P(ModelWatcherTest, RequestsInFlightKeepTheRegistryTheyStartedWith) {
  RegistryHolder holder(models::Registry::build({}));
  ModelWatcher sut(ModelLoader(dir, {}), holder,
                   {.settle = 50ms, .poll_interval = 100ms, .force_polling = GetParam()});
  auto pinned = holder.get();  // what a handler holds during a request
  ASSERT_EQ(pinned->models().size(), 1u) << "the watcher loads the directory at start";
  fs::remove_all(dir / "A_1");
  ASSERT_TRUE(eventually([&] { return holder.get() != pinned; }));
  EXPECT_EQ(pinned->models().size(), 1u) << "the old registry is intact while referenced";
  EXPECT_TRUE(holder.get()->models().empty());
}

TEST_P(ModelWatcherTest, UnreadableZipKeepsItsLastGoodVersion) {
  auto copy = [&](const char* fixture) {
    fs::copy_file(fs::path(ESTIMATOR_FIXTURES_DIR) / "zip" / fixture, dir / "SGDRegressorTrainer_1.zip",
                  fs::copy_options::overwrite_existing);
  };
  copy("weight_model.zip");
  RegistryHolder holder(models::Registry::build({}));
  ModelWatcher sut(ModelLoader(dir, {}), holder,
                   {.settle = 50ms, .poll_interval = 100ms, .force_polling = GetParam()});
  ASSERT_EQ(holder.get()->models().size(), 2u);
  const auto before = sut.reloads();
  std::this_thread::sleep_for(20ms);
  copy("truncated.zip");
  ASSERT_TRUE(eventually([&] { return sut.reloads() > before; }));
  EXPECT_EQ(holder.get()->models().size(), 2u) << "the zip's model still serves";
  ASSERT_EQ(holder.get()->refused().size(), 1u);
  EXPECT_NE(holder.get()->refused()[0].reason.message().find("last good"), std::string::npos);
}

// estimatord's SIGHUP: with a settle time and a poll interval longer than the test, only the
// request can bring the new model in.
TEST_P(ModelWatcherTest, RequestedReloadRescansAtOnce) {
  RegistryHolder holder(models::Registry::build({}));
  ModelWatcher sut(ModelLoader(dir, {}), holder,
                   {.settle = 1h, .poll_interval = 1h, .force_polling = GetParam()});
  ASSERT_EQ(power(holder, "A_1"), 10);
  const auto before = sut.reloads();
  write_model("B_1", 20);
  sut.request_reload();
  ASSERT_TRUE(eventually([&] { return sut.reloads() == before + 1; }));
  EXPECT_EQ(power(holder, "B_1"), 20);
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(sut.reloads(), before + 1) << "one request, one reload";
}

INSTANTIATE_TEST_SUITE_P(InotifyAndPolling, ModelWatcherTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& p) { return p.param ? "polling" : "inotify"; });

}  // namespace
}  // namespace estimator::service
