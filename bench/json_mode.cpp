// SPDX-License-Identifier: Apache-2.0
// JSON mode: the protocol the ring replaces, as Kepler v0.9 speaks it. A forked child runs
// the daemon's Kepler-compatible endpoint (service::KeplerEndpoint: its epoll thread, JSON
// reader and writer, and the same RequestHandler behind them) on the benchmark's models;
// this process is a client that does what Kepler's Go client does for every request:
// encode the v0.9 document ({"metrics", "values", "output_type", "source"}), connect to
// the unix socket, write the document, read until the reply document ends, close, and
// decode the reply ({"powers": {component: [...]}, "msg", "core_ratio"}) into floats.
//
// Two variants, so that the endpoint's cost and Kepler's own are told apart:
// - endpoint: the clock runs from connect to the reply's last byte; the request text is
//   encoded before it starts and the reply decoded after it stops. This is what the
//   endpoint and the protocol cost (connection, kernel copies, the server's parse, model
//   and write), the figure the 3x target is about;
// - kepler: encoding and decoding are inside the window too, as Kepler pays them. Their
//   cost is the client's formatting and parsing of every number (bench/stages.cpp times
//   them), which no server can change.
// In both, the reply is compared with the local handler's answer after the clock stops.
// Send and receive are bounded by the timeout (two setsockopt calls per connection, which
// Kepler does not make; they cost well under a microsecond).
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <cstring>
#include <string>
#include <string_view>

#include "bench/child.h"
#include "bench/kepler_codec.h"
#include "bench/modes.h"
#include "common/errno_text.h"
#include "service/kepler_endpoint.h"
#include "service/kepler_json.h"

namespace estimator::bench {
namespace {

constexpr std::size_t kMaxReplyBytes = 16U << 20U;  // a longer reply fails the run

class JsonMode final : public Mode {
 public:
  JsonMode(const std::vector<Case>& cases, std::string path, const ModeOptions& options,
           bool codec_timed)
      : cases_(cases), path_(std::move(path)), timeout_(options.timeout),
        codec_timed_(codec_timed) {}

  ~JsonMode() override {
    if (child_ != nullptr) child_->stop();
    unlink(path_.c_str());  // the endpoint removes it; this covers one that had to be killed
  }

  Status run(std::size_t index, std::size_t count, Clock::time_point deadline,
             Samples* out) override {
    const Case& c = cases_[index];
    if (!codec_timed_) encode_request(c, request_);
    for (std::size_t i = 0; i < count; ++i) {
      const auto t0 = Clock::now();
      if (codec_timed_) encode_request(c, request_);
      if (Status s = round_trip(); !s.ok()) return s;
      if (codec_timed_) {
        if (Status s = read_reply(reply_, decoded_); !s.ok()) return s;
      }
      const auto t1 = Clock::now();
      if (!codec_timed_) {
        if (Status s = read_reply(reply_, decoded_); !s.ok()) return s;
      }
      if (Status s = check_json_reply(c, decoded_); !s.ok()) return s;
      if (out != nullptr) out->add(elapsed_ns(t0, t1));
      if (t1 >= deadline) break;
    }
    return Status::Ok();
  }

  std::unique_ptr<Child> child_;

 private:
  // connect, write, read until the document ends, close: one request per connection.
  Status round_trip() {
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return Status(Code::kResourceExhausted, "json: socket: " + errno_text(errno));
    Status s = exchange(fd);
    close(fd);
    return s;
  }

  Status exchange(int fd) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
    if (connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
      return Status(Code::kUnavailable, "json: connect " + path_ + ": " + errno_text(errno));
    }
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(timeout_.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((timeout_.count() % 1000) * 1000);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    for (std::size_t done = 0; done < request_.size();) {
      const ssize_t n = send(fd, request_.data() + done, request_.size() - done, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        return Status(errno == EAGAIN ? Code::kDeadlineExceeded : Code::kUnavailable,
                      "json: send: " + errno_text(errno));
      }
      done += static_cast<std::size_t>(n);
    }
    reply_.clear();
    service::kepler::DocumentEnd end;
    char buf[64 * 1024];
    for (;;) {
      const ssize_t n = recv(fd, buf, sizeof buf, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        return Status(errno == EAGAIN ? Code::kDeadlineExceeded : Code::kUnavailable,
                      "json: recv: " + errno_text(errno));
      }
      if (n == 0) return Status(Code::kUnavailable, "json: connection closed mid-reply");
      const std::string_view got(buf, static_cast<std::size_t>(n));
      if (reply_.size() + got.size() > kMaxReplyBytes) {
        return Status(Code::kTooLarge, "json: reply longer than " +
                                           std::to_string(kMaxReplyBytes) + " bytes");
      }
      reply_.append(got);
      if (end.feed(got) != 0) return Status::Ok();
    }
  }

  const std::vector<Case>& cases_;
  std::string path_;
  std::chrono::milliseconds timeout_;
  bool codec_timed_;
  std::string request_;
  std::string reply_;
  JsonReply decoded_;
};

// The child: the endpoint until SIGTERM, then a clean stop that removes the socket file.
int serve_json(const std::string& path, std::shared_ptr<const models::Registry> registry,
               std::chrono::milliseconds timeout, const Child::Ready& ready) {
  spdlog::set_level(spdlog::level::warn);
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);  // before the endpoint's thread inherits it
  service::KeplerEndpointConfig config;
  config.path = path;
  config.mode = 0600;
  config.deadline = timeout;
  config.max_request_bytes = 64U << 20U;
  config.client_reads = {.v09 = 0, .form2022 = 0};  // the bench's client reads whole replies
  auto holder = std::make_shared<service::RegistryHolder>(std::move(registry));
  auto endpoint = service::KeplerEndpoint::start(config, holder);
  if (!endpoint.ok()) {
    ready(endpoint.status());
    return 1;
  }
  ready(Status::Ok());
  int sig = 0;
  sigwait(&stop, &sig);
  endpoint.value()->stop();
  return 0;
}

}  // namespace

Result<std::unique_ptr<Mode>> start_json(const std::vector<Case>& cases,
                                         std::shared_ptr<const models::Registry> registry,
                                         const ModeOptions& options, bool codec_timed) {
  const std::string path = "/tmp/estimator-bench-" + std::to_string(getpid()) + "-json" +
                           (codec_timed ? "-kepler" : "") + ".sock";
  if (path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return Status(Code::kInvalidArgument, "json: socket path too long: " + path);
  }
  auto mode = std::make_unique<JsonMode>(cases, path, options, codec_timed);
  const std::chrono::milliseconds timeout = options.timeout;
  auto child = Child::spawn("json endpoint", [path, registry, timeout](const Child::Ready& ready) {
    return serve_json(path, registry, timeout, ready);
  });
  if (!child.ok()) return child.status();
  mode->child_ = std::move(child).value();
  if (Status s = mode->child_->wait_ready(std::chrono::milliseconds(10000)); !s.ok()) return s;
  return std::unique_ptr<Mode>(std::move(mode));
}

}  // namespace estimator::bench
