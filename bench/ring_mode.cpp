// SPDX-License-Identifier: Apache-2.0
// Ring mode: what a user of the estimator gets. A forked child runs the daemon core
// (service::Daemon, the code estimatord runs) on the benchmark's models; this process
// calls it through the real client (client::Client::estimate), which encodes the request
// into a slot, publishes it, waits for the answer, copies it out and verifies the copy.
//
// Why it is fair: nothing is skipped or precomputed. Each round trip encodes the request
// (the client's encoder patches a new request id and the matrix into the last request of
// the same shape, as the socket lane's encoder does), the daemon verifies and decodes it,
// evaluates the model and builds the response, and the client copies that response out
// of its slot and verifies it before the clock stops, as the socket baseline reads and
// checks its reply. The regimes (RingRegime):
// default, as shipped (50 us spins); predict, the same with the predictive wake-up; spin,
// both sides spin --spin-us (default 1 ms), so back-to-back requests are served hot;
// sleep, neither side spins, so every request and every answer is a wake-up.
//
// Several clients: one client::Client per thread (as several exporters would each have
// their own), all started together on each run's share and joined before it returns; the
// daemon keeps its one dispatch thread (its default), except in the threads regime, run
// with 1 and 2 dispatch threads (--threads). Shared: the threads call one
// client::Client together (variant "shared", on the spinning daemon). Every lane calls
// estimate(request, reply, timeout), reusing one Reply per thread: no allocation per call.
#include <signal.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <atomic>
#include <cstdlib>
#include <string>
#include <thread>

#include "bench/child.h"
#include "bench/modes.h"
#include "clients/cpp/estimator_client.h"
#include "service/daemon.h"

namespace estimator::bench {

class RingDaemon {
 public:
  RingDaemon(std::string shm_name, const ModeOptions& options, std::chrono::microseconds spin)
      : shm_name_(std::move(shm_name)), timeout_(options.timeout), spin_(spin) {}
  ~RingDaemon() {
    if (child_ != nullptr) child_->stop();
    // The daemon removes its segment when it stops; this covers one that had to be killed.
    shm_unlink(("/" + shm_name_).c_str());
    unlink(("/dev/shm/" + shm_name_ + ".lock").c_str());
  }
  RingDaemon(const RingDaemon&) = delete;
  RingDaemon& operator=(const RingDaemon&) = delete;

  client::ClientOptions client_options() const {
    client::ClientOptions o;
    o.shm_name = shm_name_;
    o.spin = spin_;
    o.timeout = timeout_;
    return o;
  }
  std::chrono::milliseconds timeout() const { return timeout_; }

  std::unique_ptr<Child> child_;

 private:
  std::string shm_name_;
  std::chrono::milliseconds timeout_;
  std::chrono::microseconds spin_;
};

namespace {

// Round trips of `c` on one client; latencies into `ns` when given.
Status call_loop(client::Client& client, const Case& c, std::size_t count,
                 Clock::time_point deadline, std::chrono::milliseconds timeout,
                 std::vector<std::int64_t>* ns) {
  client::Request request{
      .selector = {.output_type = kOutputType, .source = kSource},
      .features = feature_names(c.cols),
      .matrix = c.matrix.data(),
      .rows = c.rows,
      .cols = c.cols,
  };
  if (c.by_name) request.selector.name = c.model_name;
  static thread_local client::Reply reply;
  for (std::size_t i = 0; i < count; ++i) {
    const auto t0 = Clock::now();
    const Status got = client.estimate(request, reply, timeout);
    const auto t1 = Clock::now();
    if (!got.ok()) return Status(got.code(), "ring: " + got.message());
    if (Status s = check_reply(c, reply.rows(), reply.cols(), reply.powers().data(),
                               reply.model().name);
        !s.ok()) {
      return Status(s.code(), "ring: " + s.message());
    }
    if (ns != nullptr) ns->push_back(elapsed_ns(t0, t1));
    if (t1 >= deadline) break;
    // The slot was freed inside estimate() (the reply is a private copy): timed.
  }
  return Status::Ok();
}

class RingMode final : public Mode {
 public:
  RingMode(std::shared_ptr<RingDaemon> daemon, const std::vector<Case>& cases, unsigned clients,
           bool shared)
      : daemon_(std::move(daemon)), cases_(cases), threads_(clients) {
    for (unsigned k = 0; k < (shared ? 1 : clients); ++k) {
      clients_.push_back(std::make_unique<client::Client>(daemon_->client_options()));
    }
    per_thread_.resize(clients);
  }

  ~RingMode() override {
    clients_.clear();  // detach before the daemon may stop
    daemon_.reset();
  }

  Status ping() { return clients_.front()->ping(daemon_->timeout()); }

  pid_t server_pid() const override { return ring_daemon_pid(*daemon_); }

