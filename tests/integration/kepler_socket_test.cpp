// SPDX-License-Identifier: Apache-2.0
// The Kepler-compatible unix socket of the real estimatord: answers identical to the
// shared-memory client's, both request generations, errors that no Kepler client decodes as powers,
// framing (slow, half-open and many concurrent connections), the socket file's life, and
// clients that speak exactly as Kepler's Go client and the Python estimator's peers do.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <tuple>
#include <thread>

#include "common/power_total.h"
#include "daemon_process.h"
#include "tests/support/files.h"
#include "tests/support/shell_command.h"

namespace estimator::testing {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

// A connected unix socket; closed when destroyed.
class Conn {
 public:
  explicit Conn(const std::string& path) {
    fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
    if (connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~Conn() {
    if (fd_ >= 0) ::close(fd_);
  }
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  bool ok() const { return fd_ >= 0; }
  bool send_all(std::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }
  void half_close() { shutdown(fd_, SHUT_WR); }
  // Everything the server sends until it closes, or until `timeout`.
  std::string read_all(std::chrono::milliseconds timeout) {
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::string out;
    char buf[8192];
    for (;;) {
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) break;
      out.append(buf, static_cast<std::size_t>(n));
    }
    return out;
  }

 private:
  int fd_ = -1;
};

// One request, one reply, as Kepler does it.
std::string call(const std::string& path, std::string_view request) {
  Conn c(path);
  if (!c.ok()) return "connect failed";
  if (!c.send_all(request)) return "send failed";
  return c.read_all(10s);
}

bool wait_for_socket(const std::string& path) {
  for (int i = 0; i < 500; ++i) {
    if (Conn(path).ok()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

std::string number(float v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(v));  // reads back as v
  return buf;
}

std::string json_list(std::span<const std::string_view> names) {
  std::string s = "[";
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (i) s += ',';
    s += '"';
    s += names[i];
    s += '"';
  }
  return s + "]";
}

std::string json_matrix(const std::vector<float>& m, std::size_t cols) {
  std::string s = "[";
  for (std::size_t r = 0; r < m.size() / cols; ++r) {
    s += r ? ",[" : "[";
    for (std::size_t c = 0; c < cols; ++c) {
      if (c) s += ',';
      s += number(m[r * cols + c]);
    }
    s += ']';
  }
  return s + "]";
}

const std::string_view kBpf[] = {"bpf_cpu_time_ms", "bpf_page_cache_hit"};
// The ratio model's usage columns (bpf_cpu_time_ms stands in for the missing gpu usage).
const std::string_view kUsage[] = {"cpu_instructions", "cache_miss", "bpf_cpu_time_ms"};

std::string v09_request(std::span<const std::string_view> features, const std::vector<float>& m,
                        std::string_view output_type, std::string_view source) {
  return R"({"metrics":)" + json_list(features) + R"(,"values":)" +
         json_matrix(m, features.size()) + R"(,"output_type":")" + std::string(output_type) +
         R"(","source":")" + std::string(source) +
         R"(","system_features":[],"system_values":[],"trainer_name":"","filter":""})";
}

std::vector<float> random_matrix(std::uint32_t rows, std::size_t cols, unsigned seed,
                                 float scale = 200000.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(0.f, scale);
  std::vector<float> m(rows * cols);
  for (float& v : m) v = d(rng);
  return m;
}

// Checks a v0.9 reply against the shared-memory client's answer for the same request.
void expect_same_v09(const json& j, const client::Reply& want) {
  ASSERT_EQ(j["msg"], "") << j.dump();
  ASSERT_TRUE(j["powers"].is_object()) << j.dump();
  ASSERT_EQ(j["powers"].size(), want.cols()) << j.dump();
  for (std::uint32_t c = 0; c < want.cols(); ++c) {
    const auto& list = j["powers"][std::string(want.component(c))];
    ASSERT_EQ(list.size(), want.rows()) << want.component(c);
    for (std::uint32_t r = 0; r < want.rows(); ++r) {
      ASSERT_EQ(static_cast<float>(list[r].get<double>()), want.power(r, c))
          << "row " << r << " " << want.component(c);
    }
  }
  EXPECT_EQ(j["core_ratio"].get<double>(), want.model().core_ratio);
}

