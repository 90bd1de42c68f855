// SPDX-License-Identifier: Apache-2.0
// The real estimatord with --metrics-address: requests made with the C++ client over
// shared memory show up in a scrape over plain TCP, counted by model and status, and
// the info gauge lists the embedded default models with their error figures.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
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
#include "tests/support/watchdog.h"

extern char** environ;

namespace estimator {
namespace {

using namespace std::chrono_literals;
using testing::http_get;
using testing::sample;

using estimator::testing::track_child;
using estimator::testing::track_segment;
using estimator::testing::untrack_child;
using estimator::testing::untrack_segment;
using estimator::testing::Watchdog;

using testing::read_file;
using Daemon = testing::MetricsDaemon;

TEST(MetricsScrapeTest, CountsClientRequestsErrorsAndListsTheDefaultModels) {
  Watchdog dog(60);
  const std::string shm = "estimator-it-metrics-" + std::to_string(getpid());
  Daemon daemon(shm);
  const std::uint16_t port = daemon.start();
  ASSERT_NE(port, 0);

  client::Client c({.shm_name = shm});
  ASSERT_TRUE(c.ping(2s).ok());
  constexpr int kRequests = 37;
  const std::string_view features[] = {"bpf_cpu_time_ms", "bpf_page_cache_hit"};
  const float rows[] = {1200.f, 3.f, 80.f, 0.f, 5.f, 1.f};
  for (int i = 0; i < kRequests; ++i) {
    auto reply = c.estimate({.selector = {.output_type = "AbsPower", .source = "rapl-sysfs"},
                             .features = features, .matrix = rows, .rows = 3, .cols = 2});
    ASSERT_TRUE(reply.ok()) << reply.status().to_string();
    ASSERT_EQ(reply->model().name, "SGDRegressorTrainer_0");
  }
  // Errors: an unknown model (before a model is chosen) twice, and a chosen model that
  // lacks its features once.
  for (int i = 0; i < 2; ++i) {
    auto r = c.estimate({.selector = {.name = "no-such-model"}, .features = features,
                         .matrix = rows, .rows = 3, .cols = 2});
    ASSERT_FALSE(r.ok());
    ASSERT_EQ(r.status().code(), Code::kNotFound);
  }
  const std::string_view other[] = {"cpu_cycles"};
  auto missing = c.estimate({.selector = {.name = "SGDRegressorTrainer_0", .output_type = "AbsPower",
                                          .source = "rapl-sysfs"},
                             .features = other, .matrix = rows, .rows = 1, .cols = 1});
  ASSERT_FALSE(missing.ok());
  ASSERT_EQ(missing.status().code(), Code::kMissingFeatures);

  const std::string response = http_get(port, "/metrics");
  ASSERT_TRUE(response.starts_with("HTTP/1.1 200 OK\r\n")) << response;
  ASSERT_NE(response.find("Content-Type: text/plain; version=0.0.4"), std::string::npos);
  const std::string text = response.substr(response.find("\r\n\r\n") + 4);

  const std::string rapl = R"(model="SGDRegressorTrainer_0",source="rapl-sysfs",output_type="AbsPower")";
  EXPECT_EQ(sample(text, "estimator_requests_total{" + rapl + R"(,status="ok"})"), kRequests) << text;
  EXPECT_EQ(sample(text, "estimator_request_duration_seconds_count{" + rapl + "}"), kRequests);
  EXPECT_EQ(sample(text, "estimator_request_duration_seconds_bucket{" + rapl + R"(,le="+Inf"})"),
            kRequests);
  EXPECT_GT(sample(text, "estimator_request_duration_seconds_sum{" + rapl + "}"), 0);
  EXPECT_EQ(sample(text, "estimator_request_errors_total{" + rapl + "}"), 0);
  EXPECT_EQ(sample(text, R"(estimator_requests_total{model="",source="",output_type="",status="not_found"})"), 2);
  EXPECT_EQ(sample(text, R"(estimator_requests_total{model="",source="",output_type="",status="missing_features"})"), 1);
  EXPECT_EQ(sample(text, R"(estimator_request_errors_total{model="",source="",output_type=""})"), 3);
  EXPECT_GE(sample(text, "estimator_pings_total"), 1);  // the client's ping is no request
  EXPECT_EQ(sample(text, "estimator_models_loaded"), 5);
  EXPECT_EQ(sample(text, "estimator_slots_reclaimed_total"), 0);

  // The embedded defaults (data/model/README.md): four SGD weight models and the ratio
  // model; only rapl-sysfs AbsPower publishes its error figures.
  EXPECT_EQ(sample(text, R"(estimator_model_info{name="SGDRegressorTrainer_0",trainer="SGDRegressorTrainer",model_class="weight",output_type="AbsPower",source="rapl-sysfs",origin="embedded:rapl-sysfs/AbsPower/SGDRegressorTrainer_0"})"), 1) << text;
  EXPECT_EQ(sample(text, R"(estimator_model_error{name="SGDRegressorTrainer_0",source="rapl-sysfs",output_type="AbsPower",component="",metric="mae"})"), 60.78) << text;
  EXPECT_EQ(sample(text, R"(estimator_model_error{name="SGDRegressorTrainer_0",source="rapl-sysfs",output_type="AbsPower",component="",metric="mape"})"), 17.77);
  for (const char* where : {"acpi/AbsPower", "acpi/DynPower", "rapl-sysfs/DynPower"}) {
    EXPECT_NE(text.find(std::string(R"(origin="embedded:)") + where +
                        "/SGDRegressorTrainer_0\"} 1\n"),
              std::string::npos) << where;
  }
  // ... and per component (its metadata.json's package_mae, dram_mape, ...).
  const std::string sgd = R"(estimator_model_error{name="SGDRegressorTrainer_0",source="rapl-sysfs",output_type="AbsPower",component=)";
  EXPECT_EQ(sample(text, sgd + R"("package",metric="mae"})"), 60.78);
  EXPECT_EQ(sample(text, sgd + R"("package",metric="mape"})"), 50.93);
  EXPECT_EQ(sample(text, sgd + R"("dram",metric="mae"})"), 3.17);
  // Only that model publishes figures.
  for (std::size_t at = text.find("\nestimator_model_error{"); at != std::string::npos;
       at = text.find("\nestimator_model_error{", at + 1)) {
    EXPECT_EQ(text.compare(at + 1, sgd.size(), sgd), 0) << text.substr(at + 1, 200);
  }
  EXPECT_EQ(text.find("estimator_build_info{version=\""), text.rfind("estimator_build_info{version=\""));
  EXPECT_NE(text.find("estimator_build_info{version=\""), std::string::npos);
  EXPECT_GT(sample(text, "process_resident_memory_bytes"), 1 << 20);
  EXPECT_GT(sample(text, "process_open_fds"), 3);
  EXPECT_GE(sample(text, "process_cpu_seconds_total"), 0);
  EXPECT_NE(text.find(R"(estimator_model_info{name="Ratio",trainer="Ratio",model_class="ratio",output_type="DynPower",source="rapl-sysfs")"),
            std::string::npos);

  // A later scrape sees later requests.
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(c.estimate({.selector = {.output_type = "AbsPower", .source = "rapl-sysfs"},
                            .features = features, .matrix = rows, .rows = 3, .cols = 2}).ok());
  }
  const std::string again = http_get(port, "/metrics");
  EXPECT_EQ(sample(again.substr(again.find("\r\n\r\n") + 4),
                   "estimator_requests_total{" + rapl + R"(,status="ok"})"),
            kRequests + 3);
  EXPECT_TRUE(http_get(port, "/healthz").starts_with("HTTP/1.1 200 OK"));
  EXPECT_TRUE(http_get(port, "/readyz").starts_with("HTTP/1.1 200 OK"));
  EXPECT_TRUE(http_get(port, "/nope").starts_with("HTTP/1.1 404"));
}

// Readiness is the segment and the models: a daemon serving no model is alive (/livez)
// but not ready, and says why.
TEST(MetricsScrapeTest, HealthzIsNotReadyWithoutAModel) {
  Watchdog dog(60);
  const std::string shm = "estimator-it-metrics-nomodel-" + std::to_string(getpid());
  Daemon daemon(shm);
  const std::uint16_t port = daemon.start({"--no-default-models"});
  ASSERT_NE(port, 0);
  const std::string health = http_get(port, "/healthz");
  EXPECT_TRUE(health.starts_with("HTTP/1.1 503")) << health;
  EXPECT_NE(health.find("not ready: no model loaded"), std::string::npos) << health;
  EXPECT_TRUE(http_get(port, "/readyz").starts_with("HTTP/1.1 503"));
  EXPECT_TRUE(http_get(port, "/livez").starts_with("HTTP/1.1 200 OK"));
}

// A Keras file dropped into the model directory without metadata.json is not silently
// skipped: the daemon's load log names it with the reason, and the metrics count it.
TEST(MetricsScrapeTest, AKerasFileWithoutMetadataIsListedAsRefused) {
  Watchdog dog(60);
  const std::string shm = "estimator-it-metrics-h5-" + std::to_string(getpid());
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / (shm + "-models");
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir / "keras");
  std::ofstream(dir / "keras" / "model.h5") << "not even HDF5";
  std::ofstream(dir / "other.keras") << "PK";
  {
    Daemon daemon(shm);
    const std::uint16_t port = daemon.start({"--model-dir", dir.string()});
    ASSERT_NE(port, 0);
    const std::string log = daemon.log();
    for (const char* f : {"keras/model.h5", "other.keras"}) {
      const std::size_t at = log.find("refused " + (dir / f).string() + ": ");
      ASSERT_NE(at, std::string::npos) << f << "\n" << log;
      EXPECT_NE(log.find("without metadata.json", at), std::string::npos) << log;
    }
    const std::string response = http_get(port, "/metrics");
    EXPECT_EQ(sample(response.substr(response.find("\r\n\r\n") + 4), "estimator_models_refused"), 2);
    // The embedded defaults still serve: ready.
    EXPECT_TRUE(http_get(port, "/healthz").starts_with("HTTP/1.1 200 OK"));
  }
  std::filesystem::remove_all(dir);
}

