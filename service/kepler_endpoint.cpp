// SPDX-License-Identifier: Apache-2.0
#include "service/kepler_endpoint.h"

#include <errno.h>
#include <malloc.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <list>
#include <new>
#include <spdlog/spdlog.h>
#include <string_view>
#include <vector>

#include "common/errno_text.h"
#include "common/unique_fd.h"
#include "service/kepler_adapter.h"
#include "service/metrics.h"

namespace estimator::service {
namespace {

using Clock = std::chrono::steady_clock;

// Read size per call; also the step by which a connection's buffer grows.
constexpr std::size_t kChunk = 64 << 10;
// How long accepting pauses when the process is out of file descriptors (level-triggered
// epoll would otherwise spin on the pending connection).
constexpr auto kAcceptPause = std::chrono::milliseconds(100);
// Request buffers freed since the heap was last trimmed, past which it is trimmed again:
// glibc keeps freed blocks of this size (its mmap threshold rises after the first such
// free), so without a trim a burst of large requests would stay in the daemon's RSS.
constexpr std::size_t kTrimAfterBytes = 8 << 20;

bool fill_address(const std::string& path, sockaddr_un& addr) {
  std::memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path) return false;
  std::memcpy(addr.sun_path, path.data(), path.size());
  return true;
}

struct Connection {
  UniqueFd fd;
  Clock::time_point deadline;
  std::string in;
  kepler::DocumentEnd end;
  std::string out;
  std::size_t out_pos = 0;
  bool writing = false;
  bool watched = false;  // registered with epoll (only once it had to wait)
  bool closed = false;   // in Loop::closed, freed after the current batch of events
  std::list<Connection>::iterator self;
};

}  // namespace

struct KeplerEndpoint::Loop {
  Loop(const KeplerEndpointConfig& c, const RegistryHolder& registry, KeplerEndpointStats& s)
      : config(c), stats(s), adapter(registry, c.json, c.metrics, c.client_reads), chunk(kChunk) {}

  void run();
  void accept_one();
  bool watch(Connection& c, std::uint32_t events);
  void on_event(Connection& c, std::uint32_t events);
  void read_from(Connection& c);
  void answer(Connection& c, std::string_view document);
  void reply_error(Connection& c, Code code, std::string_view message);
  void note_error(Code code, std::string_view message);
  void write_to(Connection& c);
  void close(Connection& c);
  void release_input(Connection& c);
  Connection* oldest_unfinished();
  void evict(Connection& c, std::string_view why);
  bool make_room(Connection& c, std::size_t growth);
  void expire(Clock::time_point now);

  const KeplerEndpointConfig& config;
  KeplerEndpointStats& stats;
  KeplerAdapter adapter;
  std::vector<char> chunk;
  std::string busy_reply;
  UniqueFd listen_fd;
  UniqueFd epoll_fd;
  UniqueFd wake_fd;
  dev_t socket_dev = 0;
  ino_t socket_ino = 0;
  // Accept order is deadline order (every connection gets the same time), so the front
  // is always the next to expire.
  std::list<Connection> connections;
  // Closed connections wait here until the batch of events is handled: an eviction closes
  // connections other than the one being served, whose events may still be in the batch.
  std::list<Connection> closed;
  bool accept_paused = false;
  Clock::time_point accept_resume;
  Clock::time_point next_error_log;  // error replies are logged once a second at most
  std::uint64_t errors_not_logged = 0;
  std::size_t buffered = 0;  // capacity of every reading connection's `in`
  std::size_t freed_since_trim = 0;
};

