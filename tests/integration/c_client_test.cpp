// SPDX-License-Identifier: Apache-2.0
// The C ABI (libestimator_client.so, clients/c/estimator_client.h) end to end against the
// real estimatord: estimate, errors with their codes and messages, GetPower, ping, and a
// private daemon spawned and stopped through the library. Answers are compared with the
// same embedded model evaluated in this process.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "clients/c/estimator_client.h"
#include "common/power_total.h"
#include "daemon_process.h"
#include "models/embedded_defaults.h"
#include "models/registry.h"

namespace estimator::testing {
namespace {

using namespace std::chrono_literals;

// What the daemon should answer, from the embedded models evaluated in-process.
struct Expected {
  std::vector<std::string> components;
  std::vector<float> powers;  // rows x components
  std::string model;
};

Expected reference(const models::Selector& selector, const std::vector<std::string_view>& features,
                   const std::vector<float>& x, std::uint32_t rows,
                   const std::vector<NodePower>& node_power = {}) {
  static const auto registry = models::Registry::build(models::embedded_model_folders());
  auto m = registry->select(selector, features, !node_power.empty());
  EXPECT_TRUE(m.ok()) << m.status().to_string();
  if (!m.ok()) return {};
  const models::Model& model = **m;
  auto plan = model.plan(features);
  EXPECT_TRUE(plan.ok()) << plan.status().to_string();
  Expected e;
  e.components = model.info().components;
  e.model = model.info().name;
  e.powers.resize(rows * e.components.size());
  models::ModelInput in{models::ConstMatrixView(x.data(), rows, static_cast<Eigen::Index>(features.size())),
                        {}, node_power};
  EXPECT_TRUE(model.predict(**plan, in, models::MatrixView(e.powers.data(), rows, e.components.size())).ok());
  return e;
}

std::vector<double> totals(const Expected& e, std::uint32_t rows) {
  std::vector<std::string_view> names(e.components.begin(), e.components.end());
  std::vector<double> out;
  for (std::uint32_t r = 0; r < rows; ++r) {
    out.push_back(total_power<float>(names, std::span<const float>(e.powers).subspan(r * names.size(), names.size())));
  }
  return out;
}

struct ClientDeleter {
  void operator()(estimator_client* c) const { estimator_client_destroy(c); }
};
struct ReplyDeleter {
  void operator()(estimator_reply* r) const { estimator_reply_destroy(r); }
};
struct DaemonDeleter {
  void operator()(estimator_daemon* d) const { estimator_daemon_destroy(d); }
};
using ClientPtr = std::unique_ptr<estimator_client, ClientDeleter>;
using ReplyPtr = std::unique_ptr<estimator_reply, ReplyDeleter>;
using DaemonPtr = std::unique_ptr<estimator_daemon, DaemonDeleter>;

ClientPtr make_client(const std::string& shm, std::uint32_t timeout_ms = 2000) {
  estimator_client_options o{shm.c_str(), timeout_ms, 0};
  estimator_client* c = nullptr;
  estimator_error err;
  EXPECT_EQ(estimator_client_create(&o, &c, &err), ESTIMATOR_OK) << err.message;
  return ClientPtr(c);
}

const char* const kBpf[] = {"bpf_cpu_time_ms", "bpf_page_cache_hit"};
const std::vector<std::string_view> kBpfViews = {"bpf_cpu_time_ms", "bpf_page_cache_hit"};

// A request for the `rows` x `cols` matrix `x`, any model; the test narrows the selector.
estimator_request matrix_request(const char* const* features, std::size_t cols, const float* x, std::size_t rows) {
  estimator_request req{};
  req.features = features;
  req.cols = cols;
  req.matrix = x;
  req.rows = rows;
  return req;
}

class CClient : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(daemon_.start()) << "estimatord did not start";
    client_ = make_client(shm_);
  }
  std::string shm_ = unique_shm_name("c-abi");
  DaemonProcess daemon_{shm_};
  ClientPtr client_;
  Watchdog dog_{120};
};

