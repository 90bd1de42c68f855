// SPDX-License-Identifier: Apache-2.0
// Background model fetching against a real HTTP server on loopback
// (tests/integration/fake_model_server.py, run with /usr/bin/python3): INIT_URLs over
// http:// and file://, the model server's POST /model, "no model" answers, garbage,
// servers that never answer, retries, the on-demand want() path, and the landed file
// picked up by a ModelWatcher. Real kepler-model-db zips come from ../shared and the
// weight JSON from the project's own data/model; tests skip when a tool or file is absent.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include "tests/support/log_capture.h"
#include "clients/cpp/estimator_client.h"
#include "service/fetch_config.h"
#include "service/model_fetcher.h"
#include "service/model_watcher.h"
#include "tests/support/child_process.h"
#include "tests/support/shell_command.h"
#include "tests/support/watchdog.h"
#include "tests/support/files.h"

namespace estimator::service {
namespace {

using estimator::testing::read_file;

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// curl_global_init before any test thread exists.
const CurlGlobal curl_global;

const fs::path kSamples = fs::path(ESTIMATOR_SHARED_DIR) / "model-samples" / "kepler-model-db";
const fs::path kWeightJson =
    fs::path(ESTIMATOR_SOURCE_DIR) / "data/model/rapl-sysfs/AbsPower/SGDRegressorTrainer_0/weights.json";
const fs::path kServerScript = fs::path(ESTIMATOR_SOURCE_DIR) / "tests/integration/fake_model_server.py";
constexpr const char* kPython = "/usr/bin/python3";

using estimator::testing::Watchdog;

// The Python server as a child process; killed and reaped on destruction.
class FakeServer {
 public:
  explicit FakeServer(const fs::path& files) {
    int out[2];
    if (pipe2(out, O_CLOEXEC) != 0) return;
    process_.start({kPython, kServerScript.string(), files.string()}, {.out_fd = out[1]});
    close(out[1]);
    // The first line is the port; give the interpreter a few seconds to start.
    std::string line;
    pollfd pfd{out[0], POLLIN, 0};
    const auto end = Clock::now() + 10s;
    while (process_.pid() > 0 && line.find('\n') == std::string::npos && Clock::now() < end) {
      if (poll(&pfd, 1, 100) <= 0) continue;
      char buf[64];
      const ssize_t n = read(out[0], buf, sizeof buf);
      if (n <= 0) break;
      line.append(buf, static_cast<std::size_t>(n));
    }
    close(out[0]);
    if (line.find('\n') != std::string::npos) port_ = std::stoi(line);
  }
  FakeServer(const FakeServer&) = delete;
  FakeServer& operator=(const FakeServer&) = delete;

  bool ok() const { return port_ > 0; }
  std::string url(const std::string& path = "") const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  // Requests seen per path, and the JSON bodies POSTed to each.
  nlohmann::json stats() const {
    // Read with Python's own client, so that the code under test is not also the probe.
    const std::string cmd = "/usr/bin/python3 -c \"import urllib.request,sys;"
                            "sys.stdout.write(urllib.request.urlopen('" +
                            url("/stats") + "').read().decode())\"";
    return nlohmann::json::parse(estimator::testing::run_command(cmd).out, nullptr, false);
  }
  int count(const std::string& path) const {
    const nlohmann::json s = stats();
    if (!s.is_object() || !s["counts"].contains(path)) return 0;
    return s["counts"][path].get<int>();
  }

