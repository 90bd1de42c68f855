// SPDX-License-Identifier: Apache-2.0
// The operator's commands, run as a user would run them.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>

#include "daemon_process.h"
#include "schema/schema_version.h"
#include "tests/support/shell_command.h"

namespace estimator::testing {
namespace {

struct CmdResult {
  int exit_code;
  std::string out;
  std::string err;  // run_split only
};

CmdResult run(const std::string& cmd) {
  CommandResult r = run_command(cmd);
  return {r.exit_code, std::move(r.out), {}};
}

// stdout and stderr apart.
CmdResult run_split(const std::string& cmd) {
  const std::string err_file = ::testing::TempDir() + "cli_stderr_" + std::to_string(getpid());
  CmdResult r = run(cmd + " 2>" + err_file);
  std::ifstream in(err_file);
  r.err.assign(std::istreambuf_iterator<char>(in), {});
  std::remove(err_file.c_str());
  return r;
}

std::string cli(const std::string& args) { return std::string(ESTIMATOR_CLI_PATH) + " " + args; }

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

// 540 rows x 60 columns do not fit one request of the test daemon's 65536-byte slots: the
// client splits them, and the CLI prints every row, in order.
TEST(Cli, EstimateCsvOfMoreRowsThanOneSlotHolds) {
  Watchdog dog(60);
  const std::string shm = unique_shm_name("cli-split");
  DaemonProcess daemon(shm);
  ASSERT_TRUE(daemon.start());
  const std::string csv = ::testing::TempDir() + "cli_wide_features.csv";
  {
    std::ofstream out(csv);
    out << "bpf_cpu_time_ms,bpf_page_cache_hit";
    for (int c = 2; c < 60; ++c) out << ",unused_" << c;
    out << "\n";
    for (int r = 0; r < 540; ++r) {
      out << r * 10 << ",1";
      for (int c = 2; c < 60; ++c) out << "," << c;
      out << "\n";
    }
  }
  const CmdResult r = run_split(cli("estimate --shm-name " + shm + " --csv " + csv +
                                    " --source rapl-sysfs --output-type AbsPower"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("model: "), std::string::npos) << r.err;
  std::istringstream lines(r.out);
  std::string line;
  std::getline(lines, line);
  ASSERT_EQ(line, "package,core,uncore,dram");
  // package = 143.81206324506658 + 305.148172889668 * x / 95877.00000000001 (Kepler v0.9.0)
  int rows = 0;
  for (; std::getline(lines, line); ++rows) {
    const double x = rows * 10.0;
    EXPECT_NEAR(std::stod(line), 143.81206324506658 + 305.148172889668 * x / 95877.00000000001, 1e-3)
        << "row " << rows << ": " << line;
  }
  EXPECT_EQ(rows, 540);
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
  const CmdResult r = run_split(std::string(ESTIMATOR_CLI_PATH) + " models --model-dir " + dir.string() +
                                " --features bpf_cpu_time_ms");
  fs::remove_all(dir);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  // The loader's warning about the refused file goes to stderr, not into the table.
  EXPECT_TRUE(r.out.starts_with("1 model(s) accepted")) << r.out;
  EXPECT_EQ(r.out.find("[warning]"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("[warning] file " + (dir / "rapl-sysfs" / "AbsPower" / "BPFOnly" / "Evil_1.zip").string()),
            std::string::npos) << r.err;
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

// 0 ok, 1 runtime failure, 2 bad usage or input, whatever the subcommand; CLI11's own codes
// (106 for a missing option, 109 for an unknown one) never leak out.
TEST(Cli, ExitCodesAreZeroOneOrTwoForEverySubcommand) {
  Watchdog dog(180);
  const std::string shm = unique_shm_name("codes");
  const std::string none = unique_shm_name("codes-none");
  DaemonProcess daemon(shm);
  ASSERT_TRUE(daemon.start());
  const std::string csv = ::testing::TempDir() + "codes_features.csv";
  std::ofstream(csv) << "bpf_cpu_time_ms,bpf_page_cache_hit\n1000,3\n";
  const std::string bad_csv = ::testing::TempDir() + "codes_bad.csv";
  std::ofstream(bad_csv) << "bpf_cpu_time_ms,bpf_page_cache_hit\n1000,n/a\n";
  const std::string zip = std::string(ESTIMATOR_FIXTURES_DIR) + "/zip/weight_model.zip";
  const std::string est = "estimate --shm-name " + shm + " --csv " + csv;
  const std::string pred = "predict --model " + zip + " --csv " + csv;
  const std::pair<std::string, int> cases[] = {
      {"", 2}, {"bogus", 2}, {"--bogus", 2}, {"--help", 0}, {"--version", 0},
      {"estimate --shm-name " + shm, 2},                       // missing --csv
      {est + " --bogus", 2},                                   // unknown flag
      {est + " --timeout-ms -5", 2},                           // range
      {est + " --timeout-ms 0", 2},
      {est + " --timeout-ms abc", 2},
      {est + " --output-type Watts", 2},
      {est + " --system novalue", 2},
      {"estimate --shm-name " + shm + " --csv " + bad_csv, 2},  // input
      {"estimate --shm-name " + shm + " --csv " + ::testing::TempDir(), 2},
      {est, 0},
      {est + " --model NoSuchModel", 1},                      // refused by the daemon
      {"estimate --shm-name " + none + " --timeout-ms 100 --csv " + csv, 1},  // no daemon
      {"ping --timeout-ms", 2},                                // missing value
      {"ping --bogus", 2},
      {"ping --timeout-ms -5", 2},
      {"ping --shm-name " + shm, 0},
      {"ping --timeout-ms 100 --shm-name " + none, 1},
      {"models --model-dir", 2},
      {"models --bogus", 2},
      {"models --output-type Watts", 2},
      {"models --model-dir /nonexistent-estimator-dir", 2},
      {"models --features bpf_cpu_time_ms", 0},
      {"predict --csv " + csv, 2},                             // missing --model
      {pred + " --bogus", 2},
      {pred + " --system =x", 2},
      {"predict --model /nonexistent.zip --csv " + csv, 2},
      {"predict --model " + zip + " --csv " + bad_csv, 2},
      {pred, 0},
      {"demo --pods", 2},
      {"demo --bogus", 2},
      {"demo --pods 0", 2},
      {"demo --intervals 0", 2},
      {"demo --interval-ms -1", 2},
      {"demo --estimatord /nonexistent-estimatord", 2},
      {"demo --pods 2 --intervals 1 --interval-ms 0", 0},
  };
  for (const auto& [args, code] : cases) {
    const CmdResult r = run_split(cli(args));
    EXPECT_EQ(r.exit_code, code) << "estimator " << args << "\nstdout: " << r.out << "\nstderr: " << r.err;
    // A failure says why on stderr and prints nothing a script would take for a result.
    if (code != 0) {
      EXPECT_FALSE(r.err.empty()) << "estimator " << args;
      EXPECT_TRUE(r.out.empty()) << "estimator " << args << "\nstdout: " << r.out;
    }
  }
  std::remove(csv.c_str());
  std::remove(bad_csv.c_str());
}

TEST(Cli, EstimatordExitCodes) {
  Watchdog dog(120);
  const std::string shm = unique_shm_name("dcodes");
  DaemonProcess daemon(shm);
  ASSERT_TRUE(daemon.start());
  const std::string d = std::string(ESTIMATORD_PATH) + " ";
  const std::string other = " --shm-name " + unique_shm_name("dcodes-other");
  const std::pair<std::string, int> cases[] = {
      {"--bogus", 2},
      {"--log-level wran", 2},  // used to turn logging off
      {"--slots 0", 2},
      {"--slots 513", 2},
      {"--threads 0", 2},
      {"--spin-us -1", 2},
      {"--socket-timeout-ms -5", 2},
      {"--shm-mode 9x", 2},
      {"--model-dir /nonexistent-estimator-dir" + other, 2},
      {"--slot-bytes 10" + other, 2},           // refused by the segment, not by CLI11
      {"--metrics-address nonsense" + other, 2},
      {"--shm-name " + shm, 1},                 // the name is served by another daemon
      {"--version", 0},
      {"--help", 0},
  };
  for (const auto& [args, code] : cases) {
    const CmdResult r = run_split(d + args);
    EXPECT_EQ(r.exit_code, code) << "estimatord " << args << "\nstdout: " << r.out << "\nstderr: " << r.err;
    if (code != 0) {
      EXPECT_FALSE(r.err.empty()) << "estimatord " << args;
    }
  }
}

TEST(Cli, VersionNamesVersionCommitAndSchema) {
  for (const char* program : {ESTIMATOR_CLI_PATH, ESTIMATORD_PATH}) {
    const CmdResult r = run_split(std::string(program) + " --version");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const std::string name = std::filesystem::path(program).filename().string();
    // "estimator 0.1.0 (commit 0123456789ab, schema 2 hash 0123456789abcdef)"
    EXPECT_TRUE(r.out.starts_with(name + " " + ESTIMATOR_VERSION + " (commit ")) << r.out;
    EXPECT_NE(r.out.find(", schema " + std::to_string(schema::kSchemaVersion) + " hash "),
              std::string::npos) << r.out;
    char hash[17];
    std::snprintf(hash, sizeof hash, "%016llx", static_cast<unsigned long long>(schema::kSchemaHash));
    EXPECT_NE(r.out.find(hash), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("commit )"), std::string::npos) << r.out;
  }
}

TEST(Cli, CsvErrorsNameLineColumnAndValue) {
  Watchdog dog(60);
  const std::string csv = ::testing::TempDir() + "cli_bad_cell.csv";
  std::ofstream(csv) << "\xEF\xBB\xBF" "bpf_cpu_time_ms,bpf_page_cache_hit\n1,2\n1e40,3\n";
  const CmdResult r = run_split(cli("estimate --shm-name " + unique_shm_name("unused") + " --csv " + csv));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "estimator: " + csv + ": line 3, column 1 'bpf_cpu_time_ms': '1e40' is out of the float range\n");
  std::ofstream(csv) << "a,b,a\n1,2,3\n";
  const CmdResult dup = run_split(cli("predict --model /nonexistent.zip --csv " + csv));
  EXPECT_EQ(dup.exit_code, 2);
  EXPECT_EQ(dup.err, "estimator: " + csv + ": CSV header: column name 'a' appears twice (columns 1 and 3)\n");
  std::remove(csv.c_str());
}

// The system feature as an option gives the same powers as the column (see
// EstimateCsvMatchesTheDefaultModel).
TEST(Cli, SystemFeaturesCanBeGivenAsOptions) {
  Watchdog dog(60);
  const std::string shm = unique_shm_name("system");
  DaemonProcess daemon(shm);
  ASSERT_TRUE(daemon.start());
  const std::string csv = ::testing::TempDir() + "cli_system.csv";
  std::ofstream(csv) << "bpf_cpu_time_ms,bpf_page_cache_hit\n1000,3\n0,0\n";
  const CmdResult r = run_split(cli("estimate --shm-name " + shm + " --csv " + csv +
                                    " --system 'cpu_architecture=Sky Lake' --source intel_rapl "
                                    "--output-type AbsPower"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "package,core,uncore,dram\n146.994766,0,0,18.7042542\n143.812057,0,0,18.6162853\n");
  std::remove(csv.c_str());
}

}  // namespace
}  // namespace estimator::testing