// One total per row, as the 2022 reply gives it.
std::vector<float> totals(const client::Reply& reply) {
  std::vector<std::string_view> names;
  for (std::uint32_t c = 0; c < reply.cols(); ++c) names.push_back(reply.component(c));
  std::vector<float> out;
  for (std::uint32_t r = 0; r < reply.rows(); ++r) {
    out.push_back(static_cast<float>(
        total_power<float>(names, reply.powers().subspan(std::size_t{r} * reply.cols(), reply.cols()))));
  }
  return out;
}

// An error reply: "powers" false (neither Kepler client decodes it), the reason in "msg",
// short enough for every client's read.
void expect_error_shape(const std::string& raw, std::string_view needle) {
  json j;
  ASSERT_NO_THROW(j = json::parse(raw)) << raw;
  EXPECT_EQ(j["powers"], false) << raw;
  EXPECT_LE(raw.size(), 1024u);
  const std::string msg = j["msg"];
  EXPECT_NE(msg.find(needle), std::string::npos) << "msg: " << msg;
}

// A request of neither Kepler generation (no output_type, trainer_name or model_name): a
// client with no known read size, whose replies are never cut to one.
std::string generic_request(std::span<const std::string_view> features, const std::vector<float>& m,
                            std::string_view source) {
  return R"({"metrics":)" + json_list(features) + R"(,"values":)" +
         json_matrix(m, features.size()) + R"(,"source":")" + std::string(source) + R"("})";
}

class KeplerSocketTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir("kepler-sock");
    ASSERT_FALSE(dir_->path().empty());
    socket_ = new std::string((dir_->path() / "estimator.sock").string());
    daemon_ = new DaemonProcess(unique_shm_name("kepler"),
                                {"--socket", *socket_, "--socket-timeout-ms", "2000",
                                 "--socket-max-bytes", "1048576"});
    ASSERT_TRUE(daemon_->start()) << "estimatord did not start";
    ASSERT_TRUE(wait_for_socket(*socket_)) << "no socket at " << *socket_;
    client_ = new client::Client({.shm_name = unique_shm_name("kepler")});
  }
  static void TearDownTestSuite() {
    delete client_;
    delete daemon_;
    delete socket_;
    delete dir_;
  }
  void SetUp() override {
    ASSERT_TRUE(daemon_ != nullptr && daemon_->pid() > 0) << "estimatord is not running";
  }

  static inline TempDir* dir_ = nullptr;
  static inline std::string* socket_ = nullptr;
  static inline DaemonProcess* daemon_ = nullptr;
  static inline client::Client* client_ = nullptr;
};

TEST_F(KeplerSocketTest, AnswersEqualTheSharedMemoryClients) {
  Watchdog dog(60);
  const std::vector<float> m = random_matrix(40, 2, 7);
  struct Case {
    std::string_view type, source, client_source;
  };
  for (const Case& k : {Case{"AbsPower", "rapl-sysfs", "rapl-sysfs"},
                        Case{"DynPower", "rapl-sysfs", "rapl-sysfs"},
                        Case{"AbsPower", "acpi", "acpi"}, Case{"DynPower", "acpi", "acpi"},
                        Case{"AbsPower", "intel_rapl", "rapl-sysfs"}}) {
    SCOPED_TRACE(std::string(k.type) + " " + std::string(k.source));
    auto want = client_->estimate({.selector = {.output_type = k.type, .source = k.client_source},
                                   .features = kBpf,
                                   .matrix = m.data(),
                                   .rows = 40,
                                   .cols = 2},
                                  5s);
    ASSERT_TRUE(want.ok()) << want.status().to_string();
    const std::string raw = call(*socket_, v09_request(kBpf, m, k.type, k.source));
    json j;
    ASSERT_NO_THROW(j = json::parse(raw)) << raw;
    expect_same_v09(j, want.value());
    if (k.source == "acpi") {
      EXPECT_TRUE(j["powers"].contains("platform"));
    }
  }
}

