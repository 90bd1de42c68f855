// SPDX-License-Identifier: Apache-2.0
#include "shm/segment.h"

#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <new>
#include <utility>

#include "common/errno_text.h"
#include "schema/schema_version.h"
#include "shm/wait.h"

namespace estimator::shm {
namespace {

// POSIX shared memory objects live here on Linux (glibc's shm_open opens this directory);
// opening the path ourselves lets every open add O_NOFOLLOW and O_NONBLOCK.
constexpr const char* kShmDir = "/dev/shm/";
// Attempts at a name that others keep re-creating between our unlink and our O_EXCL.
constexpr int kNameAttempts = 3;

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

std::string octal(mode_t mode) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

const char* file_type(mode_t mode) {
  if (S_ISREG(mode)) return "a regular file";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISLNK(mode)) return "a symbolic link";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISSOCK(mode)) return "a socket";
  return "a device node";
}

Status sys_error(const std::string& what, int err) {
  return Status(err == EACCES || err == EPERM ? Code::kPermissionDenied : Code::kInternal,
                what + ": " + errno_text(err));
}

// Clears `path` for a new file of ours, or says why not (the policy is ServerSegment's
// comment in segment.h). Nothing is opened: lstat neither follows a link nor blocks on a
// FIFO. `min_epoch` is raised past the epoch of a segment of ours found there, so that
// the new one is larger even if clocks are odd.
Status clear_name(const std::string& path, const char* what, std::uint64_t* min_epoch) {
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) {
    return errno == ENOENT ? Status::Ok() : sys_error("lstat " + path, errno);
  }
  const uid_t me = geteuid();
  const std::string found = std::string(what) + " " + path + " is " + file_type(st.st_mode) +
                            " of uid " + std::to_string(st.st_uid) + " (mode " +
                            octal(st.st_mode) + ")";
  if (st.st_uid == me && !S_ISREG(st.st_mode)) {
    return Status(Code::kPermissionDenied,
                  found + ", which no estimator daemon leaves behind; remove it or choose "
                          "another --shm-name");
  }
  if (st.st_uid != me && me != 0) {
    return Status(Code::kPermissionDenied,
                  found + ", not this daemon's uid " + std::to_string(me) +
                      "; not replacing another user's file: remove it (as uid " +
                      std::to_string(st.st_uid) + " or root) or choose another --shm-name");
  }
  if (min_epoch != nullptr && S_ISREG(st.st_mode) && st.st_uid == me) {
    const UniqueFd old(open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    struct stat now {};
    std::uint64_t words[2] = {0, 0};  // magic, then (at 64) the epoch
    if (old.valid() && fstat(old.get(), &now) == 0 && now.st_ino == st.st_ino &&
        pread(old.get(), &words[0], 8, 0) == 8 &&
        pread(old.get(), &words[1], 8, offsetof(SegmentHeader, epoch)) == 8 &&
        words[0] == kMagic) {
      *min_epoch = std::max(*min_epoch, words[1] + 1);
    }
  }
  if (unlink(path.c_str()) != 0 && errno != ENOENT) {
    return sys_error("cannot remove " + found, errno);
  }
  return Status::Ok();
}

// Opens (creating if needed) the lock file and takes its flock; fails if a live daemon
// holds it.
Result<UniqueFd> lock_name(const std::string& name) {
  const std::string path = kShmDir + name + ".lock";
  for (int attempt = 0; attempt < kNameAttempts; ++attempt) {
    UniqueFd fd(open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600));
    if (fd.valid()) {
      struct stat st {};
      if (fstat(fd.get(), &st) != 0) return sys_error("fstat " + path, errno);
      if (S_ISREG(st.st_mode) && st.st_uid == geteuid()) {
        if (flock(fd.get(), LOCK_EX | LOCK_NB) == 0) return fd;
        if (errno == EWOULDBLOCK) {
          return Status(Code::kResourceExhausted,
                        "another estimator daemon is serving segment '" + name + "' (lock " +
                            path + " is held); stop it or choose another --shm-name");
        }
        return sys_error("flock " + path, errno);
      }
    } else if (errno != EACCES && errno != EPERM && errno != ELOOP) {
      return sys_error("cannot open lock file " + path, errno);
    }
    // Not a lock file of ours (another user's, a FIFO, a link): replace it or refuse.
    if (Status s = clear_name(path, "lock file", nullptr); !s.ok()) return s;
  }
  return Status(Code::kInternal, "lock file " + path + " keeps being re-created by someone else");
}

std::uint64_t realtime_ns() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ULL +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