TEST_F(CClient, EstimateMatchesTheModelEvaluatedInProcess) {
  const std::vector<float> x = {1200, 3, 80, 0, 95877, 10};
  estimator_request req = matrix_request(kBpf, 2, x.data(), 3);
  req.output_type = "AbsPower";
  req.source = "intel_rapl";  // Kepler's alias of rapl-sysfs
  estimator_reply* raw = nullptr;
  estimator_error err;
  ASSERT_EQ(estimator_estimate(client_.get(), &req, &raw, &err), ESTIMATOR_OK) << err.message;
  ReplyPtr reply(raw);
  EXPECT_EQ(err.code, ESTIMATOR_OK);
  EXPECT_STREQ(err.message, "");

  const Expected want = reference({.output_type = "AbsPower", .source = "rapl-sysfs"}, kBpfViews, x, 3);
  ASSERT_EQ(estimator_reply_rows(raw), 3u);
  ASSERT_EQ(estimator_reply_cols(raw), want.components.size());
  for (std::size_t c = 0; c < want.components.size(); ++c) {
    EXPECT_EQ(estimator_reply_component(raw, c), want.components[c]);
  }
  EXPECT_STREQ(estimator_reply_component(raw, 99), "");
  const float* p = estimator_reply_powers(raw);
  for (std::size_t k = 0; k < want.powers.size(); ++k) EXPECT_FLOAT_EQ(p[k], want.powers[k]) << k;

  const estimator_model_info m = estimator_reply_model(raw);
  EXPECT_EQ(std::string(m.name), want.model);
  EXPECT_STREQ(m.source, "rapl-sysfs");
  EXPECT_STREQ(m.output_type, "AbsPower");
  EXPECT_NEAR(m.mae, 60.78, 1e-9);
  EXPECT_DOUBLE_EQ(m.core_ratio, 1.0);
}

// 540 rows x 60 features (the model's two among 58 unused ones) do not fit one request of
// the test daemon's 65536-byte slots: the client sends them in several, the reply holds all.
TEST_F(CClient, MoreRowsThanOneSlotHoldsAreAnsweredWhole) {
  constexpr std::uint32_t kRows = 540, kCols = 60;
  std::vector<std::string> owned;
  for (std::uint32_t c = 0; c < kCols; ++c) owned.push_back("unused_" + std::to_string(c));
  owned[7] = kBpf[0];
  owned[31] = kBpf[1];
  std::vector<const char*> names;
  for (const auto& n : owned) names.push_back(n.c_str());
  const std::vector<std::string_view> views(owned.begin(), owned.end());
  std::vector<float> x(std::size_t{kRows} * kCols);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 613) % 90000);
  estimator_request req = matrix_request(names.data(), kCols, x.data(), kRows);
  req.output_type = "AbsPower";
  req.source = "rapl-sysfs";
  estimator_reply* raw = nullptr;
  estimator_error err;
  ASSERT_EQ(estimator_estimate(client_.get(), &req, &raw, &err), ESTIMATOR_OK) << err.message;
  ReplyPtr reply(raw);

  const Expected want = reference({.output_type = "AbsPower", .source = "rapl-sysfs"}, views, x, kRows);
  ASSERT_EQ(estimator_reply_rows(raw), kRows);
  ASSERT_EQ(estimator_reply_cols(raw), want.components.size());
  EXPECT_EQ(std::string(estimator_reply_model(raw).name), want.model);
  const float* p = estimator_reply_powers(raw);
  for (std::size_t k = 0; k < want.powers.size(); ++k) ASSERT_FLOAT_EQ(p[k], want.powers[k]) << k;
}

TEST_F(CClient, UnknownFeaturesAreRefusedWithTheMissingNamesInTheMessage) {
  const char* features[] = {"cpu_cycles", "no_such_feature"};
  const float x[] = {1, 2};
  estimator_request req = matrix_request(features, 2, x, 1);
  req.model_name = "SGDRegressorTrainer_0";
  req.output_type = "AbsPower";
  req.source = "rapl-sysfs";
  estimator_reply* raw = nullptr;
  estimator_error err;
  EXPECT_EQ(estimator_estimate(client_.get(), &req, &raw, &err), ESTIMATOR_MISSING_FEATURES);
  EXPECT_EQ(err.code, ESTIMATOR_MISSING_FEATURES);
  EXPECT_EQ(raw, nullptr);
  EXPECT_NE(std::string(err.message).find("bpf_cpu_time_ms"), std::string::npos) << err.message;
  EXPECT_STREQ(estimator_code_name(err.code), "missing_features");

  // Without a model name: nothing fits, and the closest candidate's missing features are named.
  req.model_name = nullptr;
  EXPECT_EQ(estimator_estimate(client_.get(), &req, &raw, &err), ESTIMATOR_NOT_FOUND);
  EXPECT_NE(std::string(err.message).find("bpf_cpu_time_ms"), std::string::npos) << err.message;

  req.model_name = "NoSuchModel";
  EXPECT_EQ(estimator_estimate(client_.get(), &req, &raw, &err), ESTIMATOR_NOT_FOUND);
  EXPECT_NE(std::string(err.message).find("NoSuchModel"), std::string::npos) << err.message;
}