TEST_F(KeplerSocketTest, Form2022SplitsMeasuredPowerWithTheRatioModel) {
  Watchdog dog(60);
  const std::vector<float> m = random_matrix(10, 3, 11, 1e6f);
  const float core[] = {20.f, 22.5f};
  const float dram[] = {5.f};
  // As the endpoint maps the 2022 fields: core_power is the CPU's, package and core.
  const NodePower np[] = {{"package", core, {}}, {"core", core, {}}, {"dram", dram, {}}};
  for (std::string_view name : {"", "Ratio"}) {
    SCOPED_TRACE("model_name '" + std::string(name) + "'");
    auto want = client_->estimate({.selector = {.name = name},
                                   .features = kUsage,
                                   .matrix = m.data(),
                                   .rows = 10,
                                   .cols = 3,
                                   .node_power = np},
                                  5s);
    ASSERT_TRUE(want.ok()) << want.status().to_string();
    EXPECT_EQ(want->model().name, "Ratio");
    const std::string req = R"({"model_name":")" + std::string(name) + R"(","metrics":)" +
                            json_list(kUsage) + R"(,"values":)" + json_matrix(m, 3) +
                            R"(,"core_power":[20,22.5],"dram_power":[5],"gpu_power":[],)"
                            R"("other_power":null})";
    const std::string raw = call(*socket_, req);
    json j;
    ASSERT_NO_THROW(j = json::parse(raw)) << raw;
    ASSERT_EQ(j["msg"], "") << raw;
    ASSERT_TRUE(j["powers"].is_array()) << raw;
    const std::vector<float> t = totals(want.value());
    ASSERT_EQ(j["powers"].size(), t.size());
    double sum = 0;
    for (std::size_t r = 0; r < t.size(); ++r) {
      EXPECT_EQ(static_cast<float>(j["powers"][r].get<double>()), t[r]) << r;
      sum += j["powers"][r].get<double>();
    }
    EXPECT_NEAR(sum, 20 + 22.5 + 5, 1e-3);  // the rows share exactly the measured power
  }
  expect_error_shape(call(*socket_, R"({"model_name":"nope","metrics":[],"values":[]})"), "nope");
}

TEST_F(KeplerSocketTest, ErrorsHavePowersFalseAndAMessage) {
  Watchdog dog(60);
  expect_error_shape(call(*socket_, R"({"metrics":["cpu_cycles"],"values":[[1]],)"
                                    R"("output_type":"AbsPower","source":"rapl-sysfs"})"),
                     "bpf_cpu_time_ms");
  expect_error_shape(call(*socket_, R"({"metrics": [})"), "metrics[0] is not a string");
  expect_error_shape(call(*socket_, R"({"metrics":["a"],"values":[[1,]]})"), "values[0][1]");
  expect_error_shape(call(*socket_, R"({"metrics":"bpf_cpu_time_ms","values":[[1]]})"),
                     "metrics must be a list of strings");
  expect_error_shape(call(*socket_, R"({"metrics":["a"],"values":[["1"]]})"),
                     "values[0][0] is not a number");
  expect_error_shape(call(*socket_, R"({"metrics":["a","b"],"values":[[1,2],[3]]})"),
                     "values[1] has 1 numbers but metrics names 2");
  expect_error_shape(call(*socket_, R"({"metrics":["a"],"values":[[NaN]]})"),
                     "values[0][0] is not a number");
  expect_error_shape(call(*socket_, "hello"), "a request must be a JSON object");
  expect_error_shape(call(*socket_, R"({"values":[]})"), "missing metrics");

  // Over --socket-max-bytes: an error reply, then the server closes (the sender's
  // remaining writes fail, which is expected).
  std::string big = R"({"metrics":["a"],"values":[)";
  while (big.size() < (1u << 20) + 1000) big += "[1234567],";
  big += "[1]]}";
  Conn c(*socket_);
  ASSERT_TRUE(c.ok());
  std::thread sender([&] { (void)c.send_all(big); });
  const std::string raw = c.read_all(10s);
  sender.join();
  expect_error_shape(raw, "request exceeds 1048576 bytes");
}

