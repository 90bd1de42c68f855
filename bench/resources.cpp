// SPDX-License-Identifier: Apache-2.0
// estimator-bench --resources (see resources.h).
#include "bench/resources.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "clients/cpp/estimator_client.h"
#include "common/status.h"

namespace estimator::bench {
namespace {

namespace fs = std::filesystem;
using SteadyClock = std::chrono::steady_clock;

constexpr int kModelsToAdd = 50;
constexpr double kRssTargetMb = 16;
constexpr double kIdleCpuTargetPercent = 0.1;
constexpr double kStartupTargetMs = 50;
// A daemon that loads more slowly than this is reported as failing to start.
constexpr auto kStartLimit = std::chrono::seconds(20);

// A temporary directory, removed with everything in it.
class TempDir {
 public:
  static Result<TempDir> make() {
    std::string pattern = "/tmp/estimator-bench-res-XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) {
      return Status(Code::kPermissionDenied, "mkdtemp: " + std::string(std::strerror(errno)));
    }
    return TempDir(pattern);
  }
  TempDir(TempDir&& o) noexcept : path_(std::move(o.path_)) { o.path_.clear(); }
  TempDir& operator=(TempDir&&) = delete;
  TempDir(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  explicit TempDir(fs::path p) : path_(std::move(p)) {}
  fs::path path_;
};

// A child process running a program, its stdout and stderr into `log`; SIGTERM, then
// SIGKILL, and reaped on destruction. It also gets SIGTERM when this process dies.
class Process {
 public:
  static Result<std::unique_ptr<Process>> spawn(const std::vector<std::string>& argv,
                                                const fs::path& log, bool search_path = false) {
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const std::string log_path = log.string();
    std::fflush(nullptr);
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0) {
      return Status(Code::kResourceExhausted, "fork: " + std::string(std::strerror(errno)));
    }
    if (pid == 0) {  // only async-signal-safe calls until exec
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != parent) _exit(126);
      const int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      if (fd >= 0) {
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
      }
      if (search_path) {
        execvp(args[0], args.data());
      } else {
        execv(args[0], args.data());
      }
      _exit(127);
    }
    return std::unique_ptr<Process>(new Process(pid));
  }

  ~Process() { stop(); }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }

  // True while it runs; once it has exited, its exit status is in exit_code().
  bool running() {
    if (pid_ <= 0) return false;
    int status = 0;
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      pid_ = -1;
      return false;
    }
    return r == 0;
  }
  int exit_code() const { return code_; }

  // Waits up to `limit` for the process to exit by itself.
  bool wait(std::chrono::milliseconds limit) {
    const auto end = SteadyClock::now() + limit;
    while (running()) {
      if (SteadyClock::now() >= end) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return true;
  }

  void stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    if (!wait(std::chrono::milliseconds(5000))) {
      kill(pid_, SIGKILL);
      int status = 0;
      while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
      pid_ = -1;
    }
  }

 private:
  explicit Process(pid_t pid) : pid_(pid) {}
  pid_t pid_ = -1;
  int code_ = -1;
};

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// VmRSS of `pid` in bytes; NaN when unreadable.
double rss_bytes(pid_t pid) {
  std::istringstream in(read_text("/proc/" + std::to_string(pid) + "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      return std::strtod(line.c_str() + 6, nullptr) * 1024.0;  // the kernel writes kB
    }
  }
  return std::nan("");
}

// utime + stime of `pid` in clock ticks; -1 when unreadable. The fields follow the last
// ')' (the command name may hold spaces and parentheses): state is the first of them,
// utime the 12th and stime the 13th.
long long cpu_ticks(pid_t pid) {
  const std::string stat = read_text("/proc/" + std::to_string(pid) + "/stat");
  const std::size_t close = stat.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream in(stat.substr(close + 1));
  std::string field;
  long long utime = -1, stime = -1;
  for (int i = 1; i <= 13 && in >> field; ++i) {
    if (i == 12) utime = std::atoll(field.c_str());
    if (i == 13) stime = std::atoll(field.c_str());
  }
  return utime < 0 || stime < 0 ? -1 : utime + stime;
}

// The model count of the daemon's "ready: ... N models, ..." log line; -1 when absent.
int models_in_log(const fs::path& log) {
  const std::string text = read_text(log);
  const std::size_t ready = text.find("ready:");
  if (ready == std::string::npos) return -1;
  const std::size_t models = text.find(" models", ready);
  if (models == std::string::npos) return -1;
  std::size_t start = models;
  while (start > ready && text[start - 1] >= '0' && text[start - 1] <= '9') --start;
  return start == models ? -1 : std::atoi(text.c_str() + start);
}

// The daemon's own start-up figure, "started in X ms" of its ready line; NaN when absent.
double started_in_ms(const fs::path& log) {
  const std::string text = read_text(log);
  const std::size_t at = text.find("started in ");
  return at == std::string::npos ? std::nan("") : std::strtod(text.c_str() + at + 11, nullptr);
}