void KeplerEndpoint::Loop::run() {
  epoll_event events[64];
  for (;;) {
    int timeout = -1;
    const auto now = Clock::now();
    if (!connections.empty()) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(
          connections.front().deadline - now);
      timeout = static_cast<int>(std::clamp<long long>(left.count(), 0, 60'000));
    }
    if (accept_paused) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(accept_resume - now);
      const int t = static_cast<int>(std::clamp<long long>(left.count(), 0, 60'000));
      timeout = timeout < 0 ? t : std::min(timeout, t);
    }
    const int n = epoll_wait(epoll_fd.get(), events, 64, timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::error("kepler socket: epoll_wait failed ({}); the endpoint stops serving",
                    errno_text(errno));
      return;
    }
    for (int i = 0; i < n; ++i) {
      void* tag = events[i].data.ptr;
      if (tag == &wake_fd) return;
      if (tag == &listen_fd) {
        accept_one();
      } else {
        auto& c = *static_cast<Connection*>(tag);
        if (!c.closed) on_event(c, events[i].events);
      }
    }
    closed.clear();
    const auto after = Clock::now();
    expire(after);
    if (freed_since_trim >= kTrimAfterBytes) {
      malloc_trim(0);
      freed_since_trim = 0;
    }
    if (accept_paused && after >= accept_resume) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.ptr = &listen_fd;
      epoll_ctl(epoll_fd.get(), EPOLL_CTL_MOD, listen_fd.get(), &ev);
      accept_paused = false;
    }
  }
}

// One connection per wake: level-triggered epoll reports the listener again at once while
// more wait, and a loop until EAGAIN would cost a failed accept4 per connection.
void KeplerEndpoint::Loop::accept_one() {
  UniqueFd fd;
  for (;;) {
    fd = UniqueFd(accept4(listen_fd.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (fd.valid()) break;
    const int err = errno;
    if (err == EAGAIN || err == EWOULDBLOCK) return;
    if (err == EINTR || err == ECONNABORTED) continue;
    if (err == EMFILE || err == ENFILE) {
      // Out of descriptors: an idle connection's is worth less than a new client's.
      if (Connection* idle = oldest_unfinished(); idle != nullptr) {
        evict(*idle, "the server is out of file descriptors");
        continue;
      }
    }
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
      spdlog::warn("kepler socket: cannot accept ({}); pausing new connections for {} ms",
                   errno_text(err), kAcceptPause.count());
      epoll_event ev{};
      ev.events = 0;
      ev.data.ptr = &listen_fd;
      epoll_ctl(epoll_fd.get(), EPOLL_CTL_MOD, listen_fd.get(), &ev);
      accept_paused = true;
      accept_resume = Clock::now() + kAcceptPause;
      return;
    }
    spdlog::error("kepler socket: accept failed: {}", errno_text(err));
    return;
  }
  stats.connections.fetch_add(1, std::memory_order_relaxed);
  if (connections.size() >= config.max_connections) {
    // The newcomer most likely writes its request at once; the oldest unfinished one has
    // had the longest to do so. With none unfinished (every connection drains a reply,
    // soon done), the newcomer is told to retry.
    Connection* idle = oldest_unfinished();
    if (idle == nullptr) {
      kepler::write_error(
          "too many connections (" + std::to_string(connections.size()) + " open); try again",
          busy_reply);
      if (config.metrics != nullptr) config.metrics->count_kepler_error(Code::kResourceExhausted);
      (void)::send(fd.get(), busy_reply.data(), busy_reply.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      return;  // fd closes here
    }
    evict(*idle, "too many connections (--socket-max-connections)");
  }
  Connection& c = connections.emplace_back();
  c.self = std::prev(connections.end());
  c.fd = std::move(fd);
  c.deadline = Clock::now() + config.deadline;
  // A client writes its request right after connecting, so it has usually arrived by
  // now: read at once, and register with epoll only if the request or the reply has to
  // wait (most connections then cost no epoll_ctl at all).
  read_from(c);
}

// Registers `c` for `events` (or changes them); closes it when epoll refuses.
bool KeplerEndpoint::Loop::watch(Connection& c, std::uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = &c;
  if (epoll_ctl(epoll_fd.get(), c.watched ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c.fd.get(), &ev) != 0) {
    spdlog::error("kepler socket: cannot watch a connection: {}", errno_text(errno));
    close(c);
    return false;
  }
  c.watched = true;
  return true;
}

void KeplerEndpoint::Loop::on_event(Connection& c, std::uint32_t events) {
  if (c.writing) {
    if ((events & (EPOLLERR | EPOLLHUP)) != 0) {
      close(c);  // the peer is gone; nobody reads the rest of the reply
    } else if ((events & EPOLLOUT) != 0) {
      write_to(c);
    }
    return;
  }
  read_from(c);
}

void KeplerEndpoint::Loop::read_from(Connection& c) {
  for (;;) {
    // One byte over the limit is enough to know the request is too large.
    const std::size_t room = std::min(chunk.size(), config.max_request_bytes + 1 - c.in.size());
    const ssize_t n = ::read(c.fd.get(), chunk.data(), room);
    if (n > 0) {
      const std::size_t before = c.in.size();
      if (const std::size_t need = before + static_cast<std::size_t>(n); need > c.in.capacity()) {
        // Grown here, in steps the cap has approved, rather than by append's doubling.
        const std::size_t old_capacity = c.in.capacity();
        const std::size_t target =
            std::min(std::max(need, 2 * old_capacity), config.max_request_bytes + 1);
        if (!make_room(c, target - old_capacity)) return;
        try {
          c.in.reserve(target);
        } catch (const std::bad_alloc&) {
          reply_error(c, Code::kResourceExhausted, "out of memory for this request; try again");
          return;
        }
        buffered += c.in.capacity() - old_capacity;
      }
      c.in.append(chunk.data(), static_cast<std::size_t>(n));
      if (const std::size_t end = c.end.feed({chunk.data(), static_cast<std::size_t>(n)});
          end != 0) {
        answer(c, std::string_view(c.in).substr(0, before + end));
        return;
      }
      if (c.in.size() > config.max_request_bytes) {
        stats.oversized.fetch_add(1, std::memory_order_relaxed);
        reply_error(c, Code::kTooLarge,
                    "request exceeds " + std::to_string(config.max_request_bytes) +
                        " bytes (estimatord --socket-max-bytes)");
        return;
      }
      continue;
    }
    if (n == 0) {
      // The peer half-closed: what it sent is all there is. Nothing at all is a probe
      // (a check that the socket accepts), not a request: closed without a reply.
      if (c.in.empty()) {
        close(c);
      } else {
        answer(c, c.in);
      }
      return;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!c.watched) watch(c, EPOLLIN);
      return;
    }
    spdlog::debug("kepler socket: read failed: {}", errno_text(errno));
    close(c);
    return;
  }
}

void KeplerEndpoint::Loop::answer(Connection& c, std::string_view document) {
  const std::string_view reply = adapter.answer(document);
  stats.requests.fetch_add(1, std::memory_order_relaxed);
  if (adapter.last_code() != Code::kOk) note_error(adapter.last_code(), adapter.last_error());
  c.out.assign(reply);
  release_input(c);  // a large request's buffer is not kept while the reply drains
  c.writing = true;
  write_to(c);
}

// Counts an error reply and logs it: an error reply is the only sign the client gives
// (Kepler logs only at a verbose level), but a client repeating a bad request must not
// flood the log, so one line a second at most, with the count of those not logged.
void KeplerEndpoint::Loop::note_error(Code code, std::string_view message) {
  stats.errors.fetch_add(1, std::memory_order_relaxed);
  if (config.metrics != nullptr) config.metrics->count_kepler_error(code);
  const auto now = Clock::now();
  if (now < next_error_log) {
    ++errors_not_logged;
    return;
  }
  next_error_log = now + std::chrono::seconds(1);
  if (errors_not_logged == 0) {
    spdlog::warn("kepler socket: error reply ({}): {}", code_name(code), message);
  } else {
    spdlog::warn("kepler socket: error reply ({}): {} ({} more error replies not logged)",
                 code_name(code), message, errors_not_logged);
    errors_not_logged = 0;
  }
}

void KeplerEndpoint::Loop::reply_error(Connection& c, Code code, std::string_view message) {
  stats.requests.fetch_add(1, std::memory_order_relaxed);
  note_error(code, message);
  kepler::write_error(message, c.out);
  release_input(c);
  c.writing = true;
  write_to(c);
}

void KeplerEndpoint::Loop::write_to(Connection& c) {
  while (c.out_pos < c.out.size()) {
    const ssize_t n = ::send(c.fd.get(), c.out.data() + c.out_pos, c.out.size() - c.out_pos,
                             MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      c.out_pos += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      watch(c, EPOLLOUT);
      return;
    }
    spdlog::debug("kepler socket: the client left before reading its reply ({})",
                  errno_text(errno));
    break;
  }
  close(c);
}

void KeplerEndpoint::Loop::close(Connection& c) {
  // Removed before the close: a forked child (isolated model loading) may still hold the
  // descriptor, and epoll would go on reporting it for this freed Connection.
  if (c.watched) epoll_ctl(epoll_fd.get(), EPOLL_CTL_DEL, c.fd.get(), nullptr);
  release_input(c);
  c.fd.reset();
  c.closed = true;
  closed.splice(closed.end(), connections, c.self);
}

void KeplerEndpoint::Loop::release_input(Connection& c) {
  const std::size_t capacity = c.in.capacity();
  // A swap, not `c.in = std::string()`: libstdc++'s move assignment from a short string
  // keeps the heap block, and the count below would never come down.
  std::string().swap(c.in);
  buffered -= capacity - c.in.capacity();
  freed_since_trim += capacity;
}

// The front of the list is the oldest; connections writing their reply are skipped (they
// are answered and leave by themselves).
Connection* KeplerEndpoint::Loop::oldest_unfinished() {
  for (Connection& c : connections) {
    if (!c.writing) return &c;
  }
  return nullptr;
}

// Closes an unfinished connection, telling its client why in one non-blocking attempt.
void KeplerEndpoint::Loop::evict(Connection& c, std::string_view why) {
  const auto n = stats.evicted.fetch_add(1, std::memory_order_relaxed);
  if (n % 1000 == 0) {
    spdlog::warn("kepler socket: closing an unfinished request ({} bytes received): {} "
                 "({} closed so far)",
                 c.in.size(), why, n + 1);
  }
  kepler::write_error(std::string(why) + "; try again", busy_reply);
  if (config.metrics != nullptr) config.metrics->count_kepler_error(Code::kResourceExhausted);
  (void)::send(c.fd.get(), busy_reply.data(), busy_reply.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  close(c);
}

// Makes room under max_buffered_bytes for `c` to grow by `growth` bytes, evicting the
// largest unfinished requests first (honest requests are small and finish fast; the ones
// holding the most are the cheapest to lose). False when `c` itself was evicted.
bool KeplerEndpoint::Loop::make_room(Connection& c, std::size_t growth) {
  while (buffered + growth > config.max_buffered_bytes) {
    Connection* largest = &c;
    for (Connection& other : connections) {
      if (!other.writing && other.in.capacity() > largest->in.capacity()) largest = &other;
    }
    const bool self = largest == &c;
    evict(*largest, "the server holds too many unfinished requests (--socket-max-buffered-bytes)");
    if (self) return false;
  }
  return true;
}

void KeplerEndpoint::Loop::expire(Clock::time_point now) {
  while (!connections.empty() && connections.front().deadline <= now) {
    Connection& c = connections.front();
    stats.timeouts.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("kepler socket: connection closed at its {} ms deadline ({}; {} bytes {})",
                 config.deadline.count(),
                 c.writing ? "the client did not read its reply"
                           : "no complete request",
                 c.writing ? c.out.size() - c.out_pos : c.in.size(),
                 c.writing ? "unsent" : "received");
    if (!c.writing) {
      // One attempt, never blocking, to tell a client that is still listening why.
      std::string reply;
      kepler::write_error(
          "no complete JSON request within " + std::to_string(config.deadline.count()) + " ms",
          reply);
      if (config.metrics != nullptr) config.metrics->count_kepler_error(Code::kDeadlineExceeded);
      (void)::send(c.fd.get(), reply.data(), reply.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    close(c);
  }
}

// ---- KeplerEndpoint --------------------------------------------------------------------

KeplerEndpoint::KeplerEndpoint(KeplerEndpointConfig config,
                               std::shared_ptr<RegistryHolder> registry)
    : config_(std::move(config)), registry_(std::move(registry)) {}

Result<std::unique_ptr<KeplerEndpoint>> KeplerEndpoint::start(
    const KeplerEndpointConfig& config, std::shared_ptr<RegistryHolder> registry) {
  sockaddr_un addr{};
  if (!fill_address(config.path, addr)) {
    return Status(Code::kInvalidArgument,
                  "socket path '" + config.path + "' is empty or longer than " +
                      std::to_string(sizeof addr.sun_path - 1) + " bytes");
  }
  if (config.max_request_bytes == 0 || config.max_connections == 0 ||
      config.deadline.count() <= 0 || config.max_buffered_bytes < config.max_request_bytes) {
    return Status(Code::kInvalidArgument,
                  "socket limits must be positive (max bytes, max connections, deadline) and "
                  "the buffered-bytes cap at least the largest request");
  }

  // An existing file: a live server keeps it, a stale socket is replaced, anything else
  // is the user's and stays.
  struct stat st {};
  if (lstat(config.path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return Status(Code::kInvalidArgument,
                    config.path + " exists and is not a socket; not replacing it");
    }
    UniqueFd probe(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!probe.valid()) {
      return Status(Code::kResourceExhausted, "socket(): " + errno_text(errno));
    }
    if (connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) {
      return Status(Code::kResourceExhausted,
                    "another server answers on " + config.path +
                        "; stop it or choose another path");
    }
    const int err = errno;
    if (err != ECONNREFUSED) {
      return Status(err == EACCES ? Code::kPermissionDenied : Code::kInternal,
                    "cannot tell whether " + config.path + " is in use: " + errno_text(err));
    }
    if (unlink(config.path.c_str()) != 0 && errno != ENOENT) {
      return Status(errno == EACCES || errno == EPERM ? Code::kPermissionDenied : Code::kInternal,
                    "cannot remove the stale socket " + config.path + ": " + errno_text(errno));
    }
    spdlog::info("kepler socket: replaced the stale socket file {}", config.path);
  }

  auto ep = std::unique_ptr<KeplerEndpoint>(new KeplerEndpoint(config, std::move(registry)));
  ep->stopped_ = true;  // nothing for the destructor to stop until the thread runs
  ep->loop_ = std::make_unique<Loop>(ep->config_, *ep->registry_, ep->stats_);
  Loop& loop = *ep->loop_;

  loop.listen_fd = UniqueFd(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!loop.listen_fd.valid()) {
    return Status(Code::kResourceExhausted, "socket(): " + errno_text(errno));
  }
  if (bind(loop.listen_fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    const int err = errno;
    return Status(err == EACCES ? Code::kPermissionDenied : Code::kResourceExhausted,
                  "cannot bind " + config.path + ": " + errno_text(err));
  }
  // From here the file is ours: remove it on any failure.
  auto undo = [&](Status s) {
    unlink(config.path.c_str());
    return s;
  };
  // chmod before listen(): until listen() no client can connect, so the file's mode
  // from the umask is never usable.
  if (chmod(config.path.c_str(), config.mode) != 0) {
    return undo(Status(Code::kPermissionDenied,
                       "cannot set mode of " + config.path + ": " + errno_text(errno)));
  }
  if (struct stat own {}; stat(config.path.c_str(), &own) == 0) {
    loop.socket_dev = own.st_dev;
    loop.socket_ino = own.st_ino;
  }
  if (listen(loop.listen_fd.get(), SOMAXCONN) != 0) {
    return undo(Status(Code::kResourceExhausted, "listen(): " + errno_text(errno)));
  }
  loop.epoll_fd = UniqueFd(epoll_create1(EPOLL_CLOEXEC));
  loop.wake_fd = UniqueFd(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!loop.epoll_fd.valid() || !loop.wake_fd.valid()) {
    return undo(Status(Code::kResourceExhausted, "epoll/eventfd: " + errno_text(errno)));
  }
  for (UniqueFd* fd : {&loop.listen_fd, &loop.wake_fd}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = fd;
    if (epoll_ctl(loop.epoll_fd.get(), EPOLL_CTL_ADD, fd->get(), &ev) != 0) {
      return undo(Status(Code::kResourceExhausted, "epoll_ctl: " + errno_text(errno)));
    }
  }
  ep->stopped_ = false;
  ep->thread_ = std::thread([&loop] { loop.run(); });
  spdlog::info("kepler socket: serving on {} (mode {:04o}, max {} bytes, deadline {} ms, "
               "{} connections, {} bytes buffered in all)",
               config.path, static_cast<unsigned>(config.mode), config.max_request_bytes,
               config.deadline.count(), config.max_connections, config.max_buffered_bytes);
  return ep;
}

void KeplerEndpoint::stop() {
  if (stopped_.exchange(true)) return;
  if (loop_ == nullptr) return;
  const std::uint64_t one = 1;
  if (write(loop_->wake_fd.get(), &one, sizeof one) < 0) {
    spdlog::error("kepler socket: cannot wake the event loop: {}", errno_text(errno));
  }
  if (thread_.joinable()) thread_.join();
  loop_->connections.clear();
  loop_->listen_fd.reset();
  // Remove the file only if it is still ours: a newer server may have replaced it.
  struct stat st {};
  if (lstat(config_.path.c_str(), &st) == 0 && st.st_dev == loop_->socket_dev &&
      st.st_ino == loop_->socket_ino) {
    unlink(config_.path.c_str());
  }
  spdlog::info("kepler socket: stopped after {} requests ({} errors, {} timeouts)",
               stats_.requests.load(), stats_.errors.load(), stats_.timeouts.load());
}

KeplerEndpoint::~KeplerEndpoint() { stop(); }

}  // namespace estimator::service