TEST_F(KeplerSocketTest, AHalfOpenConnectionDoesNotDelayOthers) {
  Watchdog dog(60);
  Conn stuck(*socket_);
  ASSERT_TRUE(stuck.ok());
  ASSERT_TRUE(stuck.send_all(R"({"metrics":["bpf_cpu_time_ms")"));  // and nothing more
  Conn silent(*socket_);  // connects, never sends
  ASSERT_TRUE(silent.ok());

  const std::vector<float> m = random_matrix(5, 2, 3);
  const auto t0 = std::chrono::steady_clock::now();
  const json j = json::parse(call(*socket_, v09_request(kBpf, m, "AbsPower", "rapl-sysfs")));
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(j["msg"], "") << j.dump();
  EXPECT_LT(took, 1s) << "a stalled connection delayed another client";

  // The stalled ones are closed at their deadline (2 s here), told why when they listen.
  const auto t1 = std::chrono::steady_clock::now();
  const std::string late = stuck.read_all(10s);
  EXPECT_LT(std::chrono::steady_clock::now() - t1, 4s);
  expect_error_shape(late, "no complete JSON request within 2000 ms");
  (void)silent.read_all(10s);

  // A request split into many writes with pauses is read whole, not cut.
  Conn slow(*socket_);
  ASSERT_TRUE(slow.ok());
  const std::string req = v09_request(kBpf, m, "AbsPower", "rapl-sysfs");
  for (std::size_t i = 0; i < req.size(); i += 37) {
    ASSERT_TRUE(slow.send_all(std::string_view(req).substr(i, 37)));
    std::this_thread::sleep_for(2ms);
  }
  EXPECT_EQ(json::parse(slow.read_all(10s))["msg"], "");

  // A client that half-closes after an incomplete document gets the parser's verdict.
  Conn half(*socket_);
  ASSERT_TRUE(half.send_all(R"({"metrics":["a"],"values":[[1)"));
  half.half_close();
  expect_error_shape(half.read_all(10s), "ends early");
}

TEST_F(KeplerSocketTest, ManyConcurrentConnectionsEachGetTheirOwnAnswer) {
  Watchdog dog(120);
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        const std::uint32_t rows = 1 + static_cast<std::uint32_t>((t * 7 + i) % 20);
        std::vector<float> m = random_matrix(rows, 2, static_cast<unsigned>(t * 1000 + i));
        m[0] = static_cast<float>(t * 100000 + i);  // unique per request
        auto want = client_->estimate({.selector = {.output_type = "AbsPower", .source = "rapl-sysfs"},
                                       .features = kBpf,
                                       .matrix = m.data(),
                                       .rows = rows,
                                       .cols = 2},
                                      5s);
        const std::string raw = call(*socket_, v09_request(kBpf, m, "AbsPower", "rapl-sysfs"));
        if (!want.ok()) {
          ++bad;
          continue;
        }
        try {
          const json j = json::parse(raw);
          const auto& pkg = j["powers"]["package"];
          if (pkg.size() != rows) {
            ++bad;
            continue;
          }
          for (std::uint32_t r = 0; r < rows; ++r) {
            if (static_cast<float>(pkg[r].get<double>()) != want->power(r, 0)) ++bad;
          }
        } catch (const std::exception&) {
          ++bad;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);

  // 64 connections open at once, each with most of its request sent; finished in reverse
  // order, every one gets its own answer.
  std::vector<std::unique_ptr<Conn>> conns;
  std::vector<std::vector<float>> matrices;
  std::vector<std::string> requests;
  for (int i = 0; i < 64; ++i) {
    matrices.push_back(random_matrix(3, 2, static_cast<unsigned>(500 + i)));
    requests.push_back(v09_request(kBpf, matrices.back(), "DynPower", "rapl-sysfs"));
    conns.push_back(std::make_unique<Conn>(*socket_));
    ASSERT_TRUE(conns.back()->ok());
    const std::string& r = requests.back();
    ASSERT_TRUE(conns.back()->send_all(std::string_view(r).substr(0, r.size() - 1)));
  }
  for (int i = 63; i >= 0; --i) ASSERT_TRUE(conns[static_cast<std::size_t>(i)]->send_all("}"));
  for (std::size_t i = 0; i < 64; ++i) {
    auto want = client_->estimate({.selector = {.output_type = "DynPower", .source = "rapl-sysfs"},
                                   .features = kBpf,
                                   .matrix = matrices[i].data(),
                                   .rows = 3,
                                   .cols = 2},
                                  5s);
    ASSERT_TRUE(want.ok());
    expect_same_v09(json::parse(conns[i]->read_all(10s)), want.value());
  }
}

