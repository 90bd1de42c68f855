// SPDX-License-Identifier: Apache-2.0
#include "service/metrics_server.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <spdlog/spdlog.h>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "common/errno_text.h"
#include "common/unique_fd.h"
#include "service/metrics.h"

namespace estimator::service {
namespace {

using Clock = std::chrono::steady_clock;

struct Connection {
  enum class State { kReading, kWriting, kDraining };
  UniqueFd fd;
  State state = State::kReading;
  std::string in;
  std::string out;
  std::size_t written = 0;
  Clock::time_point deadline;
  bool done = false;
};

std::string http_response(int status, std::string_view reason, std::string_view content_type,
                          std::string_view body, bool head_only,
                          std::string_view extra_headers = {}) {
  std::string r;
  r.reserve(160 + (head_only ? 0 : body.size()));
  r += "HTTP/1.1 ";
  r += std::to_string(status);
  r += ' ';
  r += reason;
  r += "\r\nContent-Type: ";
  r += content_type;
  r += "\r\nContent-Length: ";
  r += std::to_string(body.size());
  r += "\r\nConnection: close\r\n";
  r += extra_headers;
  r += "\r\n";
  if (!head_only) r += body;
  return r;
}

constexpr std::string_view kTextPlain = "text/plain; charset=utf-8";

// Where the request head ends (the blank line), or npos while incomplete. Bare LF line
// ends are accepted, as HTTP/1.1 recommends for robustness.
std::size_t head_end(std::string_view in) {
  const std::size_t crlf = in.find("\r\n\r\n");
  const std::size_t lf = in.find("\n\n");
  return std::min(crlf, lf);
}

std::string answer(std::string_view head, const MetricsServer::Renderer& render,
                   const MetricsServer::HealthCheck& health) {
  const std::string_view line = head.substr(0, head.find('\n'));
  const std::string_view request_line =
      (!line.empty() && line.back() == '\r') ? line.substr(0, line.size() - 1) : line;
  const std::size_t sp1 = request_line.find(' ');
  const std::size_t sp2 = sp1 == std::string_view::npos ? sp1 : request_line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || request_line.find(' ', sp2 + 1) != std::string_view::npos) {
    return http_response(400, "Bad Request", kTextPlain, "malformed request line\n", false);
  }
  const std::string_view method = request_line.substr(0, sp1);
  const std::string_view target = request_line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = request_line.substr(sp2 + 1);
  if (!version.starts_with("HTTP/1.")) {
    return http_response(505, "HTTP Version Not Supported", kTextPlain, "HTTP/1.x only\n", false);
  }
  const bool head_only = method == "HEAD";
  if (method != "GET" && !head_only) {
    return http_response(405, "Method Not Allowed", kTextPlain, "only GET and HEAD\n", false,
                         "Allow: GET, HEAD\r\n");
  }
  const std::string_view path = target.substr(0, target.find('?'));
  if (path == "/metrics") {
    return http_response(200, "OK", Metrics::kContentType, render(), head_only);
  }
  // Liveness: this thread answers, so the process is not wedged.
  if (path == "/livez") return http_response(200, "OK", kTextPlain, "ok\n", head_only);
  // Readiness, under both names Kubernetes users expect.
  if (path == "/healthz" || path == "/readyz") {
    const std::string why = health ? health() : std::string();
    if (why.empty()) return http_response(200, "OK", kTextPlain, "ok\n", head_only);
    return http_response(503, "Service Unavailable", kTextPlain, "not ready: " + why + "\n",
                         head_only);
  }
  return http_response(404, "Not Found", kTextPlain,
                       "not found; metrics are at /metrics, health at /healthz\n", head_only);
}

std::string format_address(const sockaddr_storage& ss, std::uint16_t& port) {
  char host[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    port = ntohs(a->sin6_port);
    return "[" + std::string(host) + "]:" + std::to_string(port);
  }
  const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
  inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
  port = ntohs(a->sin_port);
  return std::string(host) + ":" + std::to_string(port);
}

}  // namespace

Result<std::pair<std::string, std::uint16_t>> split_host_port(std::string_view address) {
  const std::size_t colon = address.rfind(':');
  if (colon == std::string_view::npos) {
    return Status(Code::kInvalidArgument,
                  "metrics address '" + std::string(address) + "' is not HOST:PORT");
  }
  std::string_view host = address.substr(0, colon);
  const std::string_view port_text = address.substr(colon + 1);
  if (host.starts_with('[')) {
    if (!host.ends_with(']')) {
      return Status(Code::kInvalidArgument,
                    "metrics address '" + std::string(address) + "': unbalanced [ ] around the host");
    }
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string_view::npos) {
    return Status(Code::kInvalidArgument, "metrics address '" + std::string(address) +
                                              "': write an IPv6 host in brackets, [::1]:9102");
  }
  unsigned port = 0;
  const auto r = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || r.ec != std::errc() || r.ptr != port_text.data() + port_text.size() ||
      port > 65535) {
    return Status(Code::kInvalidArgument, "metrics address '" + std::string(address) +
                                              "': port '" + std::string(port_text) +
                                              "' is not a number from 0 to 65535");
  }
  if (host == "*") host = {};
  return std::pair{std::string(host), static_cast<std::uint16_t>(port)};
}