TEST_F(CClient, MalformedCallsAreInvalidArgumentsNotCrashes) {
  const char* features[] = {"bpf_cpu_time_ms", nullptr};
  const float x[] = {1, 2};
  estimator_request req = matrix_request(features, 2, x, 1);
  estimator_reply* raw = nullptr;
  estimator_error err;
  EXPECT_EQ(estimator_estimate(client_.get(), &req, &raw, &err), ESTIMATOR_INVALID_ARGUMENT);
  EXPECT_STREQ(err.message, "features[1] is NULL");

  req.features = kBpf;
  req.matrix = nullptr;
  EXPECT_EQ(estimator_estimate(client_.get(), &req, &raw, &err), ESTIMATOR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(err.message).find("matrix is NULL"), std::string::npos);

  req.matrix = x;
  const float nan_x[] = {NAN, 1};
  req.matrix = nan_x;
  EXPECT_EQ(estimator_estimate(client_.get(), &req, &raw, &err), ESTIMATOR_INVALID_VALUE) << err.message;

  EXPECT_EQ(estimator_estimate(nullptr, &req, &raw, nullptr), ESTIMATOR_INVALID_ARGUMENT);  // NULL error is fine
  EXPECT_EQ(estimator_estimate(client_.get(), nullptr, &raw, &err), ESTIMATOR_INVALID_ARGUMENT);
  EXPECT_EQ(estimator_estimate(client_.get(), &req, nullptr, &err), ESTIMATOR_INVALID_ARGUMENT);

  // Accessors of a NULL reply answer neutrally.
  EXPECT_EQ(estimator_reply_rows(nullptr), 0u);
  EXPECT_EQ(estimator_reply_powers(nullptr), nullptr);
  EXPECT_STREQ(estimator_reply_model(nullptr).name, "");
  EXPECT_STREQ(estimator_code_name(77), "unknown");
}

TEST_F(CClient, GetPowerGivesTheTotalOfTheSmallestErrorModel) {
  const std::vector<float> x = {1200, 3, 80, 0};
  double powers[2] = {-1, -1};
  estimator_error err;
  ASSERT_EQ(estimator_get_power(client_.get(), "", kBpf, 2, x.data(), 2, nullptr, powers, &err), ESTIMATOR_OK)
      << err.message;
  const Expected want = reference({}, kBpfViews, x, 2);
  EXPECT_EQ(want.model, "SGDRegressorTrainer_0");  // the only default with a published error
  const std::vector<double> t = totals(want, 2);
  EXPECT_NEAR(powers[0], t[0], 1e-9 * std::fabs(t[0]));
  EXPECT_NEAR(powers[1], t[1], 1e-9 * std::fabs(t[1]));
  // package + dram of the rapl model (core and uncore are parts of package).
  EXPECT_NEAR(powers[0], want.powers[0] + want.powers[3], 1e-4);

  const char* bad[] = {"bpf_cpu_time_ms", "nonsense"};
  EXPECT_EQ(estimator_get_power(client_.get(), "SGDRegressorTrainer_0", bad, 2, x.data(), 2, nullptr, powers, &err),
            ESTIMATOR_MISSING_FEATURES);
  EXPECT_NE(std::string(err.message).find("bpf_page_cache_hit"), std::string::npos) << err.message;
}

TEST_F(CClient, GetPowerPassesMeasuredPowerToTheRatioModel) {
  // The ratio model's usage columns; bpf_cpu_time_ms stands in for the absent gpu usage.
  const char* features[] = {"cpu_instructions", "cache_miss", "bpf_cpu_time_ms"};
  const std::vector<std::string_view> views = {"cpu_instructions", "cache_miss", "bpf_cpu_time_ms"};
  const std::vector<float> x = {300, 10, 5, 100, 30, 15};
  const float core[] = {20, 10};  // two CPU packages
  const float dram[] = {8};
  const float gpu[] = {4};
  estimator_measured_power measured{core, 2, dram, 1, gpu, 1, nullptr, 0};
  double powers[2];
  estimator_error err;
  ASSERT_EQ(estimator_get_power(client_.get(), "Ratio", features, 3, x.data(), 2, &measured, powers, &err),
            ESTIMATOR_OK)
      << err.message;
  const std::vector<NodePower> np = {{"core", core, {}}, {"dram", dram, {}}, {"gpu", gpu, {}}};
  const Expected want = reference({.name = "Ratio"}, views, x, 2, np);
  const std::vector<double> t = totals(want, 2);
  EXPECT_NEAR(powers[0], t[0], 1e-5);
  EXPECT_NEAR(powers[1], t[1], 1e-5);
  // core is split by instructions (300 : 100 of 30 W), dram by cache misses (10 : 30 of
  // 8 W), gpu by cpu time (5 : 15 of 4 W): every measured watt lands on a row.
  EXPECT_NEAR(powers[0], 22.5 + 2 + 1, 1e-4);
  EXPECT_NEAR(powers[1], 7.5 + 6 + 3, 1e-4);

  // Without measured power the ratio model cannot serve.
  EXPECT_EQ(estimator_get_power(client_.get(), "Ratio", features, 3, x.data(), 2, nullptr, powers, &err),
            ESTIMATOR_MISSING_FEATURES);
  EXPECT_NE(std::string(err.message).find("node power"), std::string::npos) << err.message;

  measured.core = nullptr;  // count 2 with a NULL pointer
  EXPECT_EQ(estimator_get_power(client_.get(), "Ratio", features, 3, x.data(), 2, &measured, powers, &err),
            ESTIMATOR_INVALID_ARGUMENT);
}

