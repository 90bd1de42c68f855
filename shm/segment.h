// SPDX-License-Identifier: Apache-2.0
// The shared-memory segment as an OS resource: created and owned by the daemon, attached
// by clients. Both are non-copyable RAII objects; the owner's destructor marks the
// segment stopping, unmaps and unlinks it. Plain POSIX (open under /dev/shm, mmap), so
// that every open can refuse symlinks (O_NOFOLLOW), never block on a FIFO (O_NONBLOCK)
// and check what it opened (fstat: a regular file, its owner, its mode).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"
#include "common/unique_fd.h"
#include "shm/layout.h"
#include "shm/sigbus_guard.h"

namespace estimator::shm {

// "estimator-<user name>": the segment a daemon and its clients meet on by default.
std::string default_segment_name();

struct SegmentConfig {
  std::string name;                       // shm object name, without leading '/'
  std::uint32_t slots = 32;               // concurrent requests in flight
  std::uint32_t request_capacity = 256 * 1024;   // bytes per request area
  std::uint32_t response_capacity = 128 * 1024;  // bytes per response area
  mode_t mode = 0600;                     // 0660 to let a group of clients attach
};

// One slot's control block and areas, resolved from a validated segment.
struct SlotRef {
  SlotControl* control;
  std::uint8_t* request;   // request_capacity bytes
  std::uint8_t* response;  // response_capacity bytes
};

// The geometry of a mapped segment, read once from a validated header.
class SegmentView {
 public:
  SegmentView() = default;
  // The values are the validated copies, never re-read from the header.
  SegmentView(std::uint8_t* base, std::uint32_t slot_count, std::uint32_t stride,
              std::uint32_t request_capacity, std::uint32_t response_capacity)
      : base_(base),
        slot_count_(slot_count),
        stride_(stride),
        request_capacity_(request_capacity),
        response_capacity_(response_capacity) {}

  SegmentHeader& header() const { return *reinterpret_cast<SegmentHeader*>(base_); }
  std::uint32_t slot_count() const { return slot_count_; }
  std::uint32_t request_capacity() const { return request_capacity_; }
  std::uint32_t response_capacity() const { return response_capacity_; }
  SlotRef slot(std::uint32_t i) const {
    std::uint8_t* p = base_ + kHeaderBytes + std::uint64_t{i} * stride_;
    return {reinterpret_cast<SlotControl*>(p), p + sizeof(SlotControl),
            p + sizeof(SlotControl) + request_capacity_};
  }

 private:
  std::uint8_t* base_ = nullptr;
  std::uint32_t slot_count_ = 0;
  std::uint32_t stride_ = 0;
  std::uint32_t request_capacity_ = 0;
  std::uint32_t response_capacity_ = 0;
};

// A shared mapping, unmapped on destruction after its SIGBUS guard is dropped.
class Mapping {
 public:
  Mapping() = default;
  Mapping(std::uint8_t* base, std::uint64_t bytes, SigbusGuard guard)
      : base_(base), bytes_(bytes), guard_(std::move(guard)) {}
  Mapping(Mapping&& other) noexcept;
  Mapping& operator=(Mapping&& other) noexcept;
  ~Mapping();

  std::uint8_t* base() const { return base_; }
  // A peer truncated the file under us: the mapping now holds private zeros.
  bool tripped() const { return guard_.tripped(); }

 private:
  void reset();
  std::uint8_t* base_ = nullptr;
  std::uint64_t bytes_ = 0;
  SigbusGuard guard_;
};

// The daemon's segment, "/dev/shm/<name>". create() refuses while another live daemon
// holds the name (an exclusive flock on "<name>.lock" beside the segment, released by the
// kernel when that daemon dies), replaces a stale segment left by a dead one, and commits
// every page up front so that a /dev/shm too small fails here with sizes in the message
// instead of SIGBUS on first touch. What is already under either name decides the rest
// (docs/reliability.md, "Who may open the segment"): a regular file of the daemon's own
// user is replaced; anything of another user is replaced by root (as root can in the
// sticky /dev/shm: otherwise any local user could keep it from starting) and refused by
// anyone else, naming its owner; a FIFO, symlink or other non-regular file of the
// daemon's own user is refused (no daemon leaves one: someone should look).
class ServerSegment {
 public:
  static Result<std::unique_ptr<ServerSegment>> create(const SegmentConfig& config);
  ~ServerSegment();
  ServerSegment(const ServerSegment&) = delete;
  ServerSegment& operator=(const ServerSegment&) = delete;