struct MetricsServer::Impl {
  MetricsServerOptions options;
  Renderer render;
  HealthCheck health;
  UniqueFd listener;
  UniqueFd wake;
  std::thread thread;

  void run();
  void accept_all(std::vector<Connection>& conns) const;
  void on_readable(Connection& c) const;
  void on_writable(Connection& c) const;
};

// The oldest connection still waiting for its request head, or nullptr. `conns` is in
// accept order.
static Connection* oldest_reading(std::vector<Connection>& conns) {
  for (Connection& c : conns) {
    if (c.state == Connection::State::kReading && !c.done) return &c;
  }
  return nullptr;
}

// At the connection cap (or out of descriptors) the oldest connection that has not sent
// its request yet makes way: a scraper sends at once, so idle connections cannot hold
// every place until their deadline while scrapes wait in the backlog.
void MetricsServer::Impl::accept_all(std::vector<Connection>& conns) const {
  for (;;) {
    std::size_t open = 0;
    for (const Connection& c : conns) open += c.done ? 0 : 1;
    if (open >= options.max_connections) {
      Connection* idle = oldest_reading(conns);
      if (idle == nullptr) return;  // every place is answering: the rest wait in the backlog
      idle->fd.reset();
      idle->done = true;
    }
    const int fd = ::accept4(listener.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE) {
        if (Connection* idle = oldest_reading(conns); idle != nullptr) {
          idle->fd.reset();
          idle->done = true;
          continue;
        }
      }
      // EAGAIN: nothing more; ECONNABORTED and friends: that peer is gone, not us.
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ECONNABORTED && errno != EINTR) {
        spdlog::warn("metrics: accept: {}", errno_text(errno));
      }
      return;
    }
    Connection c;
    c.fd = UniqueFd(fd);
    c.deadline = Clock::now() + options.deadline;
    conns.push_back(std::move(c));
  }
}

void MetricsServer::Impl::on_readable(Connection& c) const {
  char buf[4096];
  const ssize_t n = ::recv(c.fd.get(), buf, sizeof buf, 0);
  if (n < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) c.done = true;
    return;
  }
  if (n == 0) {  // the peer closed: nothing to answer, or nothing more to drain
    c.done = true;
    return;
  }
  if (c.state != Connection::State::kReading) return;  // the answer is decided
  c.in.append(buf, static_cast<std::size_t>(n));
  const std::size_t end = head_end(c.in);
  if (end == std::string::npos) {
    if (c.in.size() > options.max_request_bytes) {
      c.out = http_response(431, "Request Header Fields Too Large", kTextPlain,
                            "request head exceeds " + std::to_string(options.max_request_bytes) +
                                " bytes\n",
                            false);
      c.state = Connection::State::kWriting;
    }
    return;
  }
  try {
    c.out = answer(std::string_view(c.in).substr(0, end), render, health);
  } catch (const std::exception& e) {
    // A renderer that throws (out of memory, a failing external reader) costs one
    // scrape, not the daemon.
    spdlog::warn("metrics: rendering failed: {}", e.what());
    c.out = http_response(500, "Internal Server Error", kTextPlain, "rendering failed\n", false);
  }
  c.state = Connection::State::kWriting;
}

void MetricsServer::Impl::on_writable(Connection& c) const {
  while (c.written < c.out.size()) {
    const ssize_t n =
        ::send(c.fd.get(), c.out.data() + c.written, c.out.size() - c.written, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) c.done = true;
      return;
    }
    c.written += static_cast<std::size_t>(n);
  }
  // Half-close, then read until the peer closes: closing with unread input would reset
  // the connection and could destroy the response before the client reads it.
  ::shutdown(c.fd.get(), SHUT_WR);
  c.state = Connection::State::kDraining;
  c.out.clear();
  c.in.clear();
}

