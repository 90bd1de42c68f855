// SPDX-License-Identifier: Apache-2.0
// The seed's own 2022 model folders (../shared/model-samples/kepler-2022) served end to end
// by the real binaries: `estimator predict`, the shared-memory ring and Kepler's 2022 socket
// request (model_name, metrics, values, *_power) and the v0.9 form naming the model give
// scikit-learn's numbers (tools/kepler2022_reference.py); an empty model_name picks the smallest published mae;
// one row of CorrRatio gets all the measured power. And `estimator predict --components`
// serves every output of the three-output Keras sample (tools/keras_reference.py).
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "../models/kepler2022_reference.h"
#include "daemon_process.h"
#include "tests/support/shell_command.h"

namespace estimator::testing {
namespace {

namespace k22 = kepler2022;
using nlohmann::json;
using namespace std::chrono_literals;

// Standard output of a shell command; empty (and a failure) when it fails.
std::string run(const std::string& cmd) {
  CommandResult r = run_command(cmd);
  if (r.exit_code == 0) return r.out;
  ADD_FAILURE() << "failed: " << cmd << "\n" << r.out;
  return {};
}

// One request, one reply, as Kepler does it: connect, write, read until the server closes.
std::string call(const std::string& path, const std::string& request) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  std::string reply;
  if (connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0 &&
      send(fd, request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size())) {
    timeval tv{10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[8192];
    for (ssize_t n; (n = recv(fd, buf, sizeof buf, 0)) > 0;) reply.append(buf, static_cast<std::size_t>(n));
  }
  close(fd);
  return reply;
}

std::string number(float v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(v));  // reads back as v
  return buf;
}

// rows x cols of `m` as a JSON list of lists, or as CSV lines under a header.
std::string json_rows(const std::vector<float>& m, std::size_t cols) {
  std::string s = "[";
  for (std::size_t i = 0; i < m.size(); ++i) {
    s += (i % cols == 0 ? (i ? "],[" : "[") : ",") + number(m[i]);
  }
  return s + "]]";
}
std::string csv(std::span<const std::string_view> header, const std::vector<float>& m) {
  std::string s;
  for (std::size_t c = 0; c < header.size(); ++c) s += (c ? "," : "") + std::string(header[c]);
  for (std::size_t i = 0; i < m.size(); ++i) s += (i % header.size() == 0 ? "\n" : ",") + number(m[i]);
  return s + "\n";
}

// The numbers of `estimator predict`'s CSV after its header, row-major.
std::vector<double> predict_values(const std::string& out) {
  std::vector<double> v;
  std::istringstream in(out.substr(std::min(out.size(), out.find('\n') + 1)));
  std::string cell;
  while (std::getline(in, cell, '\n')) {
    std::istringstream line(cell);
    for (std::string x; std::getline(line, x, ',');) v.push_back(std::stod(x));
  }
  return v;
}

std::string request_2022(std::string_view model, std::span<const std::string_view> metrics,
                         const std::vector<float>& m, const std::string& power = "") {
  std::string names;
  for (std::string_view f : metrics) names += (names.empty() ? "\"" : ",\"") + std::string(f) + "\"";
  return R"({"model_name":")" + std::string(model) + R"(","metrics":[)" + names +
         R"(],"values":)" + json_rows(m, metrics.size()) + power + "}";
}

// The same request in the v0.6-v0.9 form: output_type makes it one (kepler_json.h), and
// model_name picks the folder, whose output type is unknown (a 2022 folder states none).
std::string request_v09(std::string_view model, std::span<const std::string_view> metrics,
                        const std::vector<float>& m) {
  std::string names;
  for (std::string_view f : metrics) names += (names.empty() ? "\"" : ",\"") + std::string(f) + "\"";
  return R"({"metrics":[)" + names + R"(],"values":)" + json_rows(m, metrics.size()) +
         R"(,"output_type":"AbsPower","source":"rapl-sysfs","system_features":[],)"
         R"("system_values":[],"trainer_name":"","filter":"","model_name":")" +
         std::string(model) + R"("})";
}

