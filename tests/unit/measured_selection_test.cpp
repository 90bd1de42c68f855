// SPDX-License-Identifier: Apache-2.0
// Measured selection in the request handler, on the simulated node of measured_node.h
// (published errors rank its three models wrongly): after the minimum evidence the model
// measured best answers, its weighted errors match values computed here from the models'
// formulas, explicit choices and other request shapes are left alone, hostile measurements
// are ignored, and the steady state allocates nothing.
// Its own executable: it replaces the global operator new to count allocations.
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "tests/support/log_capture.h"
#include "service/measured_selection.h"
#include "service/metrics.h"
#include "service/request_handler.h"
#include "tests/support/allocation_counter.h"  // this binary's operator new
#include "tests/unit/measured_node.h"

namespace estimator::service {
namespace {

namespace fs = std::filesystem;
using testing::NodeSample;

std::shared_ptr<const models::Registry> node_registry() {
  const fs::path dir = fs::temp_directory_path() / ("measured-selection-" + std::to_string(getpid()));
  fs::remove_all(dir);
  testing::write_node_models(dir);
  auto folders = models::Registry::scan_directory(dir);
  EXPECT_TRUE(folders.ok());
  auto reg = models::Registry::build(*folders);
  fs::remove_all(dir);
  EXPECT_EQ(reg->models().size(), 3U);
  return reg;
}

using testing::LogCapture;

constexpr double kWindow = 10;
constexpr std::uint32_t kMinIntervals = 5;

class MeasuredSelectionTest : public ::testing::Test {
 protected:

  MeasuredSelectionTest()
      : holder(node_registry()),
        selection(std::make_shared<MeasuredSelection>(
            MeasuredSelectionConfig{true, kWindow, kMinIntervals})),
        sut(holder, 1 << 16, 1 << 15, &metrics) {
    holder.set_measured_selection(selection);
    metrics.add_families([s = selection](std::string& out) { s->render(out); });  // as estimatord does
  }

  struct Answer {
    Code status;
    std::string model;
    std::vector<std::string> components;
    std::vector<float> powers;
  };

  // One interval: one node-level row and its measured package and dram power.
  std::span<const std::uint8_t> request(const NodeSample& s, std::string_view model_name = {},
                                        std::uint32_t rows = 1, const float* package_override = nullptr) {
    matrix = {s.cpu_util, s.mem_mb, s.cpu_util, s.mem_mb};
    package = {package_override != nullptr ? *package_override : s.package};
    dram = {s.dram};
    power = {NodePower{"package", package, {}}, NodePower{"dram", dram, {}}};
    wire::RequestSpec spec;
    spec.request_id = ++id;
    spec.model_name = model_name;
    spec.output_type = "AbsPower";
    spec.source = "intel_rapl";
    spec.feature_names = names;
    spec.matrix = matrix.data();
    spec.rows = rows;
    spec.cols = 2;
    spec.node_power = power;
    auto built = wire::build_request(spec, {area, sizeof area});
    EXPECT_TRUE(built.ok()) << built.status().to_string();
    return *built;
  }

  Answer answer(std::span<const std::uint8_t> bytes) {
    std::vector<std::uint8_t> copy(bytes.begin(), bytes.end());
    auto r = wire::read_response(copy);
    EXPECT_TRUE(r.ok());
    Answer a{r->status, {}, {}, {}};
    if (r->model) a.model = wire::view_of(r->model->name());
    if (r->components) for (const auto* c : *r->components) a.components.emplace_back(wire::view_of(c));
    if (r->powers) a.powers.assign(r->powers, r->powers + std::size_t{r->rows} * r->cols);
    return a;
  }

  Answer call(const NodeSample& s, std::string_view model_name = {}) {
    return answer(sut.handle(request(s, model_name)));
  }