TEST_F(KeplerSocketTest, ALargeReplyIsWrittenInPiecesToASlowReader) {
  Watchdog dog(60);
  // 20000 rows: a reply of several hundred KB, more than the socket buffer holds, to a
  // client that only starts reading later.
  constexpr std::uint32_t kRows = 20000;
  const std::vector<float> m = random_matrix(kRows, 2, 77);
  Conn c(*socket_);
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(c.send_all(generic_request(kBpf, m, "rapl-sysfs")));
  std::this_thread::sleep_for(300ms);
  const std::string raw = c.read_all(10s);
  json j;
  ASSERT_NO_THROW(j = json::parse(raw)) << raw.size() << " bytes";
  ASSERT_EQ(j["msg"], "");
  // The shared-memory client's answers, 1000 rows at a time (its slots are small here).
  for (std::uint32_t start = 0; start < kRows; start += 1000) {
    auto want = client_->estimate({.selector = {.source = "rapl-sysfs"},
                                   .features = kBpf,
                                   .matrix = m.data() + std::size_t{start} * 2,
                                   .rows = 1000,
                                   .cols = 2},
                                  5s);
    ASSERT_TRUE(want.ok()) << want.status().to_string();
    for (std::uint32_t comp = 0; comp < want->cols(); ++comp) {
      const auto& list = j["powers"][std::string(want->component(comp))];
      ASSERT_EQ(list.size(), kRows);
      for (std::uint32_t r = 0; r < 1000; ++r) {
        ASSERT_EQ(static_cast<float>(list[start + r].get<double>()), want->power(r, comp));
      }
    }
  }
}

TEST_F(KeplerSocketTest, SocketFileIsGroupReadableAndWritable) {
  struct stat st {};
  ASSERT_EQ(stat(socket_->c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0660u);
}

TEST_F(KeplerSocketTest, ASecondServerOnTheSamePathRefusesToStart) {
  Watchdog dog(60);
  DaemonProcess second(unique_shm_name("kepler-second"), {"--socket", *socket_});
  ASSERT_TRUE(second.spawn());
  const int status = second.wait_exit(10s);
  ASSERT_NE(status, -1) << "the second estimatord kept running";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0);
  // The first one still serves.
  const std::vector<float> m = random_matrix(2, 2, 1);
  EXPECT_EQ(json::parse(call(*socket_, v09_request(kBpf, m, "AbsPower", "acpi")))["msg"], "");
}

// ---- the socket file's life ------------------------------------------------------------

TEST(KeplerSocketFileTest, StaleSocketIsReplacedAndRemovedOnStop) {
  Watchdog dog(60);
  const TempDir scratch("kepler-stale");
  ASSERT_FALSE(scratch.path().empty());
  const std::string dir = scratch.path().string();
  const std::string path = dir + "/estimator.sock";
  {
    // A socket file nobody listens on: what a killed server leaves behind.
    const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
    ASSERT_EQ(bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0);
    ::close(fd);
  }
  ASSERT_TRUE(std::filesystem::exists(path));
  {
    DaemonProcess d(unique_shm_name("kepler-stale"), {"--socket", path, "--socket-mode", "0600"});
    ASSERT_TRUE(d.start());
    ASSERT_TRUE(wait_for_socket(path));
    struct stat st {};
    ASSERT_EQ(stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0600u);
    const std::vector<float> m = random_matrix(2, 2, 1);
    EXPECT_EQ(json::parse(call(path, v09_request(kBpf, m, "AbsPower", "acpi")))["msg"], "");
    const int status = d.stop(SIGTERM);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  }
  EXPECT_FALSE(std::filesystem::exists(path)) << "the socket file outlived the daemon";

  // A regular file at the path is the user's: refused, left alone.
  { std::ofstream(path) << "not a socket"; }
  DaemonProcess d(unique_shm_name("kepler-file"), {"--socket", path});
  ASSERT_TRUE(d.spawn());
  const int status = d.wait_exit(10s);
  EXPECT_TRUE(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) != 0);
  EXPECT_TRUE(std::filesystem::is_regular_file(path));
}