class SeedModels : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!std::filesystem::is_directory(k22::models_dir())) return;
    char tmpl[] = "/tmp/seed-models-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = new std::string(tmpl);
    socket_ = new std::string(*dir_ + "/estimator.sock");
    daemon_ = new DaemonProcess(unique_shm_name("seed"),
                                {"--model-dir", k22::models_dir().string(), "--socket", *socket_,
                                 "--no-fetch"});
    ASSERT_TRUE(daemon_->start()) << "estimatord did not start";
    for (int i = 0; i < 500 && !std::filesystem::exists(*socket_); ++i) std::this_thread::sleep_for(10ms);
    client_ = new client::Client({.shm_name = unique_shm_name("seed"), .timeout = 5s});
  }
  static void TearDownTestSuite() {
    delete client_;
    delete daemon_;
    if (dir_ != nullptr) std::filesystem::remove_all(*dir_);
    delete socket_;
    delete dir_;
  }
  void SetUp() override {
    REQUIRE_KEPLER_2022();
    ASSERT_TRUE(daemon_ != nullptr && daemon_->pid() > 0) << "estimatord is not running";
  }

  // The socket's reply powers to `request`: the 2022 list, or (v09) the only component of
  // a v0.6-v0.9 map. Empty, with a failure, when the reply is an error or not of that form.
  static std::vector<double> socket_powers(const std::string& request, bool v09 = false) {
    const std::string raw = call(*socket_, request);
    json j;
    try {
      j = json::parse(raw);
    } catch (const json::exception&) {
      ADD_FAILURE() << "not JSON: " << raw;
      return {};
    }
    const json& powers = j["powers"];
    if (j["msg"] != "" || (v09 ? !powers.is_object() || powers.size() != 1 : !powers.is_array())) {
      ADD_FAILURE() << raw;
      return {};
    }
    return (v09 ? *powers.begin() : powers).get<std::vector<double>>();
  }

  static inline std::string* dir_ = nullptr;
  static inline std::string* socket_ = nullptr;
  static inline DaemonProcess* daemon_ = nullptr;
  static inline client::Client* client_ = nullptr;
  Watchdog dog_{120};
};

void expect_reference(const std::vector<double>& got, const std::vector<double>& want,
                      const std::string& path) {
  ASSERT_EQ(got.size(), want.size()) << path;
  double worst = 0;
  for (std::size_t r = 0; r < want.size(); ++r) {
    const double err = k22::relative_error(got[r], want[r]);
    worst = std::max(worst, err);
    EXPECT_LE(err, k22::kTolerance) << path << " row " << r << ": scikit-learn " << want[r]
                                    << ", ours " << got[r];
  }
  std::printf("[ max rel ] %s vs scikit-learn: %.3g\n", path.c_str(), worst);
}

TEST_F(SeedModels, PredictRingAndSocketGiveScikitLearnsNumbers) {
  REQUIRE_SKLEARN_REFERENCE();
  const std::vector<float> x = k22::rows_over_the_range();
  const std::vector<std::string_view> features(k22::kFeatures.begin(), k22::kFeatures.end());
  const auto rows = static_cast<std::uint32_t>(x.size() / features.size());
  const std::string csv_path = *dir_ + "/rows.csv";
  std::ofstream(csv_path) << csv(features, x);
  for (const std::string& name : k22::kScikitModels) {
    SCOPED_TRACE(name);
    const std::vector<double> want = k22::reference(name, x);
    ASSERT_EQ(want.size(), rows);

    const std::string out = run(std::string(ESTIMATOR_CLI_PATH) + " predict --model " +
                                k22::shell_quote((k22::models_dir() / name).string()) +
                                " --csv " + csv_path + " 2>/dev/null");
    expect_reference(predict_values(out), want, name + " predict");

    auto reply = client_->estimate({.selector = {.name = name}, .features = features,
                                    .matrix = x.data(), .rows = rows,
                                    .cols = static_cast<std::uint32_t>(features.size())});
    ASSERT_TRUE(reply.ok()) << reply.status().to_string();
    ASSERT_EQ(reply->cols(), 1u);
    std::vector<double> ring;
    for (std::uint32_t r = 0; r < reply->rows(); ++r) ring.push_back(reply->power(r, 0));
    expect_reference(ring, want, name + " ring");

    expect_reference(socket_powers(request_2022(name, features, x)), want, name + " 2022 socket");
    expect_reference(socket_powers(request_v09(name, features, x), true), want,
                     name + " v0.9 socket");
  }
}