  Status run(std::size_t index, std::size_t count, Clock::time_point deadline,
             Samples* out) override {
    const Case& c = cases_[index];
    if (threads_ == 1) {
      std::vector<std::int64_t>& ns = per_thread_[0];
      ns.clear();
      Status s = call_loop(*clients_[0], c, count, deadline, daemon_->timeout(),
                           out != nullptr ? &ns : nullptr);
      if (out != nullptr) {
        for (const std::int64_t v : ns) out->add(v);
      }
      return s;
    }
    const std::size_t n = threads_;
    std::vector<Status> status(n);
    {
      std::vector<std::jthread> threads;
      threads.reserve(n);
      for (std::size_t k = 0; k < n; ++k) {
        const std::size_t share = count / n + (k < count % n ? 1 : 0);
        threads.emplace_back([&, k, share] {
          per_thread_[k].clear();
          status[k] = call_loop(*clients_[k % clients_.size()], c, share, deadline,
                                daemon_->timeout(),
                                out != nullptr ? &per_thread_[k] : nullptr);
        });
      }
    }  // joined
    for (std::size_t k = 0; k < n; ++k) {
      if (out != nullptr) {
        for (const std::int64_t v : per_thread_[k]) out->add(v);
      }
    }
    for (const Status& s : status) {
      if (!s.ok()) return s;
    }
    return Status::Ok();
  }

 private:
  std::shared_ptr<RingDaemon> daemon_;
  const std::vector<Case>& cases_;
  std::size_t threads_;
  std::vector<std::unique_ptr<client::Client>> clients_;  // one per thread, or one shared
  std::vector<std::vector<std::int64_t>> per_thread_;  // latencies, kept between runs
};

// The child: the daemon core until SIGTERM (from the parent, or from the kernel when the
// parent dies), then a clean stop that removes the segment.
int serve_ring(const service::DaemonConfig& config,
               std::shared_ptr<const models::Registry> registry, const Child::Ready& ready) {
  spdlog::set_level(std::getenv("ESTIMATOR_BENCH_DAEMON_DEBUG") != nullptr ? spdlog::level::debug : spdlog::level::warn);
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);  // before the daemon's threads inherit it
  auto daemon = service::Daemon::start(config, std::move(registry));
  if (!daemon.ok()) {
    ready(daemon.status());
    return 1;
  }
  ready(Status::Ok());
  int sig = 0;
  sigwait(&stop, &sig);
  daemon.value().reset();
  return 0;
}

std::atomic<unsigned> daemons_started{0};

}  // namespace

const char* regime_variant(RingRegime regime) {
  switch (regime) {
    case RingRegime::kDefault: return "default";
    case RingRegime::kSpin: return "spin";
    case RingRegime::kSleep: return "block";
    case RingRegime::kPredict: return "predict";
    case RingRegime::kThreads: return "threads";
  }
  return "?";
}

pid_t ring_daemon_pid(const RingDaemon& daemon) {
  return daemon.child_ != nullptr ? daemon.child_->pid() : -1;
}

Result<std::shared_ptr<RingDaemon>> start_ring_daemon(
    std::shared_ptr<const models::Registry> registry, const ModeOptions& options,
    RingRegime regime, unsigned threads) {
  service::DaemonConfig config;
  config.segment.name = "estimator-bench-" + std::to_string(getpid()) + "-" +
                        std::to_string(daemons_started.fetch_add(1));
  const client::ClientOptions shipped;
  std::chrono::microseconds client_spin = shipped.spin;  // the defaults
  switch (regime) {
    case RingRegime::kDefault:
      break;
    case RingRegime::kPredict:
      config.predict = true;
      break;
    case RingRegime::kSpin:
      client_spin = options.spin;
      config.spin_ns = static_cast<std::uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(options.spin).count());
      break;
    case RingRegime::kSleep:
      client_spin = std::chrono::microseconds(0);
      config.spin_ns = 0;
      config.predict = false;
      break;
    case RingRegime::kThreads:
      client_spin = std::chrono::microseconds(0);
      break;
  }
  config.threads = threads;
  auto daemon = std::make_shared<RingDaemon>(config.segment.name, options, client_spin);
  auto child = Child::spawn(std::string(regime_variant(regime)) + " ring daemon",
                            [config, registry](const Child::Ready& ready) {
                              return serve_ring(config, registry, ready);
                            });
  if (!child.ok()) return child.status();
  daemon->child_ = std::move(child).value();
  if (Status s = daemon->child_->wait_ready(std::chrono::milliseconds(10000)); !s.ok()) return s;
  return daemon;
}

Result<std::unique_ptr<Mode>> ring_clients(std::shared_ptr<RingDaemon> daemon,
                                           const std::vector<Case>& cases, unsigned clients,
                                           bool shared) {
  if (clients == 0) return Status(Code::kInvalidArgument, "ring: 0 clients");
  auto mode = std::make_unique<RingMode>(std::move(daemon), cases, clients, shared);
  if (Status s = mode->ping(); !s.ok()) {
    return Status(s.code(), "ring: daemon does not answer a ping: " + s.message());
  }
  return std::unique_ptr<Mode>(std::move(mode));
}

}  // namespace estimator::bench