TEST(KeplerSocketFileTest, OverTheLimitTheOldestUnfinishedConnectionMakesWay) {
  Watchdog dog(60);
  const TempDir scratch("kepler-limit");
  ASSERT_FALSE(scratch.path().empty());
  const std::string dir = scratch.path().string();
  const std::string path = dir + "/estimator.sock";
  {
    DaemonProcess d(unique_shm_name("kepler-limit"),
                    {"--socket", path, "--socket-max-connections", "2"});
    ASSERT_TRUE(d.start());
    ASSERT_TRUE(wait_for_socket(path));
    std::this_thread::sleep_for(100ms);  // the probe connections of wait_for_socket close
    Conn a(path), b(path);
    ASSERT_TRUE(a.ok() && b.ok());
    ASSERT_TRUE(a.send_all("{") && b.send_all("{"));
    std::this_thread::sleep_for(100ms);  // both accepted
    // A third client is served; the oldest unfinished one (a) is told why and closed.
    const std::vector<float> m = random_matrix(2, 2, 1);
    EXPECT_EQ(json::parse(call(path, v09_request(kBpf, m, "AbsPower", "acpi")))["msg"], "");
    expect_error_shape(a.read_all(5s), "too many connections");
  }
}

// ---- Kepler's own clients --------------------------------------------------------------

// Runs `command` with `input` on stdin; returns its stdout.
std::string run_with_input(const std::string& command, const std::string& input,
                           const std::string& scratch) {
  const std::string in = scratch + "/stdin.json";
  { std::ofstream(in) << input; }
  return run_command(command + " < " + in).out;
}

bool have_go() { return std::system("command -v go >/dev/null 2>&1") == 0; }

// A weight model whose output overflows a float for any cpu time above 1e-10 ms: the
// prediction failure of the error paths (no embedded model can fail so).
std::string overflow_model_dir(const std::string& root) {
  const std::string dir = root + "/acpi/AbsPower/OverflowTrainer_0";
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/metadata.json")
      << R"({"model_name":"OverflowTrainer_0","trainer":"OverflowTrainer","model_class":"weight",)"
         R"("model_file":"weights.json","features":["bpf_cpu_time_ms","bpf_page_cache_hit"],)"
         R"("output_type":"AbsPower","source":"acpi"})";
  std::ofstream(dir + "/weights.json")
      << R"({"model_name":"OverflowTrainer_0","platform":{"All_Weights":{"Bias_Weight":0,)"
         R"("Categorical_Variables":{},"Numerical_Variables":{)"
         R"("bpf_cpu_time_ms":{"weight":1e30,"scale":1e-30},)"
         R"("bpf_page_cache_hit":{"weight":0,"scale":1}}}}})";
  return root;
}

std::string rows_of_ones(std::uint32_t rows) {
  std::string s = "[";
  for (std::uint32_t r = 0; r < rows; ++r) s += r ? ",[1000,1]" : "[1000,1]";
  return s + "]";
}

// What Kepler's clients send: v0.9 always every key (no model_name); v0.3 the 2022 keys
// and "filter".
std::string kepler_v09(std::string_view metrics, const std::string& values,
                       std::string_view source, std::string_view trainer = "") {
  return R"({"metrics":)" + std::string(metrics) + R"(,"values":)" + values +
         R"(,"output_type":"AbsPower","source":")" + std::string(source) +
         R"(","system_features":["cpu_architecture"],"system_values":["Sky Lake"],)"
         R"("trainer_name":")" + std::string(trainer) + R"(","filter":""})";
}
std::string kepler_2022(std::string_view model, std::string_view metrics, const std::string& values) {
  return R"({"model_name":")" + std::string(model) + R"(","metrics":)" + std::string(metrics) +
         R"(,"values":)" + values +
         R"(,"core_power":[],"dram_power":[],"gpu_power":[],"other_power":[],"filter":""})";
}

