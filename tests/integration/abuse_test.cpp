// SPDX-License-Identifier: Apache-2.0
// The real estimatord under abuse (docs/reliability.md, "Hostile model files, sockets and
// scrapers"): model files that used to crash or block it, and crowds of connections on the
// Kepler socket and the metrics endpoint.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "daemon_process.h"
#include "metrics_daemon.h"
#include "tests/support/child_process.h"
#include "tests/support/http_scrape.h"
#include "tests/support/process_stats.h"

namespace estimator::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr std::uintmax_t kMaxModelFileBytes = 64u << 20;  // models::Registry::kMaxFileBytes, the scan limit

constexpr std::string_view kHonest =
    R"({"metrics":["bpf_cpu_time_ms","bpf_page_cache_hit"],"values":[[1000.0,20.0]],)"
    R"("output_type":"AbsPower","source":"acpi","system_features":[],"system_values":[],)"
    R"("trainer_name":"","filter":""})";

void write(const fs::path& p, const std::string& bytes) { std::ofstream(p, std::ios::binary) << bytes; }

// VmRSS of `pid` in bytes (0 when it is gone).
std::size_t rss_bytes(pid_t pid) { return static_cast<std::size_t>(std::max(0L, rss_kib(pid))) * 1024; }

void raise_fd_limit(rlim_t want) {
  rlimit r{};
  getrlimit(RLIMIT_NOFILE, &r);
  if (r.rlim_max < want) r.rlim_max = want;  // as root; otherwise the assert below says so
  r.rlim_cur = want;
  setrlimit(RLIMIT_NOFILE, &r);
  getrlimit(RLIMIT_NOFILE, &r);
  ASSERT_GE(r.rlim_cur, want) << "cannot raise RLIMIT_NOFILE for the test's own connections";
}