// A segment someone deleted is not ready until the daemon has laid out a new one.
TEST(MetricsScrapeTest, HealthzFollowsTheSegment) {
  Watchdog dog(60);
  const std::string shm = "estimator-it-metrics-seg-" + std::to_string(getpid());
  Daemon daemon(shm);
  const std::uint16_t port = daemon.start();
  ASSERT_NE(port, 0);
  ASSERT_TRUE(http_get(port, "/healthz").starts_with("HTTP/1.1 200 OK"));
  // The daemon re-creates a deleted segment within a housekeeping tick, so a probe may
  // land after that: delete and probe until one probe sees the segment missing.
  const std::filesystem::path seg = std::filesystem::path("/dev/shm") / shm;
  std::string gone;
  for (int i = 0; i < 20 && !gone.starts_with("HTTP/1.1 503"); ++i) {
    std::error_code ec;
    std::filesystem::remove(seg, ec);
    gone = http_get(port, "/healthz");
  }
  EXPECT_TRUE(gone.starts_with("HTTP/1.1 503")) << gone;
  EXPECT_NE(gone.find(shm), std::string::npos) << gone;
  // The housekeeping thread lays out a new segment (every 250 ms): ready again.
  bool ready = false;
  for (int i = 0; i < 200 && !ready; ++i) {
    ready = http_get(port, "/healthz").starts_with("HTTP/1.1 200 OK");
    if (!ready) std::this_thread::sleep_for(25ms);
  }
  EXPECT_TRUE(ready) << http_get(port, "/healthz") << daemon.log();
}

