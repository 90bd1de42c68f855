// SPDX-License-Identifier: Apache-2.0
#include "service/cli/demo.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

#include "clients/cpp/estimator_client.h"

extern char** environ;

namespace estimator::service {
namespace {

// A child estimatord, stopped with SIGTERM (so it removes its segment) when destroyed.
class ChildDaemon {
 public:
  ChildDaemon(const std::string& path, const std::string& shm_name) {
    std::vector<std::string> args = {path, "--shm-name", shm_name, "--log-level", "warn"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (posix_spawn(&pid_, path.c_str(), nullptr, nullptr, argv.data(), environ) != 0) pid_ = -1;
  }
  ~ChildDaemon() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
  }
  ChildDaemon(const ChildDaemon&) = delete;
  ChildDaemon& operator=(const ChildDaemon&) = delete;
  bool started() const { return pid_ > 0; }

 private:
  pid_t pid_ = -1;
};

std::string daemon_beside(const char* argv0) {
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) self = argv0;
  return (self.parent_path() / "estimatord").string();
}

double percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  const auto k = static_cast<std::size_t>(std::min<double>(v.size() - 1, p / 100.0 * v.size()));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

}  // namespace

int run_demo(const DemoOptions& o, const char* argv0) {
  const std::string path = o.daemon_path.empty() ? daemon_beside(argv0) : o.daemon_path;
  const std::string shm_name = "estimator-demo-" + std::to_string(getpid());
  std::printf("starting %s on segment '%s' with the embedded default models\n", path.c_str(),
              shm_name.c_str());
  ChildDaemon daemon(path, shm_name);
  if (!daemon.started()) {
    std::fprintf(stderr, "demo: cannot start %s\n", path.c_str());
    return 1;
  }
  client::Client c({.shm_name = shm_name});
  Status up(Code::kUnavailable, "not tried");
  for (int i = 0; i < 100 && !up.ok(); ++i) {
    up = c.ping(std::chrono::milliseconds(100));
    if (!up.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (!up.ok()) {
    std::fprintf(stderr, "demo: daemon did not answer: %s\n", up.to_string().c_str());
    return 1;
  }

  // Each pod: a base CPU load, a period and a phase; usage is per second of the interval,
  // as Kepler sends it (bpf_cpu_time_ms = ms of CPU per second, page cache hits per second).
  std::mt19937 rng(42);
  std::uniform_real_distribution<double> u(0, 1);
  struct Pod { std::string name; double base, amp, period, phase; };
  std::vector<Pod> pods;
  for (int i = 0; i < o.pods; ++i) {
    pods.push_back({"pod-" + std::to_string(i), 5 + 300 * u(rng) * u(rng), 50 * u(rng),
                    2 + 6 * u(rng), 6.28 * u(rng)});
  }
  const std::string_view features[] = {"bpf_cpu_time_ms", "bpf_page_cache_hit"};
  std::vector<float> matrix(pods.size() * 2);
  std::vector<double> latencies_us;
  constexpr int kTimedPerInterval = 2000;

  for (int t = 0; t < o.intervals; ++t) {
    for (std::size_t p = 0; p < pods.size(); ++p) {
      const Pod& pod = pods[p];
      const double cpu = std::max(0.0, pod.base + pod.amp * std::sin(pod.phase + t * 6.28 / pod.period) +
                                           10 * (u(rng) - 0.5));
      matrix[2 * p] = static_cast<float>(cpu);
      matrix[2 * p + 1] = static_cast<float>(cpu * 3 * u(rng));
    }
    // As Kepler does it: the node's power from the node's usage (the AbsPower model on one
    // row of summed usage, and on a row of zeros for the idle part), then each pod's share
    // of it by usage (the ratio model, which falls back to bpf_cpu_time_ms as the usage
    // column when hardware counters are absent).
    float node_rows[4] = {0, 0, 0, 0};
    for (std::size_t p = 0; p < pods.size(); ++p) {
      node_rows[0] += matrix[2 * p];
      node_rows[1] += matrix[2 * p + 1];
    }
    auto node = c.estimate({.selector = {.output_type = "AbsPower", .source = "rapl-sysfs"},
                            .features = features,
                            .matrix = node_rows,
                            .rows = 2,
                            .cols = 2});
    if (!node.ok()) {
      std::fprintf(stderr, "demo: node power: %s\n", node.status().to_string().c_str());
      return 1;
    }
    std::vector<std::string> comps;
    std::vector<float> dynamic, idle;
    for (std::uint32_t k = 0; k < node->cols(); ++k) {
      comps.emplace_back(node->component(k));
      idle.push_back(node->power(1, k));
      dynamic.push_back(std::max(0.0f, node->power(0, k) - node->power(1, k)));
    }
    const double node_total = std::accumulate(dynamic.begin(), dynamic.end(), 0.0) +
                              std::accumulate(idle.begin(), idle.end(), 0.0);
    const std::string node_model(node->model().name);
    node = Status(Code::kUnavailable, "released");  // frees its slot
    std::vector<NodePower> node_power;
    for (std::size_t k = 0; k < comps.size(); ++k) {
      node_power.push_back({comps[k], {&dynamic[k], 1}, {&idle[k], 1}});
    }
    const client::Request req{.selector = {.name = "Ratio"},
                              .features = features,
                              .matrix = matrix.data(),
                              .rows = static_cast<std::uint32_t>(pods.size()),
                              .cols = 2,
                              .node_power = node_power};
    {
    auto reply = c.estimate(req);  // scoped: its slot is freed before the timed loop
    if (!reply.ok()) {
      std::fprintf(stderr, "demo: %s\n", reply.status().to_string().c_str());
      return 1;
    }
    double total = 0;
    for (float w : reply->powers()) total += w;
    std::printf("interval %d: node %.2f W (%s), split over %zu pods by the %s model: %.2f W\n",
                t + 1, node_total, node_model.c_str(), pods.size(),
                std::string(reply->model().name).c_str(), total);
    if (t == o.intervals - 1) {
      std::printf("\n%-8s %12s", "pod", "cpu_ms/s");
      for (std::uint32_t c2 = 0; c2 < reply->cols(); ++c2) {
        std::printf(" %10s", (std::string(reply->component(c2)) + "_W").c_str());
      }
      std::printf("\n");
      for (std::uint32_t r = 0; r < reply->rows(); ++r) {
        std::printf("%-8s %12.1f", pods[r].name.c_str(), matrix[2 * r]);
        for (std::uint32_t c2 = 0; c2 < reply->cols(); ++c2) std::printf(" %10.3f", reply->power(r, c2));
        std::printf("\n");
      }
    }
    }
    for (int i = 0; i < kTimedPerInterval; ++i) {
      const auto a = std::chrono::steady_clock::now();
      auto timed = c.estimate(req);
      const auto b = std::chrono::steady_clock::now();
      if (timed.ok()) latencies_us.push_back(std::chrono::duration<double, std::micro>(b - a).count());
    }
    if (t + 1 < o.intervals) std::this_thread::sleep_for(std::chrono::milliseconds(o.interval_ms));
  }
  std::printf("\nround trip of the per-pod request, %zu requests of %zu rows x 2 features:\n",
              latencies_us.size(), pods.size());
  const double p50 = percentile(latencies_us, 50), p90 = percentile(latencies_us, 90),
               p99 = percentile(latencies_us, 99), p999 = percentile(latencies_us, 99.9);
  const double mx = latencies_us.empty() ? 0 : *std::max_element(latencies_us.begin(), latencies_us.end());
  std::printf("  p50 %.2f us   p90 %.2f us   p99 %.2f us   p99.9 %.2f us   max %.2f us\n", p50, p90,
              p99, p999, mx);
  return 0;
}

}  // namespace estimator::service