 private:
  estimator::testing::ChildProcess process_;  // killed and reaped on destruction
  int port_ = 0;
};

class ModelFetcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access(kPython, X_OK) != 0) GTEST_SKIP() << kPython << " is not installed";
    if (!fs::exists(kSamples / "XgboostFitTrainer_1.zip")) {
      GTEST_SKIP() << "kepler-model-db samples not found at " << kSamples.string()
                   << " (../shared absent)";
    }
    std::string test_name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::replace(test_name.begin(), test_name.end(), '/', '_');  // parameterised tests
    root = fs::temp_directory_path() / ("fetcher_test_" + std::to_string(getpid()) + "_" + test_name);
    fs::remove_all(root);
    files = root / "files";
    model_dir = root / "models";
    fs::create_directories(files);
    fs::create_directories(model_dir);
    for (const char* z : {"XgboostFitTrainer_1.zip", "LinearRegressionTrainer_1.zip"}) {
      fs::copy_file(kSamples / z, files / z);
    }
    fs::copy_file(kWeightJson, files / "weight.json");
    server = std::make_unique<FakeServer>(files);
    ASSERT_TRUE(server->ok()) << "the fake model server did not start";
  }
  void TearDown() override {
    server.reset();
    fs::remove_all(root);
  }

  // Small timeouts and backoffs: failures show up in well under a second.
  static FetchConfig quick_config() {
    FetchConfig c = make_fetch_config({}).value();
    c.connect_timeout = 2s;
    c.total_timeout = 10s;
    c.retries = 0;
    c.backoff = 20ms;
    c.backoff_max = 100ms;
    return c;
  }
  static PrefixConfig& prefix(FetchConfig& c, std::string_view name) {
    for (PrefixConfig& p : c.prefixes) {
      if (p.prefix == name) return p;
    }
    throw std::logic_error("no prefix");
  }
  // Non-hidden regular files under the landing root, relative to it.
  std::vector<std::string> landed() const {
    std::vector<std::string> out;
    const fs::path base = model_dir / "fetched";
    std::error_code ec;
    for (fs::recursive_directory_iterator it(base, ec), end; !ec && it != end; it.increment(ec)) {
      if (it->is_regular_file()) out.push_back(fs::relative(it->path(), base).string());
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  // Every test, its set-up and tear-down included, in 60 s (the daemon tests re-arm it
  // for longer).
  Watchdog dog_{60};
  fs::path root, files, model_dir;
  std::unique_ptr<FakeServer> server;
};

// ---- INIT_URL ---------------------------------------------------------------------

TEST_F(ModelFetcherTest, InitUrlZipLandsAndTheWatcherServesIt) {
  RegistryHolder holder(models::Registry::build(std::span<const models::ModelFolder>{}));
  ModelWatcher watcher(ModelLoader(model_dir, {}), holder, WatchOptions{.settle = 50ms});
  ASSERT_EQ(holder.get()->models().size(), 0U);

  FetchConfig c = quick_config();
  prefix(c, "NODE_COMPONENTS").init_url = server->url("/files/XgboostFitTrainer_1.zip");
  ModelFetcher fetcher(c, model_dir);
  ASSERT_TRUE(fetcher.wait_idle(30s));
  EXPECT_EQ(fetcher.stats().landed.load(), 1U);
  const fs::path dest =
      model_dir / "fetched/rapl-sysfs/AbsPower/init_node_components/XgboostFitTrainer_1.zip";
  ASSERT_TRUE(fs::exists(dest));
  EXPECT_EQ(read_file(dest), read_file(files / "XgboostFitTrainer_1.zip"));

  // The registry grows: the watcher found the landed zip, with source and output type.
  const models::Model* found = nullptr;
  for (int i = 0; i < 500 && found == nullptr; ++i) {
    auto reg = holder.get();
    for (const auto& m : reg->models()) {
      if (m->info().name == "XgboostFitTrainer_1") found = m.get();
    }
    if (found == nullptr) std::this_thread::sleep_for(10ms);
  }
  ASSERT_NE(found, nullptr) << "the watcher did not pick up the fetched model";
  EXPECT_EQ(found->info().source, "rapl-sysfs");
  EXPECT_EQ(found->info().output_type, "AbsPower");
}

using testing::LogCapture;

// A long download says how far it got every FETCH_PROGRESS_MS: bytes so far, the total
// when the server announced it, and the rate.
TEST_F(ModelFetcherTest, ALongDownloadLogsItsProgress) {
  LogCapture log;
  FetchConfig c = quick_config();
  c.progress_interval = 200ms;
  prefix(c, "NODE_COMPONENTS").init_url = server->url("/slow/2/XgboostFitTrainer_1.zip");
  prefix(c, "NODE_TOTAL").init_url = server->url("/slow-nolength/2/LinearRegressionTrainer_1.zip");
  const std::uintmax_t size = fs::file_size(files / "XgboostFitTrainer_1.zip");
  ModelFetcher fetcher(c, model_dir);
  ASSERT_TRUE(fetcher.wait_idle(30s));
  EXPECT_EQ(fetcher.stats().landed.load(), 2U);

  const auto known = log.lines_with("NODE_COMPONENTS_INIT_URL");
  std::vector<std::string> progress;
  for (const std::string& l : known) {
    if (l.find(" bytes (") != std::string::npos) progress.push_back(l);
  }
  // About ten lines over two seconds at 200 ms; at least a few, whatever the machine's load.
  ASSERT_GE(progress.size(), 3U) << ::testing::PrintToString(known);
  EXPECT_NE(progress.back().find(" of " + std::to_string(size) + " bytes"), std::string::npos)
      << progress.back();
  EXPECT_NE(progress.back().find("KiB/s"), std::string::npos) << progress.back();
  const auto unknown = log.lines_with("NODE_TOTAL_INIT_URL");
  bool size_unknown = false;
  for (const std::string& l : unknown) size_unknown |= l.find("bytes (size unknown)") != std::string::npos;
  EXPECT_TRUE(size_unknown) << ::testing::PrintToString(unknown);
  // Both transfers are timed and their bytes counted.
  EXPECT_GE(fetcher.stats().bytes.load(), size);
  std::uint64_t timed = 0;
  for (const auto& b : fetcher.stats().duration_buckets) timed += b.load();
  EXPECT_EQ(timed, 2U);
  EXPECT_GE(fetcher.stats().duration_sum_us.load(), 3'000'000U);  // two transfers of ~2 s
}

// A quick download logs no progress at all.
TEST_F(ModelFetcherTest, AQuickDownloadLogsNoProgress) {
  LogCapture log;
  FetchConfig c = quick_config();
  prefix(c, "NODE_COMPONENTS").init_url = server->url("/files/XgboostFitTrainer_1.zip");
  ModelFetcher fetcher(c, model_dir);
  ASSERT_TRUE(fetcher.wait_idle(30s));
  EXPECT_EQ(fetcher.stats().landed.load(), 1U);
  for (const std::string& l : log.lines_with("NODE_COMPONENTS_INIT_URL")) {
    EXPECT_EQ(l.find("KiB/s"), std::string::npos) << l;
  }
}

TEST_F(ModelFetcherTest, FileUrlsLandZipsAndWeightFiles) {
  FetchConfig c = quick_config();
  prefix(c, "NODE_COMPONENTS").init_url = "file://" + (files / "LinearRegressionTrainer_1.zip").string();
  prefix(c, "CONTAINER_TOTAL").init_url = "file://" + (files / "weight.json").string();
  ModelFetcher fetcher(c, model_dir);
  ASSERT_TRUE(fetcher.wait_idle(30s));
  EXPECT_EQ(landed(),
            (std::vector<std::string>{"acpi/DynPower/init_container_total/weight.json",
                                      "rapl-sysfs/AbsPower/init_node_components/LinearRegressionTrainer_1.zip"}));
  EXPECT_EQ(read_file(model_dir / "fetched/acpi/DynPower/init_container_total/weight.json"),
            read_file(kWeightJson));
  EXPECT_EQ(fetcher.stats().landed.load(), 2U);
}

TEST_F(ModelFetcherTest, RefetchReplacesTheFileEvenAcrossFormats) {
  for (const std::string name : {"LinearRegressionTrainer_1.zip", "XgboostFitTrainer_1.zip", "weight.json"}) {
    FetchConfig c = quick_config();
    prefix(c, "NODE_COMPONENTS").init_url = server->url("/files/" + name);
    ModelFetcher fetcher(c, model_dir);
    ASSERT_TRUE(fetcher.wait_idle(30s));
    ASSERT_EQ(fetcher.stats().landed.load(), 1U) << name;
    EXPECT_EQ(landed(), std::vector<std::string>{"rapl-sysfs/AbsPower/init_node_components/" + name});
    EXPECT_EQ(read_file(model_dir / "fetched/rapl-sysfs/AbsPower/init_node_components" / name),
              read_file(files / name));
  }
}

TEST_F(ModelFetcherTest, GarbageIsRefusedAndNeverLands) {
  struct Case {
    const char* prefix;
    std::string url;
  };
  FetchConfig c = quick_config();
  c.max_bytes = 64 * 1024;
  const std::vector<Case> cases = {
      {"NODE_TOTAL", server->url("/garbage")},
      {"NODE_COMPONENTS", server->url("/garbage.zip")},
      {"CONTAINER_TOTAL", server->url("/emptyzip")},
      {"CONTAINER_COMPONENTS", server->url("/notmodel.json")},
      {"PROCESS_TOTAL", server->url("/big")},
      {"PROCESS_COMPONENTS", server->url("/redirect-file")},
  };
  for (const Case& k : cases) prefix(c, k.prefix).init_url = k.url;
  ModelFetcher fetcher(c, model_dir);
  ASSERT_TRUE(fetcher.wait_idle(30s));
  EXPECT_EQ(fetcher.stats().landed.load(), 0U);
  EXPECT_EQ(fetcher.stats().refused.load(), 5U);  // the redirect fails before any body
  EXPECT_EQ(fetcher.stats().errors.load(), 1U);   // ... as a transfer error
  EXPECT_EQ(fetcher.stats().failed.load(), 6U);
  EXPECT_EQ(fetcher.stats().attempts.load(), 6U);
  EXPECT_TRUE(landed().empty());
  // No scratch folder is left behind either.
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(model_dir / "fetched", ec)) {
    ADD_FAILURE() << "left behind: " << e.path();
  }
}

