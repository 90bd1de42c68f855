// The shared-memory segment as an OS resource: created and owned by the daemon, attached
// by clients. Both are move-only RAII objects; the owner's destructor marks the segment
// stopping, unmaps and unlinks it.
#pragma once

#include <sys/types.h>

#include <boost/interprocess/mapped_region.hpp>

#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"
#include "shm/layout.h"

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

// The daemon's segment. create() refuses while another live daemon holds the name
// (an exclusive flock on "<name>.lock" beside the segment, released by the kernel when
// that daemon dies), replaces a stale segment left by a dead one, and commits every page
// up front so that a /dev/shm too small fails here with sizes in the message instead of
// SIGBUS on first touch.
class ServerSegment {
 public:
  static Result<std::unique_ptr<ServerSegment>> create(const SegmentConfig& config);
  ~ServerSegment();
  ServerSegment(const ServerSegment&) = delete;
  ServerSegment& operator=(const ServerSegment&) = delete;

  const SegmentView& view() const { return view_; }
  const std::string& name() const { return name_; }
  std::uint64_t epoch() const { return view_.header().epoch; }
  std::uint64_t bytes() const { return bytes_; }

  // Publishes the segment to clients (state kServing).
  void mark_serving();

 private:
  ServerSegment() = default;
  std::string name_;
  int lock_fd_ = -1;
  std::string lock_path_;
  boost::interprocess::mapped_region region_;
  std::uint64_t bytes_ = 0;
  SegmentView view_;
};

// A client's mapping of a daemon's segment; validated at attach (magic, layout and schema
// versions, sizes against the object's real size) and never trusted after that.
class ClientSegment {
 public:
  static Result<std::unique_ptr<ClientSegment>> attach(const std::string& name);
  ~ClientSegment();
  ClientSegment(const ClientSegment&) = delete;
  ClientSegment& operator=(const ClientSegment&) = delete;

  const SegmentView& view() const { return view_; }
  std::uint64_t epoch() const { return epoch_; }
  std::int32_t server_pid() const { return server_pid_; }
  std::uint32_t server_pidns() const { return server_pidns_; }

 private:
  ClientSegment() = default;
  boost::interprocess::mapped_region region_;
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
