// SPDX-License-Identifier: Apache-2.0
// Socket mode: the baseline the ring must beat. The same FlatBuffers request bytes
// (wire::build_request) travel over a unix SOCK_STREAM connection behind a 4-byte length;
// a forked child answers them with the same service::RequestHandler the daemon runs, and
// writes back a 4-byte length and the response bytes, which the client verifies with
// wire::read_response, as the ring client does.
//
// Why it is fair: the connection is made once and kept (no connect per request, the best
// case for a socket), each message goes out in one sendmsg and is usually read in one
// recv, and both sides do the same encoding (wire::RequestEncoder, which patches the id
// and the matrix into the last request of the same shape, as the ring's client does),
// decoding and model work as in ring mode. Only the transport differs. Reads block as a
// socket client's would (variant "block"), or busy-poll (variant "poll": non-blocking
// recv in a loop for the spin budget on both ends, then a blocking one), the socket's
// answer to the spinning ring.
#include <errno.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "bench/child.h"
#include "bench/modes.h"
#include "common/errno_text.h"
#include "service/request_handler.h"
#include "shm/wait.h"

namespace estimator::bench {
namespace {

// A receive buffer whose message body (after the 4-byte length) is 8-byte aligned, as the
// request reader and the FlatBuffers verifier want it.
class MessageBuffer {
 public:
  explicit MessageBuffer(std::size_t capacity)
      : capacity_(capacity), storage_(capacity / 8 + 2) {}
  std::uint8_t* frame() { return reinterpret_cast<std::uint8_t*>(storage_.data()) + 4; }
  const std::uint8_t* body() const {
    return reinterpret_cast<const std::uint8_t*>(storage_.data()) + 8;
  }
  std::size_t capacity() const { return capacity_; }

 private:
  std::size_t capacity_;
  std::vector<std::uint64_t> storage_;
};

// Sends the length and the bytes in one call; SIGPIPE suppressed (a dead peer is an error).
Status send_message(int fd, std::span<const std::uint8_t> bytes) {
  std::uint32_t len = static_cast<std::uint32_t>(bytes.size());
  iovec iov[2] = {{&len, sizeof len},
                  {const_cast<std::uint8_t*>(bytes.data()), bytes.size()}};
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = 2;
  std::size_t left = sizeof len + bytes.size();
  while (left > 0) {
    const ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      return Status(errno == EAGAIN ? Code::kDeadlineExceeded : Code::kUnavailable,
                    "send: " + errno_text(errno));
    }
    left -= static_cast<std::size_t>(n);
    // A partial send (large message, full socket buffer): skip what went out.
    for (std::size_t sent = static_cast<std::size_t>(n); sent > 0 && msg.msg_iovlen > 0;) {
      if (sent >= msg.msg_iov[0].iov_len) {
        sent -= msg.msg_iov[0].iov_len;
        ++msg.msg_iov;
        --msg.msg_iovlen;
      } else {
        msg.msg_iov[0].iov_base = static_cast<std::uint8_t*>(msg.msg_iov[0].iov_base) + sent;
        msg.msg_iov[0].iov_len -= sent;
        sent = 0;
      }
    }
  }
  return Status::Ok();
}

// Receives one message into `buf`; its body is buf.body()[0, len). One request is in
// flight at a time, so a read never returns bytes of the next message. With poll_ns,
// non-blocking reads are tried in a loop for that long before a blocking one.
Status receive_message(int fd, MessageBuffer& buf, std::uint32_t& len, std::uint64_t poll_ns) {
  std::uint8_t* frame = buf.frame();
  std::size_t have = 0;
  std::size_t need = 4;
  std::size_t room = buf.capacity() + 4;
  const std::uint64_t poll_end = poll_ns != 0 ? shm::monotonic_ns() + poll_ns : 0;
  bool polling = poll_ns != 0;
  while (have < need) {
    const ssize_t n = recv(fd, frame + have, room - have, polling ? MSG_DONTWAIT : 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && polling && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      // Yield between polls: nothing is pinned, and a poller sharing its CPU with the
      // peer would otherwise keep it off that CPU until preempted (milliseconds). The
      // ring's spin stops for the same reason (shm/wait.h); a socket cannot see where
      // its peer runs, so it yields every time (one syscall more per poll).
      sched_yield();
      polling = shm::monotonic_ns() < poll_end;
      continue;
    }
    if (n < 0) {
      return errno == EAGAIN ? Status(Code::kDeadlineExceeded, "no answer within the timeout")
                             : Status(Code::kUnavailable, "recv: " + errno_text(errno));
    }
    if (n == 0) return Status(Code::kUnavailable, "connection closed by the peer");
    have += static_cast<std::size_t>(n);
    if (need == 4 && have >= 4) {
      std::memcpy(&len, frame, 4);
      if (len > buf.capacity()) {
        return Status(Code::kTooLarge, "message of " + std::to_string(len) + " bytes");
      }
      need = 4 + std::size_t{len};
      room = need;
      if (have > need) return Status(Code::kInternal, "peer sent more than one message");
    }
  }
  return Status::Ok();
}

// The child: one connection, answered until the client closes it.
int serve_socket(int listener, std::shared_ptr<const models::Registry> registry,
                 std::uint64_t poll_ns, const Child::Ready& ready) {
  service::RegistryHolder holder(std::move(registry));
  service::RequestHandler handler(holder, request_capacity(), response_capacity());
  MessageBuffer in(request_capacity());
  ready(Status::Ok());
  const int fd = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  close(listener);
  if (fd < 0) return 1;
  for (;;) {
    std::uint32_t len = 0;
    if (!receive_message(fd, in, len, poll_ns).ok()) break;  // the client closed: done
    const std::span<const std::uint8_t> reply = handler.handle({in.body(), len});
    if (!send_message(fd, reply).ok()) break;
  }
  close(fd);
  return 0;
}

class SocketMode final : public Mode {
 public:
  SocketMode(const std::vector<Case>& cases, std::uint64_t poll_ns)
      : cases_(cases), poll_ns_(poll_ns), in_(response_capacity()) {}