  const SegmentView& view() const { return view_; }
  const std::string& name() const { return config_.name; }
  // The daemon's copies: the header may have been scribbled on or zeroed.
  std::uint64_t epoch() const { return epoch_; }
  std::uint64_t bytes() const { return bytes_; }

  // Publishes the segment to clients (state kServing).
  void mark_serving();

  // Why clients can no longer reach this segment, empty while they can: a fault replaced
  // the mapping with zeros, the file was truncated, or its name was deleted or now
  // names another file. One fstat and one stat; for the housekeeping thread.
  std::string lost() const;
  // Lays out a new segment under the same name and lock with a larger epoch, for a lost
  // one. This one keeps its mapping (threads may still read it) but gives up the name and
  // the lock: destroying it then unmaps only.
  Result<std::unique_ptr<ServerSegment>> recreate();
  // Posts the doorbell `n` times so that dispatch threads blocked on it wake up, through a
  // fresh mapping of the file (the futex key is the file and offset, so this reaches
  // threads that went to sleep before a fault replaced our mapping).
  void wake_sleepers(unsigned n) const;

 private:
  ServerSegment() = default;
  // Takes `lock` only on success, so a failed recreate() keeps the daemon's lock.
  static Result<std::unique_ptr<ServerSegment>> lay_out(const SegmentConfig& config,
                                                        UniqueFd& lock,
                                                        std::uint64_t min_epoch);
  SegmentConfig config_;
  std::string path_;
  UniqueFd lock_;  // invalid once recreate() handed it on
  UniqueFd fd_;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
  bool owns_name_ = true;
  std::uint64_t bytes_ = 0;
  std::uint64_t epoch_ = 0;
  Mapping mapping_;
  SegmentView view_;
};

// Whom a client trusts to have made the segment: the owner uid it must have and the
// widest mode it may have (an honest daemon's own --shm-mode). Anything else under the
// name is someone else's segment, whose answers would be its numbers.
struct AttachPolicy {
  uid_t owner;
  mode_t max_mode;
  // This process's effective uid and 0660: client and daemon run as the same user, who
  // may admit a group (--shm-mode 0660) but never every user.
  static AttachPolicy own();
};

// A client's mapping of a daemon's segment; validated at attach (a regular file, owner and
// mode against the policy, magic, layout and schema versions, sizes against the file's
// real size) and never trusted after that.
class ClientSegment {
 public:
  static Result<std::unique_ptr<ClientSegment>> attach(const std::string& name,
                                                       const AttachPolicy& policy = AttachPolicy::own());
  ~ClientSegment();
  ClientSegment(const ClientSegment&) = delete;
  ClientSegment& operator=(const ClientSegment&) = delete;

  const SegmentView& view() const { return view_; }
  std::uint64_t epoch() const { return epoch_; }
  std::int32_t server_pid() const { return server_pid_; }
  std::uint32_t server_pidns() const { return server_pidns_; }
  // A peer truncated the segment: the mapping reads zeros; attach again.
  bool tripped() const { return mapping_.tripped(); }

 private:
  ClientSegment() = default;
  Mapping mapping_;
  std::uint64_t epoch_ = 0;
  std::int32_t server_pid_ = 0;
  std::uint32_t server_pidns_ = 0;
  SegmentView view_;
};

// Small OS facts both sides use.
std::uint64_t monotonic_ns();
std::uint32_t pid_namespace_id();  // inode of /proc/self/ns/pid, 0 if unknown
// True unless `pid` certainly no longer exists; only meaningful in our pid namespace.
bool process_alive(std::int32_t pid);

}  // namespace estimator::shm