  RegistryHolder holder;
  Metrics metrics;
  std::shared_ptr<MeasuredSelection> selection;
  RequestHandler sut;
  const std::string_view names[2] = {"cpu_util", "mem_mb"};
  std::vector<float> matrix, package, dram;
  std::vector<NodePower> power;
  alignas(64) std::uint8_t area[1 << 16];
  std::uint64_t id = 0;
};

double expected_mae(const testing::NodeModel& m, const std::vector<NodeSample>& samples) {
  const auto [p, d] = testing::weighted_maes(m, samples, kWindow);
  return (p + d) / 2;
}

TEST_F(MeasuredSelectionTest, TheModelMeasuredBestAnswersAfterTheMinimumEvidence) {
  LogCapture log;
  const std::vector<NodeSample> samples = testing::node_samples(40);
  for (std::size_t i = 0; i < samples.size(); ++i) {
    const Answer a = call(samples[i]);
    ASSERT_EQ(a.status, Code::kOk);
    const bool switched = i + 1 >= kMinIntervals;
    EXPECT_EQ(a.model, switched ? "Truth_0" : "Published_0") << "interval " << i;
    ASSERT_EQ(a.components, (std::vector<std::string>{"package", "dram"}));
    const testing::NodeModel& m = switched ? testing::kTruth : testing::kPublishedBest;
    EXPECT_NEAR(a.powers[0], m.package(samples[i].cpu_util, samples[i].mem_mb), 1e-3);
    EXPECT_NEAR(a.powers[1], m.dram(samples[i].mem_mb), 1e-3);
  }
  for (const testing::NodeModel& m : testing::kNodeModels) {
    const auto f = selection->figures(m.name, "rapl-sysfs", "AbsPower");
    EXPECT_EQ(f.intervals, samples.size()) << m.name;
    const double want = expected_mae(m, samples);
    EXPECT_NEAR(f.mae, want, 1e-4 * (1 + want)) << m.name;
  }
  const double truth = selection->figures("Truth_0", "rapl-sysfs", "AbsPower").mae;
  const double published = selection->figures("Published_0", "rapl-sysfs", "AbsPower").mae;
  EXPECT_LT(truth, 0.5);  // the noise: mean |uniform(-0.5, 0.5)| = 0.25
  EXPECT_GT(published, 20 * truth);

  const std::string text = log.text();
  EXPECT_NE(text.find("selection for rapl-sysfs AbsPower (candidates Published_0, Middle_0, Truth_0): model Truth_0"), std::string::npos) << text;
  EXPECT_NE(text.find("instead of Published_0"), std::string::npos) << text;
  EXPECT_NE(text.find("published mae 0.5"), std::string::npos) << text;

  const std::string scrape = metrics.render(nullptr);
  EXPECT_NE(scrape.find("estimator_model_measured_error{model=\"Truth_0\",source=\"rapl-sysfs\","
                        "output_type=\"AbsPower\",component=\"package\",kind=\"mae\"} "),
            std::string::npos);
  EXPECT_NE(scrape.find("estimator_model_measured_error{model=\"Published_0\",source=\"rapl-sysfs\","
                        "output_type=\"AbsPower\",component=\"dram\",kind=\"mape\"} "),
            std::string::npos);
  EXPECT_NE(scrape.find("estimator_model_selected{source=\"rapl-sysfs\",output_type=\"AbsPower\","
                        "candidates=\"Published_0, Middle_0, Truth_0\","
                        "model=\"Truth_0\",basis=\"measured\"} 1"),
            std::string::npos);
  EXPECT_NE(scrape.find("estimator_model_selection_switches_total{source=\"rapl-sysfs\","
                        "output_type=\"AbsPower\",candidates=\"Published_0, Middle_0, Truth_0\"} 1"),
            std::string::npos);
  // The answering model's request cell counts the answers.
  EXPECT_EQ(metrics.cell("Truth_0", "rapl-sysfs", "AbsPower")->count(Code::kOk),
            samples.size() - (kMinIntervals - 1));
}

// RequestHandler::warm() (a dispatch thread warming the path of the request it expects)
// runs the request through the handler and leaves no trace: no count, no interval for
// measured selection, which switches after exactly kMinIntervals real requests.
TEST_F(MeasuredSelectionTest, WarmingARequestCountsNothingAndMeasuresNothing) {
  const std::vector<NodeSample> samples = testing::node_samples(kMinIntervals);
  for (std::uint32_t i = 0; i < kMinIntervals; ++i) {
    for (int w = 0; w < 8; ++w) sut.warm(request(samples[i]));
    const Answer a = call(samples[i]);
    ASSERT_EQ(a.status, Code::kOk);
    EXPECT_EQ(a.model, i + 1 >= kMinIntervals ? "Truth_0" : "Published_0") << "interval " << i;
  }
  EXPECT_EQ(metrics.cell("Published_0", "rapl-sysfs", "AbsPower")->count(Code::kOk),
            kMinIntervals - 1);
  EXPECT_EQ(metrics.cell("Truth_0", "rapl-sysfs", "AbsPower")->count(Code::kOk), 1U);
  EXPECT_EQ(sut.last_code(), Code::kOk);
}

TEST_F(MeasuredSelectionTest, ExplicitModelAndOtherShapesKeepThePublishedRules) {
  const std::vector<NodeSample> samples = testing::node_samples(20);
  for (const NodeSample& s : samples) call(s);
  EXPECT_EQ(call(samples[0]).model, "Truth_0");
  EXPECT_EQ(call(samples[0], "Published_0").model, "Published_0");
  // Two rows: which one the measurement belongs to is unknown; not judged.
  EXPECT_EQ(answer(sut.handle(request(samples[0], {}, 2))).model, "Published_0");
}

TEST_F(MeasuredSelectionTest, PublishedSelectionEvaluatesNothing) {
  auto off = std::make_shared<MeasuredSelection>(MeasuredSelectionConfig{false, kWindow, 1});
  holder.set_measured_selection(off);
  for (const NodeSample& s : testing::node_samples(20)) EXPECT_EQ(call(s).model, "Published_0");
  EXPECT_EQ(off->figures("Truth_0", "rapl-sysfs", "AbsPower").intervals, 0U);
}

TEST_F(MeasuredSelectionTest, HostileMeasurementsAreIgnored) {
  const NodeSample s = testing::node_samples(1)[0];
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(), -1.0f}) {
    EXPECT_EQ(answer(sut.handle(request(s, {}, 1, &bad))).status, Code::kOk);
  }
  // Package ignored, dram still counted: the figures stay finite.
  const auto f = selection->figures("Truth_0", "rapl-sysfs", "AbsPower");
  EXPECT_EQ(f.intervals, 3U);
  EXPECT_TRUE(std::isfinite(f.mae));
  const std::string scrape = metrics.render(nullptr);
  EXPECT_EQ(scrape.find("component=\"package\""), std::string::npos) << scrape;
}