TEST_F(ModelFetcherTest, TransientFailuresAreRetriedWithBackoff) {
  FetchConfig c = quick_config();
  c.retries = 3;
  prefix(c, "NODE_COMPONENTS").init_url = server->url("/flaky/2/XgboostFitTrainer_1.zip");
  ModelFetcher fetcher(c, model_dir);
  ASSERT_TRUE(fetcher.wait_idle(30s));
  EXPECT_EQ(fetcher.stats().landed.load(), 1U);
  EXPECT_EQ(fetcher.stats().attempts.load(), 3U);
  EXPECT_EQ(server->count("/flaky/2/XgboostFitTrainer_1.zip"), 3);
}

TEST_F(ModelFetcherTest, RetriesStopAtTheLimit) {
  FetchConfig c = quick_config();
  c.retries = 2;
  prefix(c, "NODE_COMPONENTS").init_url = server->url("/flaky/100/XgboostFitTrainer_1.zip");
  ModelFetcher fetcher(c, model_dir);
  ASSERT_TRUE(fetcher.wait_idle(30s));
  EXPECT_EQ(fetcher.stats().landed.load(), 0U);
  EXPECT_EQ(fetcher.stats().failed.load(), 1U);
  EXPECT_EQ(server->count("/flaky/100/XgboostFitTrainer_1.zip"), 3);
}

TEST_F(ModelFetcherTest, NoListenerFailsFast) {
  FetchConfig c = quick_config();
  c.retries = 1;
  // Nothing listens on port 1 of loopback: the connection is refused at once.
  prefix(c, "NODE_COMPONENTS").init_url = "http://127.0.0.1:1/model.zip";
  ModelFetcher fetcher(c, model_dir);
  ASSERT_TRUE(fetcher.wait_idle(20s));
  EXPECT_EQ(fetcher.stats().attempts.load(), 2U);
  EXPECT_EQ(fetcher.stats().failed.load(), 1U);
}

// ---- a server that never answers ----------------------------------------------------

TEST_F(ModelFetcherTest, TotalTimeoutFires) {
  FetchConfig c = quick_config();
  c.total_timeout = 1500ms;
  prefix(c, "NODE_COMPONENTS").init_url = server->url("/hang");
  const auto t0 = Clock::now();
  ModelFetcher fetcher(c, model_dir);
  ASSERT_TRUE(fetcher.wait_idle(20s));
  const auto took = Clock::now() - t0;
  EXPECT_GE(took, 1400ms);
  EXPECT_LT(took, 10s);
  EXPECT_EQ(fetcher.stats().failed.load(), 1U);
  EXPECT_TRUE(landed().empty());
}

