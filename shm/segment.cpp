#include "shm/segment.h"

#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <boost/interprocess/shared_memory_object.hpp>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <new>

#include "schema/schema_version.h"
#include "shm/wait.h"

namespace bip = boost::interprocess;

namespace estimator::shm {
namespace {

// POSIX shared memory objects live here on Linux; used for free-space figures and the
// lock file that marks the live owner of a name.
constexpr const char* kShmDir = "/dev/shm/";

std::string errno_text(int err) { return std::strerror(err); }

bool valid_name(const std::string& name) {
  if (name.empty() || name.size() > 200) return false;
  for (char c : name) {
    if (c == '/' || c == '\0') return false;
  }
  return name != "." && name != "..";
}

std::string mib(std::uint64_t bytes) {
  return std::to_string(bytes / (1024 * 1024)) + " MiB (" + std::to_string(bytes) + " bytes)";
}

// Reads the epoch of a segment a previous daemon left behind, so the new one is larger
// even if clocks are odd; 0 when there is none or it is unreadable.
std::uint64_t previous_epoch(const std::string& name) {
  try {
    bip::shared_memory_object old(bip::open_only, name.c_str(), bip::read_only);
    bip::offset_t size = 0;
    if (!old.get_size(size) || static_cast<std::uint64_t>(size) < kHeaderBytes) return 0;
    bip::mapped_region region(old, bip::read_only, 0, kHeaderBytes);
    const auto* h = static_cast<const SegmentHeader*>(region.get_address());
    return h->magic == kMagic ? h->epoch : 0;
  } catch (const bip::interprocess_exception&) {
    return 0;
  }
}

std::uint64_t realtime_ns() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ULL +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

}  // namespace

std::string default_segment_name() {
  std::string user;
  if (const passwd* pw = getpwuid(geteuid()); pw != nullptr && pw->pw_name != nullptr) {
    user = pw->pw_name;
  } else {
    user = std::to_string(geteuid());
  }
  return "estimator-" + user;
}

std::uint64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ULL +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

std::uint32_t pid_namespace_id() {
  struct stat st {};
  if (stat("/proc/self/ns/pid", &st) != 0) return 0;
  return static_cast<std::uint32_t>(st.st_ino);
}

bool process_alive(std::int32_t pid) {
  if (pid <= 0) return false;
  return kill(pid, 0) == 0 || errno != ESRCH;
}

Result<std::unique_ptr<ServerSegment>> ServerSegment::create(const SegmentConfig& config) {
  if (!valid_name(config.name)) {
    return Status(Code::kInvalidArgument, "invalid segment name '" + config.name + "'");
  }
  if (config.slots == 0 || config.slots > kMaxSlots) {
    return Status(Code::kInvalidArgument,
                  "slots must be between 1 and " + std::to_string(kMaxSlots));
  }
  if (config.request_capacity < 1024 || config.response_capacity < 1024 ||
      config.request_capacity > (1U << 30) || config.response_capacity > (1U << 30)) {
    return Status(Code::kInvalidArgument, "slot areas must be between 1 KiB and 1 GiB");
  }
  const std::uint32_t req_cap = round_up_to_line(config.request_capacity);
  const std::uint32_t resp_cap = round_up_to_line(config.response_capacity);
  const std::uint64_t bytes = segment_bytes(config.slots, req_cap, resp_cap);
  if (slot_stride(req_cap, resp_cap) > UINT32_MAX) {
    return Status(Code::kInvalidArgument, "slot too large");
  }

  std::unique_ptr<ServerSegment> seg(new ServerSegment());
  seg->name_ = config.name;
  seg->bytes_ = bytes;

  // Single-instance guard: the kernel drops the flock when its holder dies, so a lock we
  // can take means any existing segment of that name is stale.
  seg->lock_path_ = std::string(kShmDir) + config.name + ".lock";
  seg->lock_fd_ = open(seg->lock_path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (seg->lock_fd_ < 0) {
    return Status(errno == EACCES ? Code::kPermissionDenied : Code::kInternal,
                  "cannot open lock file " + seg->lock_path_ + ": " + errno_text(errno));
  }
  if (flock(seg->lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    close(seg->lock_fd_);
    seg->lock_fd_ = -1;
    if (err == EWOULDBLOCK) {
      return Status(Code::kResourceExhausted,
                    "another estimator daemon is serving segment '" + config.name +
                        "' (lock " + seg->lock_path_ + " is held); stop it or choose "
                        "another --shm-name");
    }
    return Status(Code::kInternal, "flock " + seg->lock_path_ + ": " + errno_text(err));
  }

  const std::uint64_t old_epoch = previous_epoch(config.name);
  bip::shared_memory_object::remove(config.name.c_str());  // stale: its owner is gone

  try {
    bip::permissions perms(config.mode);
    bip::shared_memory_object obj(bip::create_only, config.name.c_str(), bip::read_write,
                                  perms);
    const int fd = obj.get_mapping_handle().handle;
    // umask may have narrowed the mode; the configured mode is what the operator asked.
    if (fchmod(fd, config.mode) != 0) {
      return Status(Code::kInternal, "fchmod segment: " + errno_text(errno));
    }
    // Commit every page now: on tmpfs posix_fallocate fails with ENOSPC when /dev/shm is
    // too small, where ftruncate would succeed and the first write would SIGBUS.
    if (const int err = posix_fallocate(fd, 0, static_cast<off_t>(bytes)); err != 0) {
      bip::shared_memory_object::remove(config.name.c_str());
      struct statvfs vfs {};
      std::string have = "unknown";
      if (statvfs(kShmDir, &vfs) == 0) {
        have = mib(static_cast<std::uint64_t>(vfs.f_bavail) * vfs.f_frsize);
      }
      if (err == ENOSPC) {
        return Status(Code::kResourceExhausted,
                      "shared memory too small: the segment needs " + mib(bytes) +
                          ", /dev/shm has " + have +
                          " free; enlarge /dev/shm (emptyDir medium: Memory, sizeLimit) "
                          "or lower --slots / --slot-bytes");
      }
      return Status(Code::kInternal, "posix_fallocate segment: " + errno_text(err));
    }
    seg->region_ = bip::mapped_region(obj, bip::read_write);
  } catch (const bip::interprocess_exception& e) {
    return Status(Code::kInternal, "cannot create segment '" + config.name + "': " + e.what());
  }

  auto* base = static_cast<std::uint8_t*>(seg->region_.get_address());
  std::memset(base, 0, kHeaderBytes);
  auto* h = reinterpret_cast<SegmentHeader*>(base);
  h->layout_version = kLayoutVersion;
  h->header_bytes = static_cast<std::uint32_t>(kHeaderBytes);
  h->schema_hash = schema::kSchemaHash;
  h->segment_bytes = bytes;
  h->slot_count = config.slots;
  h->slot_stride = static_cast<std::uint32_t>(slot_stride(req_cap, resp_cap));
  h->request_capacity = req_cap;
  h->response_capacity = resp_cap;
  h->server_pid = getpid();
  h->server_pidns = pid_namespace_id();
  h->epoch = std::max(old_epoch + 1, realtime_ns());
  h->state.store(static_cast<std::uint32_t>(ServerState::kInitializing));
  h->heartbeat_ns.store(monotonic_ns());
  h->server_cpu.store(kUnknownCpu);
  sem_init_shared(&h->doorbell);
  seg->view_ = SegmentView(base, config.slots, h->slot_stride, req_cap, resp_cap);
  for (std::uint32_t i = 0; i < config.slots; ++i) {
    SlotControl* c = seg->view_.slot(i).control;
    c->word.store(SlotWord{SlotState::kFree, 0, 0}.pack());
    c->lease_deadline_ns.store(0);
    c->client_cpu.store(kUnknownCpu);
    sem_init_shared(&c->response_ready);
  }
  // Last, with release: a client that sees the magic sees every field above (until then
  // it reads 0, "daemon is starting", rather than a half-written header).
  std::atomic_ref<std::uint64_t>(h->magic).store(kMagic, std::memory_order_release);
  return seg;
}

void ServerSegment::mark_serving() {
  view_.header().state.store(static_cast<std::uint32_t>(ServerState::kServing),
                             std::memory_order_release);
}

ServerSegment::~ServerSegment() {
  if (region_.get_address() != nullptr) {
    // Clients still mapped see kStopping at once rather than waiting for a stale heartbeat.
    view_.header().state.store(static_cast<std::uint32_t>(ServerState::kStopping));
    bip::shared_memory_object::remove(name_.c_str());
  }
  if (lock_fd_ >= 0) {
    unlink(lock_path_.c_str());
    close(lock_fd_);
  }
}

Result<std::unique_ptr<ClientSegment>> ClientSegment::attach(const std::string& name) {
  if (!valid_name(name)) {
    return Status(Code::kInvalidArgument, "invalid segment name '" + name + "'");
  }
  std::unique_ptr<ClientSegment> seg(new ClientSegment());
  bip::offset_t size = 0;
  try {
    bip::shared_memory_object obj(bip::open_only, name.c_str(), bip::read_write);
    if (!obj.get_size(size) || static_cast<std::uint64_t>(size) < kHeaderBytes) {
      return Status(Code::kUnavailable, "estimator unavailable: segment '" + name +
                                            "' is not initialised yet");
    }
    seg->region_ = bip::mapped_region(obj, bip::read_write);
  } catch (const bip::interprocess_exception& e) {
    if (e.get_error_code() == bip::not_found_error) {
      return Status(Code::kUnavailable, "estimator unavailable: no segment '" + name +
                                            "' (is estimatord running?)");
    }
    if (e.get_error_code() == bip::security_error) {
      return Status(Code::kPermissionDenied,
                    "permission denied attaching segment '" + name + "': " + e.what());
    }
    return Status(Code::kUnavailable,
                  "estimator unavailable: cannot attach '" + name + "': " + e.what());
  }
  auto* base = static_cast<std::uint8_t*>(seg->region_.get_address());
  const auto* h = reinterpret_cast<const SegmentHeader*>(base);
  // Copy each field once; the segment may change under us.
  const std::uint64_t magic =
      std::atomic_ref<std::uint64_t>(const_cast<SegmentHeader*>(h)->magic).load(std::memory_order_acquire);
  const std::uint32_t layout = h->layout_version;
  const std::uint64_t schema_hash = h->schema_hash;
  const std::uint64_t bytes = h->segment_bytes;
  const std::uint32_t slots = h->slot_count;
  const std::uint32_t stride = h->slot_stride;
  const std::uint32_t req_cap = h->request_capacity;
  const std::uint32_t resp_cap = h->response_capacity;
  const auto state = static_cast<ServerState>(
      const_cast<SegmentHeader*>(h)->state.load(std::memory_order_acquire));
  if (magic == 0) {  // created, header not yet written: a daemon is starting
    return Status(Code::kUnavailable, "estimator unavailable: daemon is starting");
  }
  if (magic != kMagic) {
    return Status(Code::kIncompatible, "segment '" + name + "' is not an estimator segment");
  }
  if (layout != kLayoutVersion) {
    return Status(Code::kIncompatible, "segment layout version " + std::to_string(layout) +
                                           " but this client speaks version " +
                                           std::to_string(kLayoutVersion));
  }
  if (schema_hash != schema::kSchemaHash) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "daemon schema %016llx, client schema %016llx",
                  static_cast<unsigned long long>(schema_hash),
                  static_cast<unsigned long long>(schema::kSchemaHash));
    return Status(Code::kIncompatible, std::string("schema mismatch: ") + buf);
  }
  if (state != ServerState::kServing) {
    return Status(Code::kUnavailable, "estimator unavailable: daemon is " +
                                          std::string(state == ServerState::kStopping
                                                          ? "stopping"
                                                          : "starting"));
  }
  if (slots == 0 || slots > kMaxSlots || req_cap % kCacheLine != 0 ||
      resp_cap % kCacheLine != 0 || stride != slot_stride(req_cap, resp_cap) ||
      bytes != segment_bytes(slots, req_cap, resp_cap) ||
      bytes > static_cast<std::uint64_t>(size)) {
    return Status(Code::kIncompatible, "segment '" + name + "' has an inconsistent header");
  }
  seg->view_ = SegmentView(base, slots, stride, req_cap, resp_cap);
  seg->epoch_ = h->epoch;
  seg->server_pid_ = h->server_pid;
  seg->server_pidns_ = h->server_pidns;
  return seg;
}

ClientSegment::~ClientSegment() = default;

}  // namespace estimator::shm
