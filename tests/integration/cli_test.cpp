// The operator's commands, run as a user would run them.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "daemon_process.h"

namespace estimator::testing {
namespace {

struct CmdResult {
  int exit_code;
  std::string out;
};

CmdResult run(const std::string& cmd) {
  CmdResult r{-1, {}};
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  for (std::size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) r.out.append(buf, n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

TEST(Cli, EstimateCsvMatchesTheDefaultModel) {
  Watchdog dog(60);
  const std::string shm = unique_shm_name("cli");
  DaemonProcess daemon(shm);
  ASSERT_TRUE(daemon.start());
  const std::string csv = ::testing::TempDir() + "cli_features.csv";
  std::ofstream(csv) << "bpf_cpu_time_ms,bpf_page_cache_hit,cpu_architecture\n1000,3,Sky Lake\n0,0,Sky Lake\n";
  const CmdResult r = run(std::string(ESTIMATOR_CLI_PATH) + " estimate --shm-name " + shm + " --csv " + csv +
                    " --source intel_rapl --output-type AbsPower 2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  // package = 143.81206324506658 + 305.148172889668 * x / 95877.00000000001 (Kepler v0.9.0)
  EXPECT_EQ(r.out, "package,core,uncore,dram\n146.994766,0,0,18.7042542\n143.812057,0,0,18.6162853\n");

  EXPECT_EQ(run(std::string(ESTIMATOR_CLI_PATH) + " ping --shm-name " + shm).exit_code, 0);
  const CmdResult missing = run(std::string(ESTIMATOR_CLI_PATH) + " estimate --shm-name " + shm + " --csv " + csv +
                          " --model NoSuchModel 2>&1");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.out.find("NoSuchModel"), std::string::npos) << missing.out;
}

TEST(Cli, PingWithoutDaemonFails) {
  Watchdog dog(30);
  const CmdResult r = run(std::string(ESTIMATOR_CLI_PATH) + " ping --timeout-ms 200 --shm-name " +
                    unique_shm_name("none") + " 2>&1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("estimator unavailable"), std::string::npos) << r.out;
}

TEST(Cli, DemoPrintsPerPodPowerAndLatency) {
  Watchdog dog(120);
  const CmdResult r = run(std::string(ESTIMATOR_CLI_PATH) + " demo --pods 6 --intervals 2 --interval-ms 10 2>&1");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("pod-5"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("package_W"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("p99"), std::string::npos) << r.out;
}

TEST(Cli, ModelsListsAcceptedRefusedAndTheSelection) {
  Watchdog dog(60);
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / unique_shm_name("models");
  fs::create_directories(dir / "rapl-sysfs" / "AbsPower" / "BPFOnly");
  fs::copy_file(std::string(ESTIMATOR_FIXTURES_DIR) + "/zip/weight_model.zip",
                dir / "rapl-sysfs" / "AbsPower" / "BPFOnly" / "SGDRegressorTrainer_1.zip");
  fs::copy_file(std::string(ESTIMATOR_FIXTURES_DIR) + "/zip/traversal.zip",
                dir / "rapl-sysfs" / "AbsPower" / "BPFOnly" / "Evil_1.zip");
  const CmdResult r = run(std::string(ESTIMATOR_CLI_PATH) + " models --model-dir " + dir.string() +
                          " --features bpf_cpu_time_ms 2>/dev/null");
  fs::remove_all(dir);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("1 model(s) accepted"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("1 file(s) refused"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("'../evil.txt' has an absolute or '..' path"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("selection for [bpf_cpu_time_ms]: SGDRegressorTrainer_1"), std::string::npos) << r.out;
}

TEST(Cli, PredictEvaluatesAModelOfflineWithoutTheDaemon) {
  Watchdog dog(60);
  const std::string csv = ::testing::TempDir() + "predict_features.csv";
  std::ofstream(csv) << "cpu_architecture,bpf_cpu_time_ms\nSky Lake,4\nSky Lake,0\n";
  const std::string zip = std::string(ESTIMATOR_FIXTURES_DIR) + "/zip/weight_model.zip";
  const CmdResult r = run(std::string(ESTIMATOR_CLI_PATH) + " predict --model " + zip + " --csv " + csv +
                          " 2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(r.out, "package\n16\n10\n");  // 10 + 3 * x / 2
  const CmdResult bad = run(std::string(ESTIMATOR_CLI_PATH) + " predict --model " + zip + " --csv " + csv +
                            " --components dram 2>&1");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.out.find("no component dram"), std::string::npos) << bad.out;
}

}  // namespace
}  // namespace estimator::testing