TEST(KeplerClientConformanceTest, KeplersGoClientsDecodeSuccessesAndFailOnEveryError) {
  Watchdog dog(300);
  if (!have_go()) GTEST_SKIP() << "go is not installed (Debian: golang-go); Kepler's Go client not tested";
  const std::string out_dir = KEPLER_TEST_BUILD_DIR;
  std::filesystem::create_directories(out_dir);
  const std::string bin = out_dir + "/kepler_go_client";
  const std::string build = "cd '" KEPLER_GO_CLIENT_DIR "' && GOCACHE='" + out_dir +
                            "/go-cache' GOPATH='" + out_dir + "/go-path' GOFLAGS= GOPROXY=off "
                            "go build -o '" + bin + "' . 2>&1";
  ASSERT_EQ(std::system(build.c_str()), 0) << "go build failed: " << build;

  const TempDir scratch("kepler-conformance");
  ASSERT_FALSE(scratch.path().empty());
  const std::string dir = scratch.path().string();
  const std::string path = dir + "/estimator.sock";
  DaemonProcess daemon(unique_shm_name("kepler-conformance"),
                       {"--socket", path, "--model-dir", overflow_model_dir(dir + "/models")});
  ASSERT_TRUE(daemon.start());
  ASSERT_TRUE(wait_for_socket(path));

  auto go = [&](const std::string& request, std::string_view shape) {
    const std::string raw = run_with_input(
        "'" + bin + "' -socket '" + path + "' -shape " + std::string(shape), request, out_dir);
    json j;
    EXPECT_NO_THROW(j = json::parse(raw)) << raw;
    return j;
  };
  const std::string bpf = R"(["bpf_cpu_time_ms","bpf_page_cache_hit"])";

  // Successes decode to one value per row: v0.9's four rapl components and acpi's
  // platform, and the 2022 totals.
  for (std::uint32_t rows : {1u, 7u, 60u}) {
    SCOPED_TRACE(std::to_string(rows) + " rows");
    json j = go(kepler_v09(bpf, rows_of_ones(rows), "intel_rapl"), "v09");
    EXPECT_EQ(j["error"], "") << j.dump();
    EXPECT_EQ(j["rows"], rows);
    EXPECT_EQ(j["components"], 4);
    j = go(kepler_v09(bpf, rows_of_ones(rows), "acpi", "SGDRegressorTrainer"), "v09");
    EXPECT_EQ(j["error"], "") << j.dump();
    EXPECT_EQ(j["rows"], rows);
    EXPECT_EQ(j["components"], 1);
    j = go(kepler_2022("", bpf, rows_of_ones(rows)), "2022");
    EXPECT_EQ(j["error"], "") << j.dump();
    EXPECT_EQ(j["rows"], rows);
  }

  // Every error path fails the decode of both generations' clients, within one read.
  struct Error {
    const char* what;
    std::string v09, form2022;
  };
  const Error errors[] = {
      {"no model", kepler_v09(bpf, rows_of_ones(1), "nvml"),
       kepler_2022("NoSuchModel", bpf, rows_of_ones(1))},
      {"missing features", kepler_v09(R"(["cpu_cycles"])", "[[1]]", "intel_rapl"),
       kepler_2022("SGDRegressorTrainer_0", R"(["cpu_cycles"])", "[[1]]")},
      {"bad request", kepler_v09(bpf, "[[1,2],[3]]", "intel_rapl"),
       kepler_2022("", bpf, "[[1,2],[3]]")},
      {"reply too large", kepler_v09(bpf, rows_of_ones(400), "intel_rapl"),
       kepler_2022("", bpf, rows_of_ones(400))},
      {"prediction failure", kepler_v09(bpf, rows_of_ones(2), "acpi", "OverflowTrainer"),
       kepler_2022("OverflowTrainer_0", bpf, rows_of_ones(2))},
  };
  for (const Error& e : errors) {
    SCOPED_TRACE(e.what);
    for (const auto& [request, shape, read] :
         {std::tuple{e.v09, "v09", 4096}, std::tuple{e.form2022, "2022", 1024}}) {
      SCOPED_TRACE(shape);
      const json j = go(request, shape);
      EXPECT_NE(j["error"].get<std::string>().find("unmarshal: json: cannot unmarshal bool"),
                std::string::npos)
          << "the decode did not fail: " << j.dump();
      EXPECT_LT(j["bytes"].get<int>(), read) << "the error reply may have been cut";
      // The raw reply, which Kepler logs with the decode error, carries the reason.
      const json raw = json::parse(call(path, request));
      EXPECT_EQ(raw["powers"], false);
      EXPECT_FALSE(raw["msg"].get<std::string>().empty());
    }
  }
  // Replies longer than a client reads name its limit.
  EXPECT_NE(json::parse(call(path, errors[3].v09))["msg"].get<std::string>().find("4096 bytes"),
            std::string::npos);
  EXPECT_NE(json::parse(call(path, errors[3].form2022))["msg"].get<std::string>().find("1024 bytes"),
            std::string::npos);
  EXPECT_NE(json::parse(call(path, errors[4].v09))["msg"].get<std::string>().find("non-finite"),
            std::string::npos);

  // The Python equivalent of the 2022 client (one 1024-byte read, Go's decode rules).
  if (access("/usr/bin/python3", X_OK) == 0) {
    auto py = [&](const std::string& request) {
      const std::string raw = run_with_input(
          "/usr/bin/python3 '" KEPLER_PYTHON_CLIENT "' --2022 '" + path + "'", request, out_dir);
      json j;
      EXPECT_NO_THROW(j = json::parse(raw)) << raw;
      return j;
    };
    json j = py(kepler_2022("", bpf, rows_of_ones(60)));
    ASSERT_TRUE(j.contains("reply")) << j.dump();
    EXPECT_EQ(j["reply"]["powers"].size(), 60u);
    for (const Error& e : errors) {
      j = py(e.form2022);
      EXPECT_TRUE(j.contains("error")) << e.what << ": " << j.dump();
      EXPECT_LE(j["bytes"].get<int>(), 1024);
    }
  }
  daemon.stop(SIGTERM);
}

