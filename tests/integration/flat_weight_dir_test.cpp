// SPDX-License-Identifier: Apache-2.0
// End to end: estimatord serving Kepler v0.9's own data/model_weight folder (read in place
// from ../shared/kepler-samples) as a flat --model-dir, asked over the Kepler socket exactly
// as Kepler v0.9 asks. Expected watts come from the weight formula (KEPLER.md section 6)
// applied here to the file's JSON.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "daemon_process.h"

namespace estimator::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace std::chrono_literals;

const fs::path kWeightDir =
    fs::path(ESTIMATOR_SHARED_DIR) / "kepler-samples" / "kepler-v0.9.0-data-model_weight";

// What Kepler v0.9 sends (KEPLER.md section 4): one process row of a busy node, then the
// node row.
const std::vector<std::string> kFeatures = {
    "cpu_cycles",     "cpu_instructions", "cache_miss",    "cpu_ref_cycles",    "bpf_cpu_time_ms",
    "bpf_net_tx_irq", "bpf_net_rx_irq",   "bpf_block_irq", "bpf_page_cache_hit"};
const std::vector<std::vector<double>> kRows = {
    {5.2e9, 7.9e9, 3.1e7, 4.8e9, 2600, 120, 340, 45, 5200},
    {4.1e10, 6.3e10, 2.4e8, 3.9e10, 21000, 900, 2500, 410, 41000}};

// One request per connection, read until the server closes, as Kepler does.
std::string call(const std::string& path, const std::string& request) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  std::string out;
  if (connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0 &&
      send(fd, request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size())) {
    timeval tv{10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[8192];
    for (ssize_t n; (n = recv(fd, buf, sizeof buf, 0)) > 0;) out.append(buf, static_cast<std::size_t>(n));
  }
  close(fd);
  return out;
}

// bias + sum of w * x / scale (scale 0 skipped), clamped at 0, per component and row.
json by_formula(const fs::path& file) {
  std::ifstream in(file);
  const json doc = json::parse(in);
  json out = json::object();
  for (const auto& [component, body] : doc.items()) {
    if (!body.is_object() || !body.contains("All_Weights")) continue;
    const json& w = body["All_Weights"];
    for (const std::vector<double>& row : kRows) {
      double p = w["Bias_Weight"].get<double>();
      for (const auto& [feature, term] : w["Numerical_Variables"].items()) {
        const double scale = term["scale"].get<double>();
        const auto at = std::find(kFeatures.begin(), kFeatures.end(), feature);
        if (scale == 0 || at == kFeatures.end()) continue;
        p += term["weight"].get<double>() * row[static_cast<std::size_t>(at - kFeatures.begin())] / scale;
      }
      out[component].push_back(std::max(p, 0.0));
    }
  }
  return out;
}

TEST(FlatWeightDir, KeplerV09RequestsGetTheWeightFileTheyName) {
  if (!fs::is_directory(kWeightDir)) {
    GTEST_SKIP() << "Kepler v0.9 weight files not found at " << kWeightDir.string()
                 << " (the shared/ folder beside the repository)";
  }
  Watchdog dog(120);
  char tmpl[] = "/tmp/flat-weight-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string socket_path = std::string(tmpl) + "/estimator.sock";
  DaemonProcess daemon(unique_shm_name("flatweight"),
                       {"--model-dir", kWeightDir.string(), "--no-default-models", "--socket", socket_path});
  ASSERT_TRUE(daemon.start()) << "estimatord did not start";
  for (int i = 0; i < 500 && !fs::exists(socket_path); ++i) std::this_thread::sleep_for(10ms);

  struct Case {
    std::string output_type, source, file;
  };
  for (const Case& k : {Case{"DynPower", "intel_rapl", "intel_rapl_DynPowerModel.json"},
                        Case{"AbsPower", "intel_rapl", "intel_rapl_AbsPowerModel.json"},
                        Case{"AbsPower", "acpi", "acpi_AbsPowerModel.json"},
                        Case{"DynPower", "acpi", "acpi_DynPowerModel.json"}}) {
    SCOPED_TRACE(k.output_type + " " + k.source);
    const json request = {{"metrics", kFeatures},       {"values", kRows},
                          {"output_type", k.output_type}, {"source", k.source},
                          {"system_features", {"cpu_architecture"}},
                          {"system_values", {"Sky Lake"}},
                          {"trainer_name", ""},           {"filter", ""}};
    const std::string raw = call(socket_path, request.dump());
    json reply;
    ASSERT_NO_THROW(reply = json::parse(raw)) << raw;
    ASSERT_TRUE(reply["powers"].is_object()) << raw;
    const json want = by_formula(kWeightDir / k.file);
    ASSERT_EQ(reply["powers"].size(), want.size()) << raw;
    for (const auto& [component, values] : want.items()) {
      ASSERT_TRUE(reply["powers"].contains(component)) << raw;
      const json& got = reply["powers"][component];
      ASSERT_EQ(got.size(), kRows.size()) << raw;
      for (std::size_t r = 0; r < kRows.size(); ++r) {
        const double w = values[r].get<double>();
        EXPECT_NEAR(got[r].get<double>(), w, 1e-5 * std::max(1.0, std::abs(w)))
            << component << " row " << r;
      }
    }
  }
  fs::remove_all(tmpl);
}

}  // namespace
}  // namespace estimator::testing