// One Kepler JSON request over the unix socket: one connect, one write, read to EOF.
std::string kepler_call(const std::string& path, const std::string& body) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  std::string out;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::send(fd, body.data(), body.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(body.size())) {
    char buf[4096];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return out;
}

TEST(MetricsScrapeTest, KeplerSocketRequestsAreCountedByModelToo) {
  Watchdog dog(60);
  const std::string shm = "estimator-it-metrics-sock-" + std::to_string(getpid());
  const std::string socket_path = "/tmp/" + shm + ".sock";
  Daemon daemon(shm);
  const std::uint16_t port = daemon.start({"--socket", socket_path});
  ASSERT_NE(port, 0);
  const std::string reply = kepler_call(
      socket_path, R"({"metrics":["bpf_cpu_time_ms","bpf_page_cache_hit"],"values":[[10,1],[20,2]],)"
                   R"("output_type":"AbsPower","source":"acpi"})");
  ASSERT_NE(reply.find(R"("platform":[)"), std::string::npos) << reply;
  const std::string bad = kepler_call(socket_path, R"({"metrics":["cpu_cycles"],"values":[[1]],"output_type":"AbsPower"})");
  ASSERT_NE(bad.find("no model fits"), std::string::npos) << bad;

  const std::string response = http_get(port, "/metrics");
  const std::string text = response.substr(response.find("\r\n\r\n") + 4);
  const std::string acpi = R"(model="SGDRegressorTrainer_0",source="acpi",output_type="AbsPower")";
  EXPECT_EQ(sample(text, "estimator_requests_total{" + acpi + R"(,status="ok"})"), 1) << text;
  EXPECT_EQ(sample(text, R"(estimator_requests_total{model="",source="",output_type="",status="not_found"})"), 1);
  EXPECT_EQ(sample(text, "estimator_kepler_socket_requests_total"), 2);
  EXPECT_EQ(sample(text, "estimator_kepler_socket_errors_total"), 1);
}

TEST(MetricsScrapeTest, AnUnusableAddressStopsTheDaemonWithAClearError) {
  Watchdog dog(30);
  const std::string shm = "estimator-it-metrics-bad-" + std::to_string(getpid());
  const std::string log = (std::filesystem::temp_directory_path() / (shm + ".log")).string();
  const std::string cmd = std::string(ESTIMATORD_PATH) + " --shm-name " + shm +
                          " --metrics-address 127.0.0.1:notaport > " + log + " 2>&1";
  const int status = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_NE(WEXITSTATUS(status), 0);
  const std::string text = read_file(log);
  EXPECT_NE(text.find("--metrics-address"), std::string::npos) << text;
  EXPECT_NE(text.find("notaport"), std::string::npos) << text;
  std::filesystem::remove(log);
}

}  // namespace
}  // namespace estimator