TEST_F(SeedModels, AnEmptyModelNameTakesTheSmallestPublishedMae) {
  REQUIRE_SKLEARN_REFERENCE();
  std::string smallest;
  double best = 0;
  for (const std::string& name : k22::kScikitModels) {
    std::ifstream in(k22::models_dir() / name / "metadata.json");
    const double mae = json::parse(in)["mae"].get<double>();
    if (smallest.empty() || mae < best) {
      smallest = name;
      best = mae;
    }
  }
  const std::vector<float> x = k22::rows_over_the_range();
  const std::vector<std::string_view> features(k22::kFeatures.begin(), k22::kFeatures.end());
  auto reply = client_->estimate({.features = features, .matrix = x.data(),
                                  .rows = static_cast<std::uint32_t>(x.size() / features.size()),
                                  .cols = static_cast<std::uint32_t>(features.size())});
  ASSERT_TRUE(reply.ok()) << reply.status().to_string();
  EXPECT_EQ(reply->model().name, smallest);
  EXPECT_DOUBLE_EQ(reply->model().mae, best);
  expect_reference(socket_powers(request_2022("", features, x)), k22::reference(smallest, x),
                   "model_name \"\" (2022 socket)");
}

TEST_F(SeedModels, OneRowOfCorrRatioGetsAllTheMeasuredPower) {
  const std::string_view usage[] = {"curr_cache_misses", "curr_cpu_cycles", "curr_cpu_instructions"};
  const std::string power =
      R"(,"core_power":[20,22.5],"dram_power":[5],"gpu_power":[],"other_power":[3])";
  for (const std::vector<float>& row : {std::vector<float>{120, 3e9F, 4e9F}, std::vector<float>{0, 2e9F, 0}}) {
    const std::vector<double> got = socket_powers(request_2022("CorrRatio", usage, row, power));
    ASSERT_EQ(got.size(), 1u);
    EXPECT_NEAR(got[0], 20 + 22.5 + 5 + 3, 1e-5 * 50.5);  // each component's scores sum to 1
  }
}

TEST_F(SeedModels, PredictServesEveryOutputOfAMultiOutputKerasFile) {
  if (std::system("/usr/bin/python3 -c 'import h5py, numpy' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "/usr/bin/python3 with h5py and numpy not available: no reference";
  }
  const std::string model = std::string(ESTIMATOR_SHARED_DIR) +
                            "/model-samples/keras/keras2.2.2_seq_mlp_6-512-16-3_softmax_fixedlen_strings.h5";
  if (!std::filesystem::exists(model)) GTEST_SKIP() << "Keras sample absent: " << model;
  const std::string_view inputs[] = {"a", "b", "c", "d", "e", "f"};
  std::vector<float> x;
  for (int r = 0; r < 8; ++r) {
    for (int c = 0; c < 6; ++c) x.push_back(static_cast<float>(2.5 * std::sin(1.3 * r + 0.7 * c + 0.1)));
  }
  const std::string csv_path = *dir_ + "/keras.csv";
  std::ofstream(csv_path) << csv(inputs, x);
  const std::string out = run(std::string(ESTIMATOR_CLI_PATH) + " predict --model " + model +
                              " --csv " + csv_path + " --components y0,y1,y2 2>/dev/null");
  ASSERT_EQ(out.substr(0, out.find('\n')), "y0,y1,y2") << out;
  const std::vector<double> got = predict_values(out);
  std::ostringstream rows;
  rows.precision(17);  // the exact float values the CLI read
  for (std::size_t i = 0; i < x.size(); ++i) rows << double{x[i]} << ((i + 1) % 6 == 0 ? "\n" : ",");
  std::ofstream(*dir_ + "/keras_rows.txt") << rows.str();
  std::istringstream ref(run("/usr/bin/python3 " + std::string(KERAS_REFERENCE_SCRIPT) + " " + model +
                             " < " + *dir_ + "/keras_rows.txt"));
  std::vector<double> want;
  for (double v; ref >> v;) want.push_back(v);
  ASSERT_EQ(got.size(), x.size() / 2);  // 8 rows x 3 outputs
  ASSERT_EQ(want.size(), got.size());
  // Relative, except below float's smallest normal number: the CLI prints float32 (a
  // softmax output of 1e-47 prints as 0).
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_LE(std::abs(got[i] - want[i]),
              std::max(1e-5 * std::abs(want[i]), double{std::numeric_limits<float>::min()}))
        << "row " << i / 3 << " y" << i % 3;
  }
}

}  // namespace
}  // namespace estimator::testing