  pid_t server_pid() const override { return child_ != nullptr ? child_->pid() : -1; }

  ~SocketMode() override {
    if (fd_ >= 0) close(fd_);  // the server sees end of file and exits
    if (child_ != nullptr) child_->stop();
  }

  Status run(std::size_t index, std::size_t count, Clock::time_point deadline,
             Samples* out) override {
    const Case& c = cases_[index];
    for (std::size_t i = 0; i < count; ++i) {
      const std::uint64_t id = ++next_id_;
      const auto t0 = Clock::now();
      auto built = encoder_.encode(request_spec(c, id), request_capacity());
      if (!built.ok()) return built.status();
      if (Status s = send_message(fd_, *built); !s.ok()) {
        return Status(s.code(), "socket: " + s.message());
      }
      std::uint32_t len = 0;
      if (Status s = receive_message(fd_, in_, len, poll_ns_); !s.ok()) {
        return Status(s.code(), "socket: " + s.message());
      }
      auto parsed = wire::read_response({in_.body(), len});
      const auto t1 = Clock::now();
      if (!parsed.ok()) {
        return Status(parsed.status().code(), "socket: " + parsed.status().message());
      }
      const wire::ParsedResponse& r = *parsed;
      if (r.status != Code::kOk) return Status(r.status, "socket: " + std::string(r.message));
      if (r.request_id != id) {
        return Status(Code::kInternal, "socket: answer to request " + std::to_string(r.request_id) +
                                           " for request " + std::to_string(id));
      }
      const std::string_view model =
          r.model != nullptr ? wire::view_of(r.model->name()) : std::string_view{};
      if (Status s = check_reply(c, r.rows, r.cols, r.powers, model); !s.ok()) {
        return Status(s.code(), "socket: " + s.message());
      }
      if (out != nullptr) out->add(elapsed_ns(t0, t1));
      if (t1 >= deadline) break;
    }
    return Status::Ok();
  }

  std::unique_ptr<Child> child_;
  int fd_ = -1;

 private:
  const std::vector<Case>& cases_;
  std::uint64_t poll_ns_;
  wire::RequestEncoder encoder_;
  MessageBuffer in_;
  std::uint64_t next_id_ = 0;
};

// A listening socket at `path`, or -1 with `error` set.
int listen_at(const std::string& path, Status& error) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    error = Status(Code::kInvalidArgument, "socket path too long: " + path);
    return -1;
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = Status(Code::kResourceExhausted, "socket: " + errno_text(errno));
    return -1;
  }
  unlink(path.c_str());
  if (bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0 || listen(fd, 1) != 0) {
    error = Status(Code::kPermissionDenied, "bind/listen " + path + ": " + errno_text(errno));
    close(fd);
    return -1;
  }
  return fd;
}

Status connect_to(int fd, const std::string& path, std::chrono::milliseconds timeout) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    return Status(Code::kUnavailable, "connect " + path + ": " + errno_text(errno));
  }
  // Blocking reads, bounded: a server that dies or stalls fails the run, never hangs it.
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<Mode>> start_socket(const std::vector<Case>& cases,
                                           std::shared_ptr<const models::Registry> registry,
                                           const ModeOptions& options, bool poll) {
  const std::uint64_t poll_ns =
      poll ? static_cast<std::uint64_t>(
                 std::chrono::duration_cast<std::chrono::nanoseconds>(options.spin).count())
           : 0;
  auto mode = std::make_unique<SocketMode>(cases, poll_ns);
  static unsigned sockets_started = 0;
  const std::string path = "/tmp/estimator-bench-" + std::to_string(getpid()) + "-" +
                           std::to_string(sockets_started++) + ".sock";
  Status error;
  const int listener = listen_at(path, error);
  if (listener < 0) return error;
  auto child = Child::spawn(poll ? "polling socket server" : "socket server",
                           [listener, registry, poll_ns](const Child::Ready& ready) {
                             return serve_socket(listener, registry, poll_ns, ready);
                           });
  close(listener);  // the child holds it now
  if (!child.ok()) {
    unlink(path.c_str());
    return child.status();
  }
  mode->child_ = std::move(child).value();
  Status s = mode->child_->wait_ready(std::chrono::milliseconds(10000));
  if (s.ok()) {
    mode->fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    s = mode->fd_ < 0 ? Status(Code::kResourceExhausted, "socket: " + errno_text(errno))
                      : connect_to(mode->fd_, path, options.timeout);
  }
  unlink(path.c_str());  // connected (or failed): the name is no longer needed
  if (!s.ok()) return s;
  return std::unique_ptr<Mode>(std::move(mode));
}

}  // namespace estimator::bench