TEST_F(ModelFetcherTest, DestructorAbortsATransferInProgress) {
  FetchConfig c = quick_config();
  c.total_timeout = 60s;
  prefix(c, "NODE_COMPONENTS").init_url = server->url("/hang");
  auto fetcher = std::make_unique<ModelFetcher>(c, model_dir);
  for (int i = 0; i < 200 && server->count("/hang") == 0; ++i) std::this_thread::sleep_for(20ms);
  ASSERT_EQ(server->count("/hang"), 1);
  EXPECT_FALSE(fetcher->idle());
  const auto t0 = Clock::now();
  fetcher.reset();
  EXPECT_LT(Clock::now() - t0, 3s) << "stopping waited on the transfer";
}

TEST_F(ModelFetcherTest, DestructorDoesNotWaitForABackoff) {
  FetchConfig c = quick_config();
  c.retries = 5;
  c.backoff = 60s;
  c.backoff_max = 60s;
  prefix(c, "NODE_COMPONENTS").init_url = server->url("/flaky/100/x.zip");
  auto fetcher = std::make_unique<ModelFetcher>(c, model_dir);
  for (int i = 0; i < 200 && fetcher->stats().attempts.load() == 0; ++i) std::this_thread::sleep_for(20ms);
  std::this_thread::sleep_for(100ms);
  const auto t0 = Clock::now();
  fetcher.reset();
  EXPECT_LT(Clock::now() - t0, 1s);
}

// ---- the model server ---------------------------------------------------------------

TEST_F(ModelFetcherTest, ModelServerAnswersWithAZip) {
  FetchConfig c = quick_config();
  c.model_server_enable = true;
  c.model_server_url = server->url();
  prefix(c, "NODE_COMPONENTS").trainer = "XgboostFitTrainer";
  prefix(c, "NODE_COMPONENTS").filters = "mae:100";
  ModelFetcher fetcher(c, model_dir);
  ASSERT_TRUE(fetcher.wait_idle(30s));
  EXPECT_EQ(fetcher.stats().landed.load(), 1U);
  const std::vector<std::string> files_landed = landed();
  ASSERT_EQ(files_landed.size(), 1U);
  EXPECT_TRUE(files_landed[0].starts_with("rapl-sysfs/AbsPower/server_")) << files_landed[0];
  // Named as the server's attachment: the model's own name.
  EXPECT_TRUE(files_landed[0].ends_with("/XgboostFitTrainer_1.zip")) << files_landed[0];
  EXPECT_EQ(read_file(model_dir / "fetched" / files_landed[0]), read_file(files / "XgboostFitTrainer_1.zip"));

  // Only the configured prefix was asked, with the model server's field names.
  const nlohmann::json s = server->stats();
  ASSERT_EQ(s["bodies"]["/model"].size(), 1U);
  const nlohmann::json& body = s["bodies"]["/model"][0];
  EXPECT_EQ(body["output_type"], "AbsPower");
  EXPECT_EQ(body["source"], "rapl-sysfs");
  EXPECT_EQ(body["trainer_name"], "XgboostFitTrainer");
  EXPECT_EQ(body["filter"], "mae:100");
  EXPECT_EQ(body["weight"], false);
  EXPECT_EQ(body["node_type"], -1);
  EXPECT_TRUE(body["metrics"].is_array());
  EXPECT_EQ(body["metrics"].size(), c.start_features.size());
  EXPECT_TRUE(body["spec"]["cores"].is_number_integer());
}

TEST_F(ModelFetcherTest, EveryPrefixIsAskedOnceWhenNoneIsConfigured) {
  FetchConfig c = quick_config();
  c.model_server_enable = true;
  c.model_server_url = server->url();
  ModelFetcher fetcher(c, model_dir);
  ASSERT_TRUE(fetcher.wait_idle(30s));
  // Six prefixes, four distinct (source, output type) pairs.
  EXPECT_EQ(server->count("/model"), 4);
  EXPECT_EQ(landed().size(), 4U);
}

TEST_F(ModelFetcherTest, WeightQueriesLandAWeightFile) {
  FetchConfig c = quick_config();
  c.model_server_enable = true;
  c.model_server_url = server->url();
  prefix(c, "NODE_TOTAL").trainer = "LinearRegressionTrainer";
  ModelFetcher fetcher(c, model_dir);
  ASSERT_TRUE(fetcher.wait_idle(30s));
  ASSERT_EQ(fetcher.stats().landed.load(), 1U);  // the start-up query, a zip
  const ModelQuery q{.features = {"bpf_cpu_time_ms", "bpf_page_cache_hit"},
                     .output_type = "DynPower",
                     .source = "rapl-sysfs",
                     .trainer = "SGDRegressorTrainer",
                     .filter = "",
                     .weight = true};
  EXPECT_EQ(fetcher.want(q), ModelFetcher::Want::kQueued);
  ASSERT_TRUE(fetcher.wait_idle(30s));
  bool found = false;
  for (const std::string& f : landed()) {
    if (f.starts_with("rapl-sysfs/DynPower/server_") && f.ends_with("/SGDRegressorTrainer.json")) {
      found = true;
      EXPECT_EQ(read_file(model_dir / "fetched" / f), read_file(kWeightJson));
    }
  }
  EXPECT_TRUE(found);
}