// Maps `bytes` of `fd` shared and read-write, watched for SIGBUS from the first touch.
Result<Mapping> map_shared(int fd, std::uint64_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return sys_error("mmap", errno);
  auto guard = SigbusGuard::watch(p, bytes);
  if (!guard.ok()) {
    munmap(p, bytes);
    return guard.status();
  }
  return Mapping(static_cast<std::uint8_t*>(p), bytes, std::move(guard).value());
}

}  // namespace

Mapping::Mapping(Mapping&& other) noexcept
    : base_(std::exchange(other.base_, nullptr)),
      bytes_(std::exchange(other.bytes_, 0)),
      guard_(std::move(other.guard_)) {}

Mapping& Mapping::operator=(Mapping&& other) noexcept {
  if (this != &other) {
    reset();
    base_ = std::exchange(other.base_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
    guard_ = std::move(other.guard_);
  }
  return *this;
}

Mapping::~Mapping() { reset(); }

void Mapping::reset() {
  guard_ = SigbusGuard();  // unwatch first: the range is about to be reused
  if (base_ != nullptr) munmap(base_, bytes_);
  base_ = nullptr;
  bytes_ = 0;
}

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
  if (slot_stride(round_up_to_line(config.request_capacity),
                  round_up_to_line(config.response_capacity)) > UINT32_MAX) {
    return Status(Code::kInvalidArgument, "slot too large");
  }
  // Single-instance guard: the kernel drops the flock when its holder dies, so a lock we
  // can take means any existing segment of that name is stale.
  auto lock = lock_name(config.name);
  if (!lock.ok()) return lock.status();
  auto seg = lay_out(config, lock.value(), 0);
  if (!seg.ok()) unlink((kShmDir + config.name + ".lock").c_str());  // held: it is ours
  return seg;
}