struct Started {
  std::unique_ptr<Process> process;
  double startup_ms = 0;
};

// Spawns estimatord on a private segment and waits until a client's ping is answered.
Result<Started> start_daemon(const ResourceOptions& o, const std::string& shm_name,
                             const std::vector<std::string>& extra, const fs::path& log) {
  std::vector<std::string> argv{o.estimatord, "--shm-name", shm_name, "--no-fetch",
                                "--log-level", "info"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  const auto t0 = SteadyClock::now();
  auto p = Process::spawn(argv, log);
  if (!p.ok()) return p.status();
  client::ClientOptions copts;
  copts.shm_name = shm_name;
  copts.spin = std::chrono::microseconds(0);
  client::Client client(copts);
  for (;;) {
    if (client.ping(std::chrono::milliseconds(5)).ok()) break;
    if (!(*p)->running()) {
      return Status(Code::kUnavailable, "estimatord exited with status " +
                                            std::to_string((*p)->exit_code()) +
                                            " before it was ready; its log:\n" + read_text(log));
    }
    if (SteadyClock::now() - t0 > kStartLimit) {
      return Status(Code::kDeadlineExceeded, "estimatord not ready within 20 s; its log:\n" +
                                                 read_text(log));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  const double ms =
      std::chrono::duration<double, std::milli>(SteadyClock::now() - t0).count();
  return Started{std::move(p).value(), ms};
}

// kModelsToAdd small weight models (Kepler's weight JSON, two features) under `dir`.
Status write_models(const fs::path& dir) {
  for (int i = 0; i < kModelsToAdd; ++i) {
    const std::string name = "BenchWeightTrainer_" + std::to_string(i);
    const fs::path folder = dir / "rapl-sysfs" / "AbsPower" / name;
    std::error_code ec;
    fs::create_directories(folder, ec);
    if (ec) return Status(Code::kPermissionDenied, folder.string() + ": " + ec.message());
    std::ofstream md(folder / "metadata.json");
    md << R"({"model_name": ")" << name << R"(", "trainer": "BenchWeightTrainer", )"
       << R"("model_class": "weight", "model_file": "weights.json", )"
       << R"("features": ["bpf_cpu_time_ms", "cpu_cycles"], "output_type": "AbsPower", )"
       << R"("source": "rapl-sysfs", "mae": )" << 100 + i << "}\n";
    std::ofstream w(folder / "weights.json");
    w << R"({"model_name": ")" << name << "\"";
    for (const char* component : {"package", "core", "uncore", "dram"}) {
      w << ", \"" << component << R"(": {"All_Weights": {"Bias_Weight": )" << 10 + i
        << R"(, "Categorical_Variables": {}, "Numerical_Variables": {)"
        << R"("bpf_cpu_time_ms": {"weight": )" << 1.5 + i << R"(, "scale": 1000}, )"
        << R"("cpu_cycles": {"weight": 0.25, "scale": 1e9}}}})";
    }
    w << "}\n";
    if (!md || !w) return Status(Code::kInternal, "cannot write " + folder.string());
  }
  return Status::Ok();
}

// Regular files under `dir` (symlinks not followed): total bytes and count.
std::pair<std::uintmax_t, std::size_t> tree_size(const fs::path& dir) {
  std::uintmax_t bytes = 0;
  std::size_t files = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_regular_file(ec) && !it->is_symlink(ec)) {
      bytes += it->file_size(ec);
      ++files;
    }
  }
  return {bytes, files};
}

double mb(double bytes) { return bytes / (1024.0 * 1024.0); }

void target(const char* what, double figure, bool ok, const std::string& detail) {
  std::printf("  %-45s %-13s %s\n", what,
              std::isnan(figure) ? "not measured" : ok ? "met" : "NOT met",
              std::isnan(figure) ? "" : detail.c_str());
}

std::string printed(const char* format, double v) {
  char buf[96];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

}  // namespace

int run_resources(const ResourceOptions& o) {
  if (access(o.estimatord.c_str(), X_OK) != 0) {
    std::fprintf(stderr, "estimator-bench: --estimatord %s is not an executable: %s\n",
                 o.estimatord.c_str(), std::strerror(errno));
    return 1;
  }
  auto tmp = TempDir::make();
  if (!tmp.ok()) {
    std::fprintf(stderr, "estimator-bench: %s\n", tmp.status().to_string().c_str());
    return 1;
  }
  const fs::path& dir = tmp->path();
  const std::string base = "estimator-bench-res-" + std::to_string(getpid());
  const double nan = std::nan("");
  double startup_ms = nan, rss_default = nan, rss_many = nan, idle_percent = nan;
  int models_default = -1, models_many = -1;
  int failures = 0;
  std::printf("estimator-bench --resources: %s\n", o.estimatord.c_str());

  {  // defaults: start-up, RSS, idle CPU
    auto d = start_daemon(o, base + "-a", {}, dir / "defaults.log");
    if (!d.ok()) {
      std::fprintf(stderr, "estimator-bench: %s\n", d.status().to_string().c_str());
      ++failures;
    } else {
      startup_ms = d->startup_ms;
      // Let start-up work that follows readiness (threads settling, first heartbeat) end.
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      rss_default = rss_bytes(d->process->pid());
      models_default = models_in_log(dir / "defaults.log");
      std::printf("start-up to ready (spawn until a ping is answered): %.1f ms (the daemon's "
                  "log: started in %.1f ms after main)\n",
                  startup_ms, started_in_ms(dir / "defaults.log"));
      std::printf("RSS with the default models (%d models): %.2f MB\n", models_default,
                  mb(rss_default));
      const long long t0 = cpu_ticks(d->process->pid());
      const auto w0 = SteadyClock::now();
      std::printf("idle CPU: measuring over %.0f s ...\n", o.idle_s);
      std::fflush(stdout);
      std::this_thread::sleep_for(std::chrono::duration<double>(o.idle_s));
      const long long t1 = cpu_ticks(d->process->pid());
      const double wall = std::chrono::duration<double>(SteadyClock::now() - w0).count();
      if (t0 >= 0 && t1 >= t0 && wall > 0) {
        const double ticks_per_s = static_cast<double>(sysconf(_SC_CLK_TCK));
        const double cpu_s = static_cast<double>(t1 - t0) / ticks_per_s;
        idle_percent = 100.0 * cpu_s / wall;
        std::printf("idle CPU: %.3f %% of a core (%.2f s of CPU in %.1f s; resolution %.3f %%)\n",
                    idle_percent, cpu_s, wall,
                    100.0 / ticks_per_s / wall);
      } else {
        std::fprintf(stderr, "estimator-bench: cannot read /proc/%d/stat\n",
                     static_cast<int>(d->process->pid()));
        ++failures;
      }
    }
  }

  {  // 50 more models
    const fs::path models = dir / "models";
    if (Status s = write_models(models); !s.ok()) {
      std::fprintf(stderr, "estimator-bench: %s\n", s.to_string().c_str());
      ++failures;
    } else {
      auto d = start_daemon(o, base + "-b", {"--model-dir", models.string()}, dir / "many.log");
      if (!d.ok()) {
        std::fprintf(stderr, "estimator-bench: %s\n", d.status().to_string().c_str());
        ++failures;
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        rss_many = rss_bytes(d->process->pid());
        models_many = models_in_log(dir / "many.log");
        std::printf("RSS with %d weight models added (%d models): %.2f MB\n", kModelsToAdd,
                    models_many, mb(rss_many));
      }
    }
  }

  {  // binary sizes
    std::error_code ec;
    const auto size = fs::file_size(o.estimatord, ec);
    const fs::path copy = dir / "estimatord.stripped";
    fs::copy_file(o.estimatord, copy, ec);
    double stripped = nan;
    if (!ec) {
      auto strip = Process::spawn({"strip", copy.string()}, dir / "strip.log", true);
      if (strip.ok() && (*strip)->wait(std::chrono::milliseconds(60000)) &&
          (*strip)->exit_code() == 0) {
        stripped = static_cast<double>(fs::file_size(copy, ec));
      }
    }
    if (std::isnan(stripped)) {
      std::printf("binary: %.2f MB; stripped: unknown (strip failed: %s)\n",
                  mb(static_cast<double>(size)), read_text(dir / "strip.log").c_str());
      ++failures;
    } else {
      std::printf("binary: %.2f MB, stripped %.2f MB\n", mb(static_cast<double>(size)),
                  mb(stripped));
    }
  }

  if (access(o.collect_script.c_str(), R_OK) != 0) {
    std::printf("image: no image (%s absent)\n", o.collect_script.c_str());
  } else {
    const fs::path image = dir / "image";
    auto collect = Process::spawn({"bash", o.collect_script, "--strip", image.string(),
                                   o.estimatord},
                                  dir / "collect.log", true);
    if (collect.ok() && (*collect)->wait(std::chrono::milliseconds(120000)) &&
        (*collect)->exit_code() == 0) {
      const auto [bytes, files] = tree_size(image);
      std::printf("image (%s --strip): %.2f MB in %zu files\n", o.collect_script.c_str(),
                  mb(static_cast<double>(bytes)), files);
    } else {
      std::printf("image: %s failed:\n%s\n", o.collect_script.c_str(),
                  read_text(dir / "collect.log").c_str());
      ++failures;
    }
  }

  std::printf("\ntargets (issue #6):\n");
  target("daemon RSS with the default models <= 16 MB", rss_default,
         mb(rss_default) <= kRssTargetMb, printed("%.2f MB", mb(rss_default)));
  target("idle CPU <= 0.1 % of a core", idle_percent, idle_percent <= kIdleCpuTargetPercent,
         printed("%.3f %%", idle_percent));
  target("start-up to ready <= 50 ms", startup_ms, startup_ms <= kStartupTargetMs,
         printed("%.1f ms", startup_ms));
  std::fflush(stdout);
  return failures == 0 ? 0 : 1;
}

}  // namespace estimator::bench