class NoModelTest : public ModelFetcherTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(NoModelTest, IsAskedOnceAndThenRests) {
  const std::string path = GetParam();
  FetchConfig c = quick_config();
  c.retries = 3;
  c.model_server_enable = true;
  c.model_server_url = server->url();
  c.model_server_req_path = path;
  prefix(c, "NODE_COMPONENTS").trainer = "XgboostFitTrainer";
  ModelFetcher fetcher(c, model_dir);
  ASSERT_TRUE(fetcher.wait_idle(30s));
  EXPECT_EQ(fetcher.stats().no_model.load(), 1U);
  EXPECT_EQ(fetcher.stats().failed.load(), 0U);

  // The same question again, many times, from the request path: no new request.
  const ModelQuery again{.features = c.start_features,
                         .output_type = "AbsPower",
                         .source = "rapl-sysfs",
                         .trainer = "XgboostFitTrainer",
                         .filter = "",
                         .weight = false};
  for (int i = 0; i < 100; ++i) EXPECT_EQ(fetcher.want(again), ModelFetcher::Want::kResting);
  ASSERT_TRUE(fetcher.wait_idle(5s));
  EXPECT_EQ(server->count(path), 1);
  EXPECT_TRUE(landed().empty());
}

INSTANTIATE_TEST_SUITE_P(Answers, NoModelTest, ::testing::Values("/nomodel", "/gone"));

TEST_F(ModelFetcherTest, NoModelRestEndsAfterTheBackoff) {
  FetchConfig c = quick_config();
  c.model_server_enable = true;
  c.model_server_url = server->url();
  c.model_server_req_path = "/nomodel";
  c.not_found_backoff = 1000ms;
  prefix(c, "NODE_COMPONENTS").trainer = "XgboostFitTrainer";
  ModelFetcher fetcher(c, model_dir);
  ASSERT_TRUE(fetcher.wait_idle(30s));
  ModelQuery q{.features = c.start_features,
               .output_type = "AbsPower",
               .source = "rapl-sysfs",
               .trainer = "XgboostFitTrainer",
               .filter = "",
               .weight = false};
  EXPECT_EQ(fetcher.want(q), ModelFetcher::Want::kResting);
  std::this_thread::sleep_for(1100ms);
  EXPECT_EQ(fetcher.want(q), ModelFetcher::Want::kQueued);
  ASSERT_TRUE(fetcher.wait_idle(30s));
  // The second refusal rests twice as long: still resting after the first rest's length.
  std::this_thread::sleep_for(1100ms);
  EXPECT_EQ(fetcher.want(q), ModelFetcher::Want::kResting);
  EXPECT_EQ(server->count("/nomodel"), 2);
}

TEST_F(ModelFetcherTest, GarbageFromTheModelServerIsRefused) {
  FetchConfig c = quick_config();
  c.model_server_enable = true;
  c.model_server_url = server->url();
  c.model_server_req_path = "/garbage-model";
  prefix(c, "NODE_COMPONENTS").trainer = "XgboostFitTrainer";
  ModelFetcher fetcher(c, model_dir);
  ASSERT_TRUE(fetcher.wait_idle(30s));
  EXPECT_EQ(fetcher.stats().refused.load(), 1U);
  EXPECT_TRUE(landed().empty());
}

// ---- want(): the on-demand path -----------------------------------------------------

TEST_F(ModelFetcherTest, WantDeduplicatesConcurrentCallers) {
  FetchConfig c = quick_config();
  c.model_server_enable = true;
  c.model_server_url = server->url();
  c.model_server_req_path = "/slowmodel";
  prefix(c, "NODE_TOTAL").trainer = "LinearRegressionTrainer";  // one start-up query
  ModelFetcher fetcher(c, model_dir);
  ASSERT_TRUE(fetcher.wait_idle(30s));
  ASSERT_EQ(server->count("/slowmodel"), 1);

  const ModelQuery q{.features = {"cpu_cycles", "cpu_instructions", "cache_miss"},
                     .output_type = "DynPower",
                     .source = "intel_rapl",
                     .trainer = "XgboostFitTrainer",
                     .filter = "",
                     .weight = false};
  std::atomic<int> queued{0}, duplicate{0}, other{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; ++t) {
    callers.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        ModelQuery mine = q;
        // The same question, asked with the features in another order and another
        // spelling of the source.
        if ((t + i) % 2 == 1) std::reverse(mine.features.begin(), mine.features.end());
        if (i % 3 == 0) mine.source = "rapl-sysfs";
        const auto t0 = Clock::now();
        switch (fetcher.want(mine)) {
          case ModelFetcher::Want::kQueued: ++queued; break;
          case ModelFetcher::Want::kDuplicate: ++duplicate; break;
          default: ++other; break;
        }
        EXPECT_LT(Clock::now() - t0, 50ms) << "want() blocked";
      }
    });
  }
  for (auto& th : callers) th.join();
  EXPECT_EQ(queued.load(), 1);
  EXPECT_EQ(duplicate.load(), 199);
  EXPECT_EQ(other.load(), 0);
  ASSERT_TRUE(fetcher.wait_idle(30s));
  EXPECT_EQ(server->count("/slowmodel"), 2);
  // Landed recently: asking again is a duplicate, not a new request.
  EXPECT_EQ(fetcher.want(q), ModelFetcher::Want::kDuplicate);
  // A different question is asked.
  ModelQuery other_q = q;
  other_q.trainer = "LinearRegressionTrainer";
  EXPECT_EQ(fetcher.want(other_q), ModelFetcher::Want::kQueued);
  ASSERT_TRUE(fetcher.wait_idle(30s));
  EXPECT_EQ(server->count("/slowmodel"), 3);
  EXPECT_EQ(fetcher.stats().landed.load(), 3U);
  int dyn = 0;
  for (const std::string& f : landed()) dyn += f.starts_with("rapl-sysfs/DynPower/server_") ? 1 : 0;
  EXPECT_EQ(dyn, 2);
}