int unix_connect(const std::string& path) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  if (connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Sends `request` on a fresh connection and reads until the server closes (at most
// `timeout`).
std::string exchange(int fd, std::string_view request, std::chrono::milliseconds timeout) {
  if (fd < 0) return {};
  timeval tv{static_cast<time_t>(timeout.count() / 1000),
             static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string out;
  if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size())) {
    char buf[8192];
    for (ssize_t n; (n = recv(fd, buf, sizeof buf, 0)) > 0;) out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return out;
}

bool honest_call_succeeds(const std::string& socket_path) {
  const std::string reply = exchange(unix_connect(socket_path), kHonest, 10s);
  const auto j = nlohmann::json::parse(reply, nullptr, false);
  return j.is_object() && j.value("msg", "?").empty();
}

// estimatord with its log in a file (the metrics port is read from it).
class Daemon {
 public:
  explicit Daemon(const std::string& what) : dir_(fs::temp_directory_path() / unique_shm_name(what)) {
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "models");
    shm_ = unique_shm_name(what);
    track_segment(shm_);
  }
  ~Daemon() {
    process_.stop(SIGKILL);
    untrack_segment(shm_);
    fs::remove_all(dir_);
  }

  fs::path models() const { return dir_ / "models"; }
  std::string socket() const { return (dir_ / "estimator.sock").string(); }
  std::string log() const { return read_file(dir_ / "log"); }
  pid_t pid() const { return process_.pid(); }
  std::uint16_t metrics_port() const { return metrics_port_; }

  // Starts it and waits for "ready:" in its log; false if it exits first.
  bool start(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {ESTIMATORD_PATH, "--shm-name", shm_, "--slots", "8",
                                     "--slot-bytes", "65536", "--log-level", "info",
                                     "--model-dir", models().string(),
                                     "--socket", socket(), "--metrics-address", "127.0.0.1:0"};
    if (std::find(extra.begin(), extra.end(), "--config") == extra.end()) args.push_back("--no-fetch");
    args.insert(args.end(), extra.begin(), extra.end());
    if (!process_.start_logged(args, (dir_ / "log").string())) return false;
    for (int i = 0; i < 3000; ++i) {
      const std::string text = log();
      metrics_port_ = metrics_port_in(text);
      if (metrics_port_ != 0 && text.find("ready:") != std::string::npos &&
          text.find("kepler socket: serving") != std::string::npos) {
        return true;
      }
      if (!process_.alive()) {
        ADD_FAILURE() << "estimatord exited during start-up: " << log();
        return false;
      }
      std::this_thread::sleep_for(10ms);
    }
    ADD_FAILURE() << "estimatord did not become ready: " << log();
    return false;
  }

  bool alive() { return process_.alive(); }

  // Sends `sig`; the wait status, or -1 if it has not exited within `timeout`.
  int stop(int sig, std::chrono::milliseconds timeout = 20s) { return process_.stop(sig, timeout); }

 private:
  fs::path dir_;
  std::string shm_;
  ChildProcess process_;
  std::uint16_t metrics_port_ = 0;
};

// A model folder whose metadata nests fe_files 300,000 deep (it crashed the daemon with a
// stack overflow), beside a FIFO posing as a model file (reading it used to block).
void plant_hostile_files(const fs::path& models) {
  const fs::path folder = models / "acpi" / "AbsPower" / "BPFOnly" / "Deep_1";
  fs::create_directories(folder);
  const std::size_t depth = 300'000;
  write(folder / "metadata.json",
        R"({"model_name": "Deep_1", "model_class": "scikit", "model_file": "m.pkl",)"
        R"( "features": ["bpf_cpu_time_ms"], "fe_files": )" +
            std::string(depth, '[') + std::string(depth, ']') + "}");
  write(folder / "m.pkl", "x");
  ASSERT_EQ(mkfifo((models / "acpi" / "AbsPower" / "BPFOnly" / "Fifo_1.json").c_str(), 0600), 0);
  fs::create_directories(models / "fifo_folder");
  write(models / "fifo_folder" / "metadata.json",
        R"({"model_name": "F", "model_class": "weight", "model_file": "w.json"})");
  ASSERT_EQ(mkfifo((models / "fifo_folder" / "w.json").c_str(), 0600), 0);
}

// ---- model files ------------------------------------------------------------------------

TEST(HostileModelFiles, DaemonStartsServesAndStopsOnADeepFileAndAFifo) {
  Watchdog dog(120);
  Daemon d("deep-start");
  plant_hostile_files(d.models());
  ASSERT_TRUE(d.start());
  EXPECT_NE(d.log().find("nests deeper than 64 levels"), std::string::npos) << d.log();
  EXPECT_TRUE(honest_call_succeeds(d.socket()));
  const int status = d.stop(SIGTERM);
  EXPECT_TRUE(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

TEST(HostileModelFiles, HotReloadOfADeepFileAndAFifo) {
  Watchdog dog(120);
  Daemon d("deep-reload");
  ASSERT_TRUE(d.start());
  plant_hostile_files(d.models());
  bool reloaded = false;
  for (int i = 0; i < 1000 && !reloaded; ++i) {
    reloaded = d.log().find("nests deeper than 64 levels") != std::string::npos;
    if (!reloaded) std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(reloaded) << d.log();
  EXPECT_TRUE(d.alive());
  EXPECT_TRUE(honest_call_succeeds(d.socket()));
  const int status = d.stop(SIGTERM);
  EXPECT_TRUE(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

TEST(HostileModelFiles, FetchedZipWithADeepMetadataIsRefused) {
  Watchdog dog(120);
  if (access("/usr/bin/python3", X_OK) != 0) GTEST_SKIP() << "/usr/bin/python3 builds the zip";
  Daemon d("deep-fetch");
  const fs::path zip = d.models().parent_path() / "Deep_1.zip";
  const fs::path script = d.models().parent_path() / "make_zip.py";
  write(script, R"PY(import sys, zipfile
depth = 300000
metadata = ('{"model_name": "Deep_1", "model_class": "scikit", "model_file": "m.pkl", '
            '"features": ["bpf_cpu_time_ms"], "fe_files": ' + "[" * depth + "]" * depth + "}")
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("metadata.json", metadata)
    z.writestr("m.pkl", "x")
)PY");
  const std::string command = "/usr/bin/python3 " + script.string() + " " + zip.string();
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  ASSERT_LT(fs::file_size(zip), 4096u);  // deflate makes the 600 KB of brackets tiny
  const fs::path config = d.models().parent_path() / "config";
  write(config, "NODE_COMPONENTS_INIT_URL=file://" + zip.string() + "\n");
  ASSERT_TRUE(d.start({"--config", config.string()}));
  bool refused = false;
  for (int i = 0; i < 2000 && !refused; ++i) {
    const std::string log = d.log();
    refused = log.find("refused") != std::string::npos &&
              log.find("nests deeper than 64 levels") != std::string::npos;
    if (!refused) std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(refused) << d.log();
  EXPECT_TRUE(d.alive());
  EXPECT_TRUE(honest_call_succeeds(d.socket()));
  const int status = d.stop(SIGTERM);
  EXPECT_TRUE(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

// Peak RSS of `estimator models --model-dir dir`, from the rusage of the exited child.
long cli_peak_rss_bytes(const fs::path& dir, std::string* output) {
  const fs::path out = dir / "out.txt";
  const std::string dir_arg = (dir / "m").string();
  std::vector<std::string> args = {ESTIMATOR_CLI_PATH, "models", "--model-dir", dir_arg};
  ChildProcess cli;
  if (!cli.start_logged(args, out.string())) return -1;
  rusage ru{};
  cli.wait(&ru);
  *output = read_file(out);
  return ru.ru_maxrss * 1024L;
}

// Measured: a 60 MB XGBoost JSON loads in ~350 MB peak (text, one DOM of ~3.4x, the
// model); a 60 MB array of zeros is refused at ~80 MB (1 GB before the limit).
TEST(HostileModelFiles, SixtyMegabyteJsonLoadsInBoundedMemory) {
  Watchdog dog(300);
  const fs::path root = fs::temp_directory_path() / unique_shm_name("bigjson");
  fs::remove_all(root);
  const fs::path xgb = root / "xgb" / "m" / "acpi" / "AbsPower" / "BPFOnly" / "Xgb_1";
  const fs::path zeros = root / "zeros" / "m" / "acpi" / "AbsPower" / "BPFOnly" / "Zeros_1";
  fs::create_directories(xgb);
  fs::create_directories(zeros);
  // Written by a child: a child's ru_maxrss starts from its parent's RSS at the spawn (and
  // is kept across exec), so this process must stay small.
  const pid_t writer = fork();
  ASSERT_GE(writer, 0);
  if (writer == 0) {
    auto doc = nlohmann::ordered_json::parse(
        read_file(fs::path(ESTIMATOR_FIXTURES_DIR) / "xgboost" / "squared_d5.json"));
    auto& model = doc["learner"]["gradient_booster"]["model"];
    const auto trees = model["trees"];
    const std::size_t n = (60u << 20) / (trees.dump().size() / trees.size());
    nlohmann::ordered_json all = nlohmann::ordered_json::array();
    for (std::size_t i = 0; i < n; ++i) {
      all.push_back(trees[i % trees.size()]);
      all.back()["id"] = i;
    }
    model["trees"] = std::move(all);
    model["tree_info"] = std::vector<int>(n, 0);
    model["gbtree_model_param"]["num_trees"] = std::to_string(n);
    const int features = std::stoi(doc["learner"]["learner_model_param"]["num_feature"].get<std::string>());
    nlohmann::json names = nlohmann::json::array();
    for (int i = 0; i < features; ++i) names.push_back("f" + std::to_string(i));
    write(xgb / "Xgb_1.json", doc.dump());
    write(xgb / "metadata.json", nlohmann::json{{"model_name", "Xgb_1"},
                                                {"model_class", "xgboost"},
                                                {"model_file", "Xgb_1.json"},
                                                {"features", names}}
                                     .dump());
    std::string text = R"({"All_Weights": [0)";
    text.reserve(60u << 20);
    while (text.size() < (60u << 20)) text += ",0";
    write(zeros / "Zeros_1.json", text + "]}");
    write(zeros / "metadata.json",
          R"({"model_name": "Zeros_1", "model_class": "weight", "model_file": "Zeros_1.json"})");
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(writer, &status, 0), writer);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ASSERT_GT(fs::file_size(xgb / "Xgb_1.json"), 55u << 20);
  ASSERT_LT(fs::file_size(xgb / "Xgb_1.json"), kMaxModelFileBytes);

  std::string out;
  const long xgb_peak = cli_peak_rss_bytes(root / "xgb", &out);
  EXPECT_NE(out.find("0 file(s) refused"), std::string::npos) << out;
  EXPECT_GT(xgb_peak, 0);
  EXPECT_LT(xgb_peak, 600L << 20) << "peak RSS loading a 60 MB XGBoost JSON";

  const long zeros_peak = cli_peak_rss_bytes(root / "zeros", &out);
  EXPECT_NE(out.find("its parsed form would take more than"), std::string::npos) << out;
  EXPECT_GT(zeros_peak, 0);
  EXPECT_LT(zeros_peak, 600L << 20) << "peak RSS refusing a 60 MB array of zeros";
  std::printf("peak RSS: 60 MB XGBoost %ld MB, 60 MB of zeros %ld MB\n", xgb_peak >> 20,
              zeros_peak >> 20);
  fs::remove_all(root);
}

// ---- the Kepler socket ------------------------------------------------------------------

TEST(KeplerSocketAbuse, SlowlorisOf2000ConnectionsDoesNotLockOutHonestClients) {
  Watchdog dog(120);
  raise_fd_limit(4096);
  Daemon d("slowloris");
  ASSERT_TRUE(d.start());
  std::vector<int> attackers;
  int honest_ok = 0;
  int honest = 0;
  for (int i = 0; i < 2000; ++i) {
    const int fd = unix_connect(d.socket());
    if (fd >= 0) {
      (void)send(fd, "{", 1, MSG_NOSIGNAL | MSG_DONTWAIT);  // a request that never ends
      attackers.push_back(fd);
    }
    if (i % 100 == 99) {
      ++honest;
      honest_ok += honest_call_succeeds(d.socket()) ? 1 : 0;
    }
  }
  for (int i = 0; i < 20; ++i) {
    ++honest;
    honest_ok += honest_call_succeeds(d.socket()) ? 1 : 0;
  }
  EXPECT_EQ(honest_ok, honest) << "honest requests answered during the slowloris";
  EXPECT_TRUE(d.alive());
  for (int fd : attackers) ::close(fd);
  EXPECT_NE(d.log().find("too many connections"), std::string::npos) << d.log();
}

TEST(KeplerSocketAbuse, NearLimitPartialRequestsKeepMemoryBounded) {
  Watchdog dog(240);
  raise_fd_limit(4096);
  Daemon d("partial");
  ASSERT_TRUE(d.start());
  const std::size_t base = rss_bytes(d.pid());
  // 256 connections, each sending just under the 4 MiB request limit of a request that
  // never completes, reconnecting when the daemon closes one: 1 GiB in all against the
  // 64 MiB cap.
  constexpr std::size_t kEach = (4u << 20) - 1024;
  std::string chunk = R"({"metrics": ")";
  chunk.resize(64u << 10, 'x');
  std::vector<int> fds;
  std::vector<std::size_t> sent(256, 0);
  for (int i = 0; i < 256; ++i) {
    const int fd = unix_connect(d.socket());
    ASSERT_GE(fd, 0);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    fds.push_back(fd);
  }
  std::size_t peak = 0;
  std::size_t total = 0;
  const auto end = std::chrono::steady_clock::now() + 60s;  // ~2 s when the machine is idle
  for (bool progress = true; progress && total < (1u << 30) && std::chrono::steady_clock::now() < end;) {
    progress = false;
    for (std::size_t i = 0; i < fds.size(); ++i) {
      if (fds[i] < 0) {  // closed by the daemon: come back (a failed connect retries)
        fds[i] = unix_connect(d.socket());
        sent[i] = 0;
        if (fds[i] >= 0) fcntl(fds[i], F_SETFL, O_NONBLOCK);
        progress = true;
        continue;
      }
      if (sent[i] >= kEach) continue;
      const std::size_t at = sent[i] % chunk.size();
      const std::size_t len = std::min(chunk.size() - at, kEach - sent[i]);
      const ssize_t n = send(fds[i], chunk.data() + at, len, MSG_NOSIGNAL);
      if (n > 0) {
        sent[i] += static_cast<std::size_t>(n);
        total += static_cast<std::size_t>(n);
        progress = true;
      } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        ::close(fds[i]);  // refused by the cap: the server closed it
        fds[i] = -1;
      } else {
        progress = true;  // a full buffer: the daemon reads it later
      }
    }
    peak = std::max(peak, rss_bytes(d.pid()));
    std::this_thread::sleep_for(1ms);
  }
  for (int i = 0; i < 50; ++i) {
    peak = std::max(peak, rss_bytes(d.pid()));
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(d.alive());
  EXPECT_TRUE(honest_call_succeeds(d.socket())) << "an honest request during the attack";
  for (int fd : fds) {
    if (fd >= 0) ::close(fd);
  }
  // The daemon sees the closes, frees the buffers and trims the heap.
  std::size_t after = rss_bytes(d.pid());
  for (int i = 0; i < 500 && after >= (64u << 20); ++i) {
    std::this_thread::sleep_for(20ms);
    after = rss_bytes(d.pid());
  }
  std::printf("sent %zu MB; daemon RSS: %zu MB before, %zu MB peak, %zu MB after\n", total >> 20,
              base >> 20, peak >> 20, after >> 20);
  EXPECT_GE(total, 256u << 20) << "the attack did not get 4 times the cap through";
  EXPECT_LT(peak, base + (160u << 20)) << "64 MiB cap plus generous slack";
  EXPECT_LT(after, 64u << 20);
  EXPECT_TRUE(d.alive());
  EXPECT_NE(d.log().find("too many unfinished requests"), std::string::npos) << d.log();
}

TEST(KeplerSocketAbuse, IdleConnectionsAreClosedAfterTheTimeout) {
  Watchdog dog(60);
  Daemon d("idle");
  ASSERT_TRUE(d.start({"--socket-timeout-ms", "300"}));
  const int fd = unix_connect(d.socket());
  ASSERT_GE(fd, 0);
  const auto t0 = std::chrono::steady_clock::now();
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = recv(fd, buf, sizeof buf, 0)) > 0;) out.append(buf, static_cast<std::size_t>(n));
  const auto waited = std::chrono::steady_clock::now() - t0;
  ::close(fd);
  EXPECT_NE(out.find("no complete JSON request within 300 ms"), std::string::npos) << out;
  EXPECT_GE(waited, 250ms);
  EXPECT_LT(waited, 8s);  // closed by the daemon, not by the 10 s receive timeout
}

// ---- the metrics endpoint ----------------------------------------------------------------

TEST(MetricsAbuse, ScrapesWorkWhileIdleConnectionsFillEveryPlace) {
  Watchdog dog(60);
  Daemon d("metrics-idle");
  ASSERT_TRUE(d.start());
  std::vector<int> idle;
  for (int i = 0; i < 100; ++i) {
    const int fd = loopback_connect(d.metrics_port());
    if (fd >= 0) idle.push_back(fd);
  }
  ASSERT_EQ(idle.size(), 100U);
  // Well within the 5 s connection deadline that used to be the only way out for them.
  for (int i = 0; i < 5; ++i) {
    const std::string reply =
        exchange(loopback_connect(d.metrics_port()), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 3s);
    EXPECT_TRUE(reply.starts_with("HTTP/1.1 200 OK")) << "scrape " << i << ": " << reply.substr(0, 80);
    EXPECT_NE(reply.find("estimator_"), std::string::npos);
  }
  for (int fd : idle) ::close(fd);
}

}  // namespace
}  // namespace estimator::testing