TEST_F(CClient, PingAndAMissingDaemon) {
  estimator_error err;
  EXPECT_EQ(estimator_ping(client_.get(), 1000, &err), ESTIMATOR_OK) << err.message;
  EXPECT_EQ(std::string(estimator_client_shm_name(client_.get())), shm_);

  ClientPtr nobody = make_client(unique_shm_name("c-abi-nobody"), 200);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(estimator_ping(nobody.get(), 0, &err), ESTIMATOR_UNAVAILABLE);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  EXPECT_NE(std::string(err.message).find("estimator unavailable"), std::string::npos) << err.message;
}

TEST(CClientDaemon, SpawnServeAndStop) {
  Watchdog dog(120);
  estimator_daemon_options o{};
  o.binary = ESTIMATORD_PATH;
  estimator_daemon* raw = nullptr;
  estimator_error err;
  ASSERT_EQ(estimator_daemon_spawn(&o, &raw, &err), ESTIMATOR_OK) << err.message;
  DaemonPtr daemon(raw);
  const std::string shm = estimator_daemon_shm_name(raw);
  EXPECT_EQ(shm.rfind("estimator-spawned-", 0), 0u) << shm;
  const int64_t pid = estimator_daemon_pid(raw);
  EXPECT_GT(pid, 0);
  EXPECT_EQ(access(("/dev/shm/" + shm).c_str(), F_OK), 0);

  ClientPtr client = make_client(shm);
  double powers[1];
  const float x[] = {500, 1};
  ASSERT_EQ(estimator_get_power(client.get(), nullptr, kBpf, 2, x, 1, nullptr, powers, &err), ESTIMATOR_OK)
      << err.message;
  EXPECT_GT(powers[0], 0);

  int status = -1;
  ASSERT_EQ(estimator_daemon_stop(raw, &status, &err), ESTIMATOR_OK) << err.message;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "wait status " << status;
  EXPECT_EQ(estimator_daemon_pid(raw), -1);
  EXPECT_NE(access(("/dev/shm/" + shm).c_str(), F_OK), 0) << "segment removed";
  int again = -1;
  EXPECT_EQ(estimator_daemon_stop(raw, &again, &err), ESTIMATOR_OK);
  EXPECT_EQ(again, status);
  EXPECT_EQ(estimator_ping(client.get(), 200, &err), ESTIMATOR_UNAVAILABLE);
}

TEST(CClientDaemon, SpawnFailuresSayWhy) {
  Watchdog dog(60);
  estimator_daemon_options o{};
  o.binary = "/nonexistent/estimatord";
  estimator_daemon* raw = nullptr;
  estimator_error err;
  EXPECT_EQ(estimator_daemon_spawn(&o, &raw, &err), ESTIMATOR_NOT_FOUND);
  EXPECT_EQ(raw, nullptr);
  EXPECT_NE(std::string(err.message).find("/nonexistent/estimatord"), std::string::npos) << err.message;

  // The daemon refuses its arguments: the error carries its exit status.
  const char* args[] = {"--model-dir", "/nonexistent/models"};
  o.binary = ESTIMATORD_PATH;
  o.extra_args = args;
  o.extra_arg_count = 2;
  o.log_level = "off";
  EXPECT_EQ(estimator_daemon_spawn(&o, &raw, &err), ESTIMATOR_UNAVAILABLE);
  EXPECT_EQ(raw, nullptr);
  EXPECT_NE(std::string(err.message).find("exited with status 2"), std::string::npos) << err.message;
}

}  // namespace
}  // namespace estimator::testing