TEST_F(ModelFetcherTest, WantRefusesWhenDisabledOrMalformed) {
  FetchConfig c = quick_config();
  {
    ModelFetcher off(c, model_dir);
    EXPECT_EQ(off.want({.features = {"cpu_cycles"}, .output_type = "AbsPower", .source = "acpi",
                        .trainer = "", .filter = "", .weight = false}),
              ModelFetcher::Want::kDisabled);
  }
  c.model_server_enable = true;
  c.model_server_url = server->url();
  c.model_server_req_path = "/nomodel";
  ModelFetcher on(c, model_dir);
  ASSERT_TRUE(on.wait_idle(30s));
  EXPECT_EQ(on.want({.features = {}, .output_type = "AbsPower", .source = "acpi", .trainer = "",
                     .filter = "", .weight = false}),
            ModelFetcher::Want::kRefused);
  EXPECT_EQ(on.want({.features = {"cpu\ncycles"}, .output_type = "AbsPower", .source = "acpi",
                     .trainer = "", .filter = "", .weight = false}),
            ModelFetcher::Want::kRefused);
  EXPECT_EQ(on.want({.features = {std::string(10000, 'x')}, .output_type = "AbsPower",
                     .source = "acpi", .trainer = "", .filter = "", .weight = false}),
            ModelFetcher::Want::kRefused);
}

TEST_F(ModelFetcherTest, DistinctQueriesAreBounded) {
  Watchdog dog(120);
  FetchConfig c = quick_config();
  c.model_server_enable = true;
  c.model_server_url = server->url();
  c.model_server_req_path = "/nomodel";
  prefix(c, "NODE_TOTAL").trainer = "T";
  ModelFetcher fetcher(c, model_dir);
  int refused = 0;
  for (int i = 0; i < 400; ++i) {
    const auto w = fetcher.want({.features = {"f" + std::to_string(i)}, .output_type = "AbsPower",
                                 .source = "acpi", .trainer = "", .filter = "", .weight = false});
    refused += w == ModelFetcher::Want::kRefused ? 1 : 0;
  }
  EXPECT_GT(refused, 0);
  EXPECT_LE(400 - refused, 256);
}

// ---- the real estimatord ---------------------------------------------------------------

// estimatord with extra environment variables; SIGTERM and reaped on destruction, its
// segment (the --shm-name in `args`) removed.
class Estimatord {
 public:
  Estimatord(std::vector<std::string> args, const std::vector<std::string>& env)
      : segment_(shm_name_in(args)) {
    args.insert(args.begin(), ESTIMATORD_PATH);
    process_.start(args, {.env = env});
  }
  ~Estimatord() { process_.stop(SIGTERM); }
  Estimatord(const Estimatord&) = delete;
  Estimatord& operator=(const Estimatord&) = delete;
  // The exit status, or -1 while it runs after `timeout`.
  int wait_exit(std::chrono::milliseconds timeout) {
    const int status = process_.wait_exit(timeout);
    if (status == -1) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  }
  bool running() const { return process_.pid() > 0; }

 private:
  static std::string shm_name_in(const std::vector<std::string>& args) {
    const auto name = std::find(args.begin(), args.end(), "--shm-name");
    return name != args.end() && name + 1 != args.end() ? *(name + 1) : "";
  }

  estimator::testing::TrackedSegment segment_;
  estimator::testing::ChildProcess process_;
};