void MetricsServer::Impl::run() {
  std::vector<Connection> conns;
  std::vector<pollfd> fds;
  for (;;) {
    fds.clear();
    fds.push_back({wake.get(), POLLIN, 0});
    // Not polled only while every place is taken by a connection being answered.
    const bool accepting = conns.size() < options.max_connections ||
                           oldest_reading(conns) != nullptr;
    fds.push_back({accepting ? listener.get() : -1, POLLIN, 0});
    auto next_deadline = Clock::time_point::max();
    for (const Connection& c : conns) {
      fds.push_back({c.fd.get(),
                     static_cast<short>(c.state == Connection::State::kWriting ? POLLOUT : POLLIN), 0});
      next_deadline = std::min(next_deadline, c.deadline);
    }
    int timeout_ms = -1;
    if (next_deadline != Clock::time_point::max()) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(next_deadline - Clock::now());
      timeout_ms = static_cast<int>(std::max<std::int64_t>(0, left.count()));
    }
    if (::poll(fds.data(), fds.size(), timeout_ms) < 0 && errno != EINTR) {
      spdlog::error("metrics: poll: {}; the metrics endpoint stops", errno_text(errno));
      return;
    }
    if (fds[0].revents != 0) return;  // stop requested

    const auto now = Clock::now();
    for (std::size_t i = 0; i < conns.size(); ++i) {
      Connection& c = conns[i];
      const short ev = fds[i + 2].revents;
      if ((ev & (POLLERR | POLLNVAL)) != 0) {
        c.done = true;
      } else if ((ev & POLLOUT) != 0) {
        on_writable(c);
      } else if ((ev & (POLLIN | POLLHUP)) != 0) {
        on_readable(c);
        if (c.state == Connection::State::kWriting) on_writable(c);
      }
      if (!c.done && now >= c.deadline) {
        if (c.state == Connection::State::kReading) {
          spdlog::debug("metrics: connection closed after {} ms without a complete request",
                        options.deadline.count());
        }
        c.done = true;
      }
    }
    std::erase_if(conns, [](const Connection& c) { return c.done; });
    if (accepting && (fds[1].revents & POLLIN) != 0) {
      accept_all(conns);
      std::erase_if(conns, [](const Connection& c) { return c.done; });  // the evicted
    }
  }
}

MetricsServer::MetricsServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

MetricsServer::~MetricsServer() {
  if (impl_ && impl_->thread.joinable()) {
    const std::uint64_t one = 1;
    // An eventfd write of 1 cannot block or fail short of a counter overflow.
    [[maybe_unused]] const ssize_t n = ::write(impl_->wake.get(), &one, sizeof one);
    impl_->thread.join();
  }
}

Result<std::unique_ptr<MetricsServer>> MetricsServer::start(const MetricsServerOptions& options,
                                                            Renderer render,
                                                            HealthCheck health) {
  if (!render) return Status(Code::kInvalidArgument, "metrics server needs a renderer");
  if (options.max_connections == 0 || options.max_request_bytes == 0 ||
      options.deadline.count() <= 0) {
    return Status(Code::kInvalidArgument,
                  "metrics server limits (connections, request bytes, deadline) must be positive");
  }
  auto hp = split_host_port(options.address);
  if (!hp.ok()) return hp.status();
  const auto& [host, port] = hp.value();

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string port_text = std::to_string(port);
  if (const int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), port_text.c_str(),
                                   &hints, &found);
      rc != 0) {
    return Status(Code::kInvalidArgument, "metrics address '" + options.address +
                                              "': cannot resolve host: " + gai_strerror(rc));
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> list(found, &::freeaddrinfo);

  auto impl = std::make_unique<Impl>();
  std::string last_error = "no address";
  int last_errno = 0;
  for (const addrinfo* ai = list.get(); ai != nullptr; ai = ai->ai_next) {
    UniqueFd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
    if (fd.get() < 0) {
      last_errno = errno;
      last_error = "socket: " + errno_text(last_errno);
      continue;
    }
    // A restarted daemon must rebind while old connections sit in TIME_WAIT.
    const int on = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0) {
      last_errno = errno;
      last_error = "bind: " + errno_text(last_errno);
      continue;
    }
    if (::listen(fd.get(), 64) != 0) {
      last_errno = errno;
      last_error = "listen: " + errno_text(last_errno);
      continue;
    }
    impl->listener = std::move(fd);
    break;
  }
  if (impl->listener.get() < 0) {
    return Status(last_errno == EACCES ? Code::kPermissionDenied : Code::kUnavailable,
                  "metrics address '" + options.address + "': " + last_error);
  }
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(impl->listener.get(), reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    return Status(Code::kInternal, "metrics: getsockname: " + errno_text(errno));
  }
  impl->wake = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (impl->wake.get() < 0) return Status(Code::kResourceExhausted, "metrics: eventfd: " + errno_text(errno));
  impl->options = options;
  impl->render = std::move(render);
  impl->health = std::move(health);

  std::unique_ptr<MetricsServer> server(new MetricsServer(std::move(impl)));
  server->bound_ = format_address(ss, server->port_);
  Impl* p = server->impl_.get();
  try {
    server->impl_->thread = std::thread([p] { p->run(); });
  } catch (const std::system_error& e) {
    return Status(Code::kResourceExhausted, std::string("metrics: cannot start a thread: ") + e.what());
  }
  return server;
}

}  // namespace estimator::service
