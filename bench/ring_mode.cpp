// Ring mode: what a user of the estimator gets. A forked child runs the daemon core
// (service::Daemon, the code estimatord runs) on the embedded default models; this process
// calls it through the real client (client::Client::estimate), which encodes the request
// into a slot, publishes it, waits for the answer and verifies it.
//
// Why it is fair: nothing is skipped or precomputed. Each round trip encodes the request
// anew (new request id), the daemon verifies and decodes it, evaluates the model and builds
// the response, and the client verifies that response before the clock stops, exactly as
// the socket baseline does. Both sides spin (--spin-us, default 1 ms) for their peer, so
// back-to-back requests are served hot, as with a high-frequency exporter.
#include <signal.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <string>

#include "bench/child.h"
#include "bench/modes.h"
#include "clients/cpp/estimator_client.h"
#include "service/daemon.h"

namespace estimator::bench {
namespace {

class RingMode final : public Mode {
 public:
  RingMode(const std::vector<Case>& cases, std::string shm_name, const ModeOptions& options)
      : cases_(cases), shm_name_(std::move(shm_name)), timeout_(options.timeout) {}

  ~RingMode() override {
    client_.reset();
    if (child_ != nullptr) child_->stop();
    // The daemon removes its segment when it stops; this covers one that had to be killed.
    shm_unlink(("/" + shm_name_).c_str());
    unlink(("/dev/shm/" + shm_name_ + ".lock").c_str());
  }

  Status run(std::size_t index, std::size_t count, Clock::time_point deadline,
             Samples* out) override {
    const Case& c = cases_[index];
    const client::Request request{
        .selector = {.output_type = kOutputType, .source = kSource},
        .features = feature_names(),
        .matrix = c.matrix.data(),
        .rows = c.rows,
        .cols = c.cols,
    };
    for (std::size_t i = 0; i < count; ++i) {
      const auto t0 = Clock::now();
      Result<client::Reply> reply = client_->estimate(request, timeout_);
      const auto t1 = Clock::now();
      if (!reply.ok()) return Status(reply.status().code(), "ring: " + reply.status().message());
      if (Status s = check_reply(c, reply->rows(), reply->cols(), reply->powers().data(),
                                 reply->model().name);
          !s.ok()) {
        return Status(s.code(), "ring: " + s.message());
      }
      if (out != nullptr) out->add(elapsed_ns(t0, t1));
      if (t1 >= deadline) break;
      // The reply frees its slot here, outside the timed window but inside the wall time.
    }
    return Status::Ok();
  }

  std::unique_ptr<Child> child_;
  std::unique_ptr<client::Client> client_;

 private:
  const std::vector<Case>& cases_;
  std::string shm_name_;
  std::chrono::milliseconds timeout_;
};

// The child: the daemon core until SIGTERM (from the parent, or from the kernel when the
// parent dies), then a clean stop that removes the segment.
int serve_ring(const service::DaemonConfig& config,
               std::shared_ptr<const models::Registry> registry, const Child::Ready& ready) {
  spdlog::set_level(spdlog::level::warn);
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

}  // namespace

Result<std::unique_ptr<Mode>> start_ring(const std::vector<Case>& cases,
                                         std::shared_ptr<const models::Registry> registry,
                                         const ModeOptions& options) {
  service::DaemonConfig config;
  config.segment.name = "estimator-bench-" + std::to_string(getpid());
  config.spin_ns = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(options.spin).count());
  config.threads = 1;
  auto mode = std::make_unique<RingMode>(cases, config.segment.name, options);

  auto child = Child::spawn("ring daemon", [config, registry](const Child::Ready& ready) {
    return serve_ring(config, registry, ready);
  });
  if (!child.ok()) return child.status();
  mode->child_ = std::move(child).value();
  if (Status s = mode->child_->wait_ready(std::chrono::milliseconds(10000)); !s.ok()) return s;

  client::ClientOptions copts;
  copts.shm_name = config.segment.name;
  copts.spin = options.spin;
  copts.timeout = options.timeout;
  mode->client_ = std::make_unique<client::Client>(copts);
  if (Status s = mode->client_->ping(options.timeout); !s.ok()) {
    return Status(s.code(), "ring: daemon does not answer a ping: " + s.message());
  }
  return std::unique_ptr<Mode>(std::move(mode));
}

}  // namespace estimator::bench