Result<std::unique_ptr<ServerSegment>> ServerSegment::lay_out(const SegmentConfig& config,
                                                              UniqueFd& lock,
                                                              std::uint64_t min_epoch) {
  const std::uint32_t req_cap = round_up_to_line(config.request_capacity);
  const std::uint32_t resp_cap = round_up_to_line(config.response_capacity);
  const std::uint64_t bytes = segment_bytes(config.slots, req_cap, resp_cap);
  std::unique_ptr<ServerSegment> seg(new ServerSegment());
  seg->config_ = config;
  seg->path_ = kShmDir + config.name;
  seg->bytes_ = bytes;
  seg->owns_name_ = false;  // until the file is ours

  for (int attempt = 0; !seg->fd_.valid(); ++attempt) {
    if (attempt == kNameAttempts) {
      return Status(Code::kInternal, seg->path_ + " keeps being re-created by someone else");
    }
    if (Status s = clear_name(seg->path_, "segment", &min_epoch); !s.ok()) return s;
    seg->fd_ = UniqueFd(open(seg->path_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                             config.mode));
    if (!seg->fd_.valid() && errno != EEXIST) {
      return sys_error("cannot create segment " + seg->path_, errno);
    }
  }
  seg->owns_name_ = true;
  struct stat st {};
  // umask may have narrowed the mode; the configured mode is what the operator asked.
  if (fchmod(seg->fd_.get(), config.mode) != 0 || fstat(seg->fd_.get(), &st) != 0) {
    return sys_error("fchmod/fstat " + seg->path_, errno);
  }
  seg->dev_ = st.st_dev;
  seg->ino_ = st.st_ino;
  // Commit every page now: on tmpfs posix_fallocate fails with ENOSPC when /dev/shm is
  // too small, where ftruncate would succeed and the first write would SIGBUS.
  if (const int err = posix_fallocate(seg->fd_.get(), 0, static_cast<off_t>(bytes)); err != 0) {
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
  auto mapping = map_shared(seg->fd_.get(), bytes);
  if (!mapping.ok()) return mapping.status();
  seg->mapping_ = std::move(mapping).value();

  std::uint8_t* base = seg->mapping_.base();
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
  seg->epoch_ = std::max(min_epoch, realtime_ns());
  h->epoch = seg->epoch_;
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
  seg->lock_ = std::move(lock);
  return seg;
}

void ServerSegment::mark_serving() {
  view_.header().state.store(static_cast<std::uint32_t>(ServerState::kServing),
                             std::memory_order_release);
}

std::string ServerSegment::lost() const {
  if (mapping_.tripped()) return "was truncated (a fault hit the daemon's mapping)";
  struct stat st {};
  if (fstat(fd_.get(), &st) != 0) return "cannot be checked: fstat: " + errno_text(errno);
  if (static_cast<std::uint64_t>(st.st_size) < bytes_) {
    return "was truncated to " + std::to_string(st.st_size) + " bytes";
  }
  if (lstat(path_.c_str(), &st) != 0) {
    return errno == ENOENT ? "was deleted" : "cannot be checked: lstat: " + errno_text(errno);
  }
  if (st.st_dev != dev_ || st.st_ino != ino_) return "was replaced by another file";
  return {};
}

Result<std::unique_ptr<ServerSegment>> ServerSegment::recreate() {
  owns_name_ = false;  // whatever is under the name now is not this segment
  return lay_out(config_, lock_, epoch_ + 1);
}

void ServerSegment::wake_sleepers(unsigned n) const {
  struct stat st {};
  if (!fd_.valid() || fstat(fd_.get(), &st) != 0) return;
  // A truncated file has no page to post on; growing it back harms no one (clients
  // re-attach by name, which no longer names this file).
  if (static_cast<std::uint64_t>(st.st_size) < kHeaderBytes &&
      ftruncate(fd_.get(), static_cast<off_t>(kHeaderBytes)) != 0) {
    return;
  }
  auto fresh = map_shared(fd_.get(), kHeaderBytes);
  if (!fresh.ok()) return;
  auto* h = reinterpret_cast<SegmentHeader*>(fresh.value().base());
  for (unsigned i = 0; i < n; ++i) sem_post_shared(&h->doorbell);
}

ServerSegment::~ServerSegment() {
  if (mapping_.base() != nullptr) {
    // Clients still mapped see kStopping at once rather than waiting for a stale heartbeat.
    view_.header().state.store(static_cast<std::uint32_t>(ServerState::kStopping));
  }
  struct stat st {};
  if (owns_name_ && lstat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_) {
    unlink(path_.c_str());
  }
  if (lock_.valid()) unlink((path_ + ".lock").c_str());
}

AttachPolicy AttachPolicy::own() { return {geteuid(), 0660}; }

Result<std::unique_ptr<ClientSegment>> ClientSegment::attach(const std::string& name,
                                                             const AttachPolicy& policy) {
  if (!valid_name(name)) {
    return Status(Code::kInvalidArgument, "invalid segment name '" + name + "'");
  }
  const std::string path = kShmDir + name;
  const UniqueFd fd(open(path.c_str(), O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (!fd.valid()) {
    const int err = errno;
    if (err == ENOENT) {
      return Status(Code::kUnavailable, "estimator unavailable: no segment '" + name +
                                            "' (is estimatord running?)");
    }
    if (err == EACCES || err == EPERM || err == ELOOP) {
      return Status(Code::kPermissionDenied, "permission denied attaching segment '" + name +
                                                 "': " + (err == ELOOP ? "it is a symbolic link"
                                                                       : errno_text(err)));
    }
    return Status(Code::kUnavailable,
                  "estimator unavailable: cannot attach '" + name + "': " + errno_text(err));
  }
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) return sys_error("fstat segment '" + name + "'", errno);
  // Whoever owns the file wrote its answers: a segment of anyone but the daemon's user (a
  // squatter who created the name first) would hand us its numbers.
  if (!S_ISREG(st.st_mode)) {
    return Status(Code::kPermissionDenied, "segment '" + name + "' (" + path + ") is " +
                                               file_type(st.st_mode) + ", not a segment");
  }
  if (st.st_uid != policy.owner) {
    return Status(Code::kPermissionDenied,
                  "segment '" + name + "' belongs to uid " + std::to_string(st.st_uid) +
                      ", not to the daemon's uid " + std::to_string(policy.owner) +
                      " (set ESTIMATOR_DAEMON_UID or --daemon-uid when the daemon runs as "
                      "another user)");
  }
  if ((st.st_mode & 07777 & ~policy.max_mode) != 0) {
    return Status(Code::kPermissionDenied,
                  "segment '" + name + "' has mode " + octal(st.st_mode) + ", wider than " +
                      octal(policy.max_mode) + " (set ESTIMATOR_SHM_MODE or --shm-mode to the "
                      "daemon's --shm-mode)");
  }
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (size < kHeaderBytes) {
    return Status(Code::kUnavailable, "estimator unavailable: segment '" + name +
                                          "' is not initialised yet");
  }
  std::unique_ptr<ClientSegment> seg(new ClientSegment());
  auto mapping = map_shared(fd.get(), size);
  if (!mapping.ok()) {
    return Status(Code::kUnavailable, "estimator unavailable: cannot map '" + name +
                                          "': " + mapping.status().message());
  }
  seg->mapping_ = std::move(mapping).value();
  std::uint8_t* base = seg->mapping_.base();
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
      bytes > size) {
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