TEST_F(ModelFetcherTest, EstimatordServesLocalModelsAtOnceAndFetchedOnesLater) {
  Watchdog dog(120);
  const std::string shm = "estimator-fetch-it-" + std::to_string(getpid());
  Estimatord daemon({"--shm-name", shm, "--model-dir", model_dir.string(), "--log-level", "warn",
                     "--slots", "4", "--slot-bytes", "65536"},
                    {"MODEL_SERVER_ENABLE=true", "MODEL_SERVER_URL=" + server->url(),
                     "MODEL_SERVER_MODEL_REQ_PATH=/slowmodel/6",  // answers after 6 s
                     "NODE_COMPONENTS_TRAINER=XgboostFitTrainer", "FETCH_RETRIES=0"});
  ASSERT_TRUE(daemon.running());
  client::Client client({.shm_name = shm});
  const auto t0 = Clock::now();
  bool up = false;
  for (int i = 0; i < 400 && !up; ++i) {
    up = client.ping(100ms).ok();
    if (!up) std::this_thread::sleep_for(10ms);
  }
  ASSERT_TRUE(up) << "estimatord did not start";
  // Start-up did not wait for the model server's six-second answer: the daemon served
  // before anything landed.
  EXPECT_LT(Clock::now() - t0, 6s);
  EXPECT_TRUE(landed().empty());

  const std::string_view features[] = {"bpf_block_irq", "bpf_cpu_time_ms", "bpf_net_rx_irq",
                                       "bpf_net_tx_irq", "bpf_page_cache_hit"};
  const float row[] = {0, 1000, 10, 10, 0};
  const client::Request req{.selector = {.name = "XgboostFitTrainer_1"},
                            .features = features, .matrix = row, .rows = 1, .cols = 5};
  EXPECT_FALSE(client.estimate(req).ok()) << "the fetched model served before it was fetched";
  bool served = false;
  for (int i = 0; i < 300 && !served; ++i) {
    auto reply = client.estimate(req);
    served = reply.ok() && reply->model().name == "XgboostFitTrainer_1";
    if (!served) std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(served) << "the fetched model never served";
  // The start-up question (NODE_COMPONENTS, trainer XgboostFitTrainer) was asked once; the
  // request that found no model may have asked once more, with its own shape.
  int startup_asks = 0;
  const nlohmann::json st = server->stats();
  for (const auto& body : st["bodies"]["/slowmodel/6"]) {
    if (body.value("trainer_name", "") == "XgboostFitTrainer") ++startup_asks;
  }
  EXPECT_EQ(startup_asks, 1) << st.dump();
}

// A request that no loaded model fits asks the model server, in the background, with the
// request's own features, output type, source, trainer and filter (RegistryHolder's shape
// observer, wired in estimatord_main.cpp before the daemon serves).
TEST_F(ModelFetcherTest, EstimatordAsksTheModelServerForARequestNoModelFits) {
  Watchdog dog(120);
  const std::string shm = "estimator-fetch-want-" + std::to_string(getpid());
  Estimatord daemon({"--shm-name", shm, "--model-dir", model_dir.string(), "--log-level", "warn",
                     "--slots", "4", "--slot-bytes", "65536"},
                    {"MODEL_SERVER_ENABLE=true", "MODEL_SERVER_URL=" + server->url(),
                     "MODEL_SERVER_MODEL_REQ_PATH=/nomodel", "FETCH_RETRIES=0"});
  ASSERT_TRUE(daemon.running());
  client::Client client({.shm_name = shm});
  bool up = false;
  for (int i = 0; i < 400 && !up; ++i) {
    up = client.ping(100ms).ok();
    if (!up) std::this_thread::sleep_for(10ms);
  }
  ASSERT_TRUE(up) << "estimatord did not start";

  const std::string_view features[] = {"cpu_cycles", "unheard_of_counter"};
  const float row[] = {1e9F, 3};
  const client::Request req{
      .selector = {.trainer = "MadeUpTrainer", .output_type = "DynPower", .source = "acpi",
                   .filter = "mae:5"},
      .features = features, .matrix = row, .rows = 1, .cols = 2};
  // Sent once per round, as an exporter sends its request every interval, until the model
  // server has been asked (the first request asks: EstimatordsFirstRequestAsksTheModelServer).
  nlohmann::json asked;
  for (int i = 0; i < 100 && asked.is_null(); ++i) {
    auto reply = client.estimate(req);
    ASSERT_FALSE(reply.ok());
    EXPECT_EQ(reply.status().code(), Code::kNotFound) << reply.status().to_string();
    const nlohmann::json st = server->stats();
    if (st.is_object() && st["bodies"].contains("/nomodel")) {
      for (const auto& body : st["bodies"]["/nomodel"]) {
        if (body.value("trainer_name", "") == "MadeUpTrainer") asked = body;
      }
    }
    if (asked.is_null()) std::this_thread::sleep_for(50ms);
  }
  ASSERT_FALSE(asked.is_null()) << "the model server was not asked for the request's shape";
  EXPECT_EQ(asked["metrics"], nlohmann::json({"cpu_cycles", "unheard_of_counter"}));
  EXPECT_EQ(asked["output_type"], "DynPower");
  EXPECT_EQ(asked["source"], "acpi");
  EXPECT_EQ(asked["filter"], "mae:5");
}

TEST_F(ModelFetcherTest, EstimatordRefusesABadConfiguration) {
  const fs::path conf = root / "estimator.conf";
  std::ofstream(conf) << "# Kepler model keys\nNODE_TOTAL_INIT_URL=ftp://example.org/m.zip\n";
  Estimatord daemon({"--shm-name", "estimator-fetch-bad-" + std::to_string(getpid()), "--config",
                     conf.string(), "--log-level", "off"},
                    {});
  EXPECT_EQ(daemon.wait_exit(20s), 2);
}

// ---- pure functions ------------------------------------------------------------------

TEST(ModelQueryTest, KeyIgnoresFeatureOrderAndSourceSpelling) {
  ModelQuery a{.features = {"b", "a", "a"}, .output_type = "DynPower", .source = "intel_rapl",
               .trainer = "", .filter = "", .weight = false};
  ModelQuery b{.features = {"a", "b"}, .output_type = "DynComponentPower", .source = "rapl-sysfs",
               .trainer = "", .filter = "", .weight = false};
  EXPECT_EQ(a.key(), b.key());
  b.weight = true;
  EXPECT_NE(a.key(), b.key());
  b.weight = false;
  b.trainer = "X";
  EXPECT_NE(a.key(), b.key());
}

TEST(ModelQueryTest, RequestBodyHasTheModelServersFields) {
  const ModelQuery q{.features = {"bpf_cpu_time_ms", "cpu_architecture"}, .output_type = "AbsPower",
                     .source = "rapl", .trainer = "SGDRegressorTrainer", .filter = "mae:5",
                     .weight = true};
  const auto body = nlohmann::json::parse(model_request_body(q, 3, false));
  EXPECT_EQ(body["metrics"], nlohmann::json({"bpf_cpu_time_ms", "cpu_architecture"}));
  EXPECT_EQ(body["output_type"], "AbsPower");
  EXPECT_EQ(body["source"], "rapl-sysfs");
  EXPECT_EQ(body["node_type"], 3);
  EXPECT_EQ(body["weight"], true);
  EXPECT_EQ(body["trainer_name"], "SGDRegressorTrainer");
  EXPECT_EQ(body["filter"], "mae:5");
  EXPECT_FALSE(body.contains("spec"));
  EXPECT_FALSE(body.contains("machine_spec"));  // the server's constructor would reject it
}

// Whether `server` was POSTed, at /nomodel, a question naming `trainer` within 20 s (the
// probe, a Python client, is read until it answers); `st` keeps the last stats read.
bool asked_for(const FakeServer& server, const std::string& trainer, nlohmann::json& st) {
  for (const auto end = Clock::now() + 20s; Clock::now() < end;) {
    st = server.stats();
    if (st.is_object() && st["bodies"].contains("/nomodel")) {
      for (const auto& body : st["bodies"]["/nomodel"]) {
        if (body.value("trainer_name", "") == trainer) return true;
      }
    }
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

// The daemon's very first request, sent once the moment its segment answers, asks the model
// server too: the shape observer is wired before the segment is marked serving. Start-up
// work is made to take a while, as on a slow disk, so that a gap between serving and
// wiring would show: the metrics server and the Kepler socket are on, and scratch folders
// of fetches cut short by a crash wait to be removed.
TEST_F(ModelFetcherTest, EstimatordsFirstRequestAsksTheModelServer) {
  Watchdog dog(120);
  for (int i = 0; i < 300; ++i) {
    const fs::path scratch = model_dir / "fetched" / (".incoming-" + std::to_string(i));
    fs::create_directories(scratch);
    std::ofstream(scratch / "model.zip") << "cut short";
  }
  const std::string shm = "estimator-fetch-first-" + std::to_string(getpid());
  Estimatord daemon({"--shm-name", shm, "--model-dir", model_dir.string(), "--log-level", "warn",
                     "--slots", "4", "--slot-bytes", "65536", "--metrics-address", "127.0.0.1:0",
                     "--socket", (root / "kepler.sock").string()},
                    {"MODEL_SERVER_ENABLE=true", "MODEL_SERVER_URL=" + server->url(),
                     "MODEL_SERVER_MODEL_REQ_PATH=/nomodel", "FETCH_RETRIES=0"});
  ASSERT_TRUE(daemon.running());
  client::Client client({.shm_name = shm});
  // No sleep between tries: the request must follow readiness as closely as a client can.
  bool up = false;
  for (const auto end = Clock::now() + 30s; !up && Clock::now() < end;) {
    up = client.ping(100ms).ok();
    if (!up) std::this_thread::yield();
  }
  ASSERT_TRUE(up) << "estimatord did not start";
  const std::string_view features[] = {"cpu_cycles", "unheard_of_counter"};
  const float row[] = {1e9F, 3};
  const client::Request req{.selector = {.trainer = "FirstRequestTrainer"},
                            .features = features, .matrix = row, .rows = 1, .cols = 2};
  const auto reply = client.estimate(req);
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), Code::kNotFound) << reply.status().to_string();

  // Sent once, never again: only that request can have asked.
  nlohmann::json st;
  EXPECT_TRUE(asked_for(*server, "FirstRequestTrainer", st))
      << "the first request did not ask the model server: " << st.dump();
  EXPECT_FALSE(fs::exists(model_dir / "fetched" / ".incoming-0"));
}

// Start::kLater, as estimatord wires its fetcher before it serves: nothing touches the disk
// or the network until start(), and a want() made before it is asked after.
TEST_F(ModelFetcherTest, ADeferredFetcherTouchesNothingUntilStarted) {
  Watchdog dog(60);
  const fs::path scratch = model_dir / "fetched" / ".incoming-crashed";
  fs::create_directories(scratch);
  FetchConfig c = quick_config();
  c.model_server_enable = true;
  c.model_server_url = server->url();
  c.model_server_req_path = "/nomodel";
  prefix(c, "NODE_COMPONENTS").init_url = server->url("/files/XgboostFitTrainer_1.zip");
  ModelFetcher fetcher(c, model_dir, ModelFetcher::Start::kLater);
  EXPECT_EQ(fetcher.want({.features = {"cpu_cycles"}, .output_type = "AbsPower", .source = "",
                          .trainer = "BeforeStartTrainer", .filter = "", .weight = false}),
            ModelFetcher::Want::kQueued);
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(fetcher.stats().attempts.load(), 0U);
  EXPECT_TRUE(fs::exists(scratch));
  EXPECT_EQ(server->count("/files/XgboostFitTrainer_1.zip"), 0);

  fetcher.start();
  fetcher.start();  // once
  ASSERT_TRUE(fetcher.wait_idle(30s));
  EXPECT_FALSE(fs::exists(scratch));
  EXPECT_EQ(landed(), std::vector<std::string>{
                          "rapl-sysfs/AbsPower/init_node_components/XgboostFitTrainer_1.zip"});
  nlohmann::json st;
  EXPECT_TRUE(asked_for(*server, "BeforeStartTrainer", st)) << st.dump();
}

}  // namespace
}  // namespace estimator::service