TEST_F(MeasuredSelectionTest, SteadyStateAllocatesNothing) {
  const std::vector<NodeSample> samples = testing::node_samples(200);
  for (std::size_t i = 0; i < 20; ++i) call(samples[i]);  // plans, cells, the switch
  estimator::testing::AllocationWindow window;
  for (std::size_t i = 20; i < samples.size(); ++i) sut.handle(request(samples[i]));
  EXPECT_EQ(window.count(), 0);
  EXPECT_EQ(sut.last_code(), Code::kOk);
}

// Shapes whose candidates differ (one carries a column a fourth model needs) keep a
// choice each: sent in turn, neither flips the other's choice back and forth.
TEST(MeasuredSelectionShapes, ShapesWithOtherCandidatesKeepTheirOwnChoice) {
  auto base = node_registry();
  const fs::path dir = fs::temp_directory_path() / ("measured-shapes-" + std::to_string(getpid()));
  fs::remove_all(dir);
  testing::write_node_models(dir);
  fs::create_directories(dir / "Extra_0");
  std::ofstream(dir / "Extra_0" / "metadata.json")
      << R"({"model_name": "Extra_0", "model_class": "weight", "model_file": "weights.json",
            "source": "rapl-sysfs", "output_type": "AbsPower", "features": ["cpu_util", "io"],
            "mae": 0.1})";
  std::ofstream(dir / "Extra_0" / "weights.json")
      << R"({"package": {"All_Weights": {"Bias_Weight": 100, "Numerical_Variables":
             {"cpu_util": {"scale": 1, "weight": 1}, "io": {"scale": 1, "weight": 0}}}}})";
  auto folders = models::Registry::scan_directory(dir);
  ASSERT_TRUE(folders.ok());
  RegistryHolder holder(models::Registry::build(*folders));
  fs::remove_all(dir);
  ASSERT_EQ(holder.get()->models().size(), 4U);
  auto selection = std::make_shared<MeasuredSelection>(MeasuredSelectionConfig{true, kWindow, kMinIntervals});
  holder.set_measured_selection(selection);
  RequestHandler sut(holder, 1 << 16, 1 << 15);
  alignas(64) static std::uint8_t area[1 << 16];
  const std::string_view two[] = {"cpu_util", "mem_mb"};
  const std::string_view three[] = {"cpu_util", "mem_mb", "io"};
  std::uint64_t id = 0;
  std::string last_a, last_b;
  for (const NodeSample& s : testing::node_samples(30)) {
    for (bool with_io : {true, false}) {
      const float row[] = {s.cpu_util, s.mem_mb, 0};
      const float package[] = {s.package};
      const float dram[] = {s.dram};
      const NodePower power[] = {{"package", package, {}}, {"dram", dram, {}}};
      wire::RequestSpec spec;
      spec.request_id = ++id;
      spec.output_type = "AbsPower";
      spec.source = "rapl-sysfs";
      spec.feature_names = with_io ? std::span<const std::string_view>(three)
                                   : std::span<const std::string_view>(two);
      spec.matrix = row;
      spec.rows = 1;
      spec.cols = with_io ? 3 : 2;
      spec.node_power = power;
      auto built = wire::build_request(spec, {area, sizeof area});
      ASSERT_TRUE(built.ok());
      const auto bytes = sut.handle(*built);
      std::vector<std::uint8_t> copy(bytes.begin(), bytes.end());
      auto r = wire::read_response(copy);
      ASSERT_TRUE(r.ok());
      ASSERT_EQ(r->status, Code::kOk) << r->message;
      (with_io ? last_a : last_b) = std::string(wire::view_of(r->model->name()));
    }
  }
  EXPECT_EQ(last_a, "Truth_0");
  EXPECT_EQ(last_b, "Truth_0");
  std::string scrape;
  selection->render(scrape);
  // One switch in each group (published choice -> Truth_0), not one per request.
  EXPECT_NE(scrape.find("candidates=\"Extra_0, Published_0, Middle_0, Truth_0\"} 1\n"), std::string::npos)
      << scrape;
  EXPECT_NE(scrape.find("candidates=\"Published_0, Middle_0, Truth_0\"} 1\n"), std::string::npos) << scrape;
}

}  // namespace
}  // namespace estimator::service
