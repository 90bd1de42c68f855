// SPDX-License-Identifier: Apache-2.0
// Issue 15's proof, across processes: the real estimatord serves a simulated node
// (tests/unit/measured_node.h) whose published-best model is wrong and whose
// published-worst model is right. An exporter sends one node-level row per interval with
// the node power measured in it; after the minimum evidence the daemon answers with the
// right model, logs the switch, and its metrics show the right model's measured MAE below
// the published-best's by the factor computed here from the models' formulas. With
// --selection published it never switches.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "clients/cpp/estimator_client.h"
#include "tests/integration/metrics_daemon.h"
#include "tests/support/http_scrape.h"
#include "tests/unit/measured_node.h"

extern char** environ;

namespace estimator {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testing::http_get;
using testing::sample;
using testing::NodeSample;

constexpr double kWindow = 12;
constexpr int kMinIntervals = 8;

using testing::MetricsDaemon;
using testing::read_file;
using testing::Watchdog;

// estimatord serving only the test's model folder.
std::uint16_t start_daemon(MetricsDaemon& d, const fs::path& dir,
                           const std::vector<std::string>& extra) {
  std::vector<std::string> args = {"--no-default-models", "--model-dir", (dir / "models").string()};
  args.insert(args.end(), extra.begin(), extra.end());
  return d.start(args);
}

std::string error_series(const std::string& model, const std::string& component) {
  return "estimator_model_measured_error{model=\"" + model +
         "\",source=\"rapl-sysfs\",output_type=\"AbsPower\",component=\"" + component +
         "\",kind=\"mae\"}";
}

// A scratch folder with the node models in models/.
struct ModelsDir : testing::TempDir {
  ModelsDir() : TempDir("measured-it") { testing::write_node_models(path() / "models"); }
};

// Sends the samples as intervals; the name of the model that answered each.
std::vector<std::string> drive(const std::string& shm, const std::vector<NodeSample>& samples,
                               std::vector<std::vector<float>>* powers = nullptr) {
  client::Client c({.shm_name = shm});
  const std::string_view names[] = {"cpu_util", "mem_mb"};
  std::vector<std::string> models;
  for (const NodeSample& s : samples) {
    const float row[] = {s.cpu_util, s.mem_mb};
    const float package[] = {s.package};
    const float dram[] = {s.dram};
    const NodePower power[] = {{"package", package, {}}, {"dram", dram, {}}};
    auto reply = c.estimate({.selector = {.output_type = "AbsPower", .source = "intel_rapl"},
                             .features = names,
                             .matrix = row,
                             .rows = 1,
                             .cols = 2,
                             .node_power = power},
                            2000ms);
    if (!reply.ok()) {
      ADD_FAILURE() << reply.status().to_string();
      break;
    }
    models.emplace_back(reply->model().name);
    if (powers != nullptr) powers->emplace_back(reply->powers().begin(), reply->powers().end());
  }
  return models;
}

TEST(MeasuredSelectionProcess, DaemonSwitchesToTheModelRightForThisNode) {
  Watchdog dog(120);
  const ModelsDir dir;
  const std::string shm = "estimator-it-measured-" + std::to_string(getpid());
  MetricsDaemon d(shm);
  const std::uint16_t port = start_daemon(d, dir.path(), {"--selection-window", std::to_string(static_cast<int>(kWindow)),
                                      "--selection-min-intervals", std::to_string(kMinIntervals)});
  ASSERT_NE(port, 0);

  const std::vector<NodeSample> samples = testing::node_samples(60);
  std::vector<std::vector<float>> powers;
  const std::vector<std::string> models = drive(shm, samples, &powers);
  ASSERT_EQ(models.size(), samples.size());
  for (std::size_t i = 0; i < models.size(); ++i) {
    const bool switched = i + 1 >= static_cast<std::size_t>(kMinIntervals);
    EXPECT_EQ(models[i], switched ? "Truth_0" : "Published_0") << "interval " << i;
  }
  // The last answer is the truth's formula (package, dram).
  const NodeSample& last = samples.back();
  ASSERT_EQ(powers.back().size(), 2U);
  EXPECT_NEAR(powers.back()[0], testing::kTruth.package(last.cpu_util, last.mem_mb), 1e-3);
  EXPECT_NEAR(powers.back()[1], testing::kTruth.dram(last.mem_mb), 1e-3);

  const std::string scrape = http_get(port, "/metrics");
  const auto [truth_p, truth_d] = testing::weighted_maes(testing::kTruth, samples, kWindow);
  const auto [pub_p, pub_d] = testing::weighted_maes(testing::kPublishedBest, samples, kWindow);
  const double got_truth_p = sample(scrape, error_series("Truth_0", "package"));
  const double got_pub_p = sample(scrape, error_series("Published_0", "package"));
  const double got_truth_d = sample(scrape, error_series("Truth_0", "dram"));
  const double got_pub_d = sample(scrape, error_series("Published_0", "dram"));
  EXPECT_NEAR(got_truth_p, truth_p, 1e-3 * (1 + truth_p)) << scrape;
  EXPECT_NEAR(got_pub_p, pub_p, 1e-3 * (1 + pub_p));
  EXPECT_NEAR(got_truth_d, truth_d, 1e-3 * (1 + truth_d));
  EXPECT_NEAR(got_pub_d, pub_d, 1e-3 * (1 + pub_d));
  // The expected factor between the published-best's measured error and the right one's.
  const double factor = (pub_p + pub_d) / (truth_p + truth_d);
  EXPECT_GT(factor, 20);
  EXPECT_NEAR((got_pub_p + got_pub_d) / (got_truth_p + got_truth_d), factor, 0.01 * factor);
  EXPECT_EQ(sample(scrape, "estimator_model_selected{source=\"rapl-sysfs\",output_type=\"AbsPower\","
                           "candidates=\"Published_0, Middle_0, Truth_0\","
                           "model=\"Truth_0\",basis=\"measured\"}"),
            1);
  EXPECT_EQ(sample(scrape, "estimator_model_measured_intervals{model=\"Truth_0\",source=\"rapl-sysfs\","
                           "output_type=\"AbsPower\"}"),
            static_cast<double>(samples.size()));
  const std::string log = d.log();
  EXPECT_NE(log.find("model Truth_0"), std::string::npos) << log;
  EXPECT_NE(log.find("instead of Published_0"), std::string::npos) << log;

  // `estimator models` shows the measured errors of the scrape beside the published ones.
  std::ofstream(dir.path() / "scrape.txt") << scrape;
  const std::string listing_path = (dir.path() / "listing.txt").string();
  const std::string cmd = std::string(ESTIMATOR_CLI_PATH) + " models --model-dir " +
                          (dir.path() / "models").string() + " --measured-from " +
                          (dir.path() / "scrape.txt").string() + " > " + listing_path + " 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << read_file(listing_path);
  const std::string listing = read_file(listing_path);
  char want[128];
  std::snprintf(want, sizeof want, "measured on the node: mae %.4g, mape", (got_truth_p + got_truth_d) / 2);
  const std::size_t truth_at = listing.find("Truth_0");
  ASSERT_NE(truth_at, std::string::npos) << listing;
  EXPECT_NE(listing.find(want, truth_at), std::string::npos) << want << "\n" << listing;
  EXPECT_NE(listing.find("over 60 intervals (published mae 9, mape -)", truth_at), std::string::npos)
      << listing;
}

TEST(MeasuredSelectionProcess, PublishedSelectionNeverSwitches) {
  Watchdog dog(120);
  const ModelsDir dir;
  const std::string shm = "estimator-it-published-" + std::to_string(getpid());
  MetricsDaemon d(shm);
  ASSERT_NE(start_daemon(d, dir.path(), {"--selection", "published", "--selection-min-intervals", "2"}), 0);
  for (const std::string& m : drive(shm, testing::node_samples(20))) EXPECT_EQ(m, "Published_0");
}

}  // namespace
}  // namespace estimator
