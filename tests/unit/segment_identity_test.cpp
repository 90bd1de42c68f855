// SPDX-License-Identifier: Apache-2.0
// The segment's survival and identity in one process: a truncated mapping reads zeros
// instead of raising SIGBUS (SigbusGuard), the daemon's segment knows when it was
// truncated, deleted or replaced and lays out a new epoch, and attach refuses a segment
// of the wrong owner, a mode wider than allowed, or a FIFO, without blocking.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include "shm/segment.h"
#include "shm/sigbus_guard.h"

namespace estimator::shm {
namespace {

std::string unique_name(const char* what) {
  return "estimator-test-id-" + std::string(what) + "-" + std::to_string(getpid());
}

SegmentConfig small(const std::string& name) {
  SegmentConfig cfg;
  cfg.name = name;
  cfg.slots = 2;
  cfg.request_capacity = cfg.response_capacity = 4096;
  return cfg;
}

// A file of `pages` pages, mapped shared; the file is unlinked (only the fd names it).
struct FileMapping {
  explicit FileMapping(std::size_t pages) : bytes(pages * 4096) {
    char path[] = "/dev/shm/estimator-test-sigbus-XXXXXX";
    fd = mkstemp(path);
    unlink(path);
    EXPECT_EQ(ftruncate(fd, static_cast<off_t>(bytes)), 0);
    base = static_cast<volatile std::uint8_t*>(
        mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  }
  ~FileMapping() {
    munmap(const_cast<std::uint8_t*>(base), bytes);
    close(fd);
  }
  std::size_t bytes;
  int fd = -1;
  volatile std::uint8_t* base = nullptr;
};

TEST(SigbusGuard, TruncatedMappingReadsZerosAndTrips) {
  FileMapping m(4);
  m.base[3 * 4096] = 7;
  auto guard = SigbusGuard::watch(const_cast<std::uint8_t*>(m.base), m.bytes);
  ASSERT_TRUE(guard.ok());
  EXPECT_FALSE(guard.value().tripped());
  ASSERT_EQ(ftruncate(m.fd, 0), 0);  // what a hostile peer does
  EXPECT_EQ(m.base[3 * 4096], 0) << "the access retried on zero pages";
  EXPECT_TRUE(guard.value().tripped());
  m.base[0] = 1;  // writable: private pages now, never the file
  EXPECT_EQ(m.base[0], 1);
  struct stat st {};
  ASSERT_EQ(fstat(m.fd, &st), 0);
  EXPECT_EQ(st.st_size, 0) << "the file is not written through the replacement";
}

TEST(SigbusGuard, AFaultOutsideWatchedMappingsStillKillsTheProcess) {
  auto other = SigbusGuard::watch(reinterpret_cast<void*>(4096), 4096);  // installs the handler
  ASSERT_TRUE(other.ok());
  const pid_t pid = fork();
  if (pid == 0) {
    FileMapping m(1);
    ASSERT_EQ(ftruncate(m.fd, 0), 0);
    m.base[0] = 1;  // not watched: the default disposition must still apply
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  // The handler passes the fault on to the disposition it replaced: the default kills the
  // child with SIGBUS; under ASan or TSan that disposition is the sanitizer's, which
  // reports the fault and exits non-zero. Either way the child never reaches _exit(0).
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  EXPECT_TRUE((WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS) ||
              (WIFEXITED(status) && WEXITSTATUS(status) != 0))
      << status;
#else
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS) << status;
#endif
}

TEST(ServerSegment, NoticesTruncationDeletionAndReplacementAndRecreatesWithANewEpoch) {
  const std::string name = unique_name("lost");
  const std::string path = "/dev/shm/" + name;
  auto created = ServerSegment::create(small(name));
  ASSERT_TRUE(created.ok()) << created.status().to_string();
  std::unique_ptr<ServerSegment> seg = std::move(created).value();
  EXPECT_EQ(seg->lost(), "");

  ASSERT_EQ(truncate(path.c_str(), 0), 0);
  EXPECT_NE(seg->lost().find("truncated"), std::string::npos) << seg->lost();
  seg->view().header().heartbeat_ns.store(1);  // faults: the guard repairs it
  EXPECT_NE(seg->lost().find("fault"), std::string::npos) << seg->lost();

  auto next = seg->recreate();
  ASSERT_TRUE(next.ok()) << next.status().to_string();
  EXPECT_GT(next.value()->epoch(), seg->epoch());
  seg.reset();  // gives up the name: the new file stays
  seg = std::move(next).value();
  EXPECT_EQ(seg->lost(), "");
  seg->mark_serving();
  EXPECT_TRUE(ClientSegment::attach(name).ok());

  ASSERT_EQ(unlink(path.c_str()), 0);
  EXPECT_EQ(seg->lost(), "was deleted");
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  ASSERT_GE(fd, 0);
  close(fd);
  EXPECT_EQ(seg->lost(), "was replaced by another file");
  const std::uint64_t before = seg->epoch();
  auto third = seg->recreate();
  ASSERT_TRUE(third.ok()) << third.status().to_string();
  EXPECT_GT(third.value()->epoch(), before);
  third.value()->mark_serving();
  seg.reset();
  auto client = ClientSegment::attach(name);
  ASSERT_TRUE(client.ok()) << client.status().to_string();
  EXPECT_EQ(client.value()->epoch(), third.value()->epoch());
}

TEST(ClientSegment, RefusesTheWrongOwnerAWiderModeAndAFifo) {
  const std::string name = unique_name("policy");
  const std::string path = "/dev/shm/" + name;
  SegmentConfig cfg = small(name);
  cfg.mode = 0606;
  auto seg = ServerSegment::create(cfg);
  ASSERT_TRUE(seg.ok()) << seg.status().to_string();
  seg.value()->mark_serving();

  auto wide = ClientSegment::attach(name);  // default policy: 0660
  ASSERT_EQ(wide.status().code(), Code::kPermissionDenied);
  EXPECT_NE(wide.status().message().find("mode 0606, wider than 0660"), std::string::npos)
      << wide.status().message();
  EXPECT_TRUE(ClientSegment::attach(name, {geteuid(), 0606}).ok());

  auto other = ClientSegment::attach(name, {geteuid() + 1, 0666});
  ASSERT_EQ(other.status().code(), Code::kPermissionDenied);
  EXPECT_NE(other.status().message().find("belongs to uid " + std::to_string(geteuid())),
            std::string::npos)
      << other.status().message();
  seg.value().reset();

  ASSERT_EQ(mkfifo(path.c_str(), 0600), 0);
  const auto t0 = std::chrono::steady_clock::now();
  auto fifo = ClientSegment::attach(name);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(1));
  ASSERT_EQ(fifo.status().code(), Code::kPermissionDenied);
  EXPECT_NE(fifo.status().message().find("a FIFO"), std::string::npos) << fifo.status().message();
  unlink(path.c_str());
}

}  // namespace
}  // namespace estimator::shm