TEST(KeplerSocketFileTest, ClientReadSizesAreOptions) {
  Watchdog dog(60);
  const TempDir scratch("kepler-reads");
  ASSERT_FALSE(scratch.path().empty());
  const std::string dir = scratch.path().string();
  const std::string path = dir + "/estimator.sock";
  {
    // Clients that read whole replies though they send Kepler's keys.
    DaemonProcess d(unique_shm_name("kepler-reads"),
                    {"--socket", path, "--socket-v09-read-bytes", "0", "--socket-2022-read-bytes",
                     "0"});
    ASSERT_TRUE(d.start());
    ASSERT_TRUE(wait_for_socket(path));
    const std::string bpf = R"(["bpf_cpu_time_ms","bpf_page_cache_hit"])";
    json j = json::parse(call(path, kepler_v09(bpf, rows_of_ones(400), "intel_rapl")));
    EXPECT_EQ(j["msg"], "");
    EXPECT_EQ(j["powers"]["package"].size(), 400u);
    j = json::parse(call(path, kepler_2022("", bpf, rows_of_ones(400))));
    EXPECT_EQ(j["msg"], "");
    EXPECT_EQ(j["powers"].size(), 400u);
  }
}

TEST_F(KeplerSocketTest, PythonClientReadsUntilTheReplyParses) {
  Watchdog dog(60);
  if (access("/usr/bin/python3", X_OK) != 0) GTEST_SKIP() << "/usr/bin/python3 is not installed";
  const std::string out_dir = KEPLER_TEST_BUILD_DIR;
  std::filesystem::create_directories(out_dir);
  auto py = [&](const std::string& request) {
    const std::string raw = run_with_input(
        "/usr/bin/python3 '" KEPLER_PYTHON_CLIENT "' '" + *socket_ + "'", request, out_dir);
    json j;
    EXPECT_NO_THROW(j = json::parse(raw)) << raw;
    return j;
  };
  // 300 rows: a reply far over 4096 bytes, read whole in 1024-byte chunks (a request
  // of neither Kepler generation, so no client read size applies).
  const std::vector<float> m = random_matrix(300, 2, 33);
  auto want = client_->estimate({.selector = {.source = "rapl-sysfs"},
                                 .features = kBpf,
                                 .matrix = m.data(),
                                 .rows = 300,
                                 .cols = 2},
                                5s);
  ASSERT_TRUE(want.ok());
  json j = py(generic_request(kBpf, m, "rapl-sysfs"));
  ASSERT_TRUE(j.contains("reply")) << j.dump();
  expect_same_v09(j["reply"], want.value());

  j = py(R"({"metrics":["a"],"values":[[1],[2,3]]})");
  ASSERT_TRUE(j.contains("reply")) << j.dump();
  EXPECT_EQ(j["reply"]["powers"], false);
  EXPECT_EQ(j["reply"]["msg"], "values[1] has 2 numbers but metrics names 1");
}

}  // namespace
}  // namespace estimator::testing
