// SPDX-License-Identifier: Apache-2.0
// The binary layout of the shared-memory segment: the one place that defines it.
//
// Everything here lives in memory shared with processes we do not trust, so:
// - only fixed-size data and atomics, no pointers (positions are byte offsets);
// - no interprocess mutex or condition variable: a peer that dies holding one wedges the
//   rest; synchronisation is CAS on a slot's state word and POSIX semaphores;
// - fields written by different processes are on different cache lines, except a slot's
//   hand-off line, which each side writes only while the slot is its own;
// - readers copy a field into a local once, then bounds-check the local;
// - nothing read from the segment locates anything: a slot's areas follow from its index
//   and the sizes the header had at attach, and a message always ends at the end of its
//   area (a length is all there is to read, checked against the capacity).
//
// Segment
// +--------------------------------------------+ 0
// | SegmentHeader                    (512 B)   |
// +--------------------------------------------+ kHeaderBytes
// | slot 0: SlotControl              (128 B)   |
// |         request area   (request_capacity)  |   request: its last request_len bytes
// |         response area  (response_capacity) |   reply: its last response_len bytes
// +--------------------------------------------+ kHeaderBytes + slot_stride
// | slot 1 ...                                 |
// +--------------------------------------------+ kHeaderBytes + slot_count * slot_stride
//
// SegmentHeader (each row one 64-byte cache line)
//    0 | magic u64 | layout_version u32 | header_bytes u32 | schema_hash u64 |
//      | segment_bytes u64 | slot_count u32 | slot_stride u32 | request_capacity u32 |
//      | response_capacity u32 | server_pid i32 | server_pidns u32 (inode of the pid ns)|
//   64 | epoch u64 | state atomic u32 | reserved                    (written at start)
//  128 | heartbeat_ns atomic u64 (CLOCK_MONOTONIC)                  (server timer)
//  192 | ready_mask atomic u64 x 8: bit i set = slot i published    (clients | server)
//  256 | server_sleeping atomic u64: bit t set = dispatch thread t sleeps |
//      | server_cpu atomic u32 | pad | doorbell ShmSemaphore (32 B)        (server | clients)
//  320 | reserved up to 512
//
// SlotControl (two cache lines; line 0 is the hand-off line, read by the waiting side)
//    0 | word atomic u64: bits 0-7 state, 8-23 generation, 32-63 owner pid       (C | S)
//    8 | client_sleeping atomic u32 | client_cpu atomic u32                          (C)
//   16 | request_nonce u64 | request_len u32                       (C, before publishing)
//   28 | response_len u32 | response_nonce u64 | request_digest u64 |
//   48 | response_check u64 | response_generation u32 (S, before answering) |
//      | publish_us u32 (C, before publishing: CLOCK_MONOTONIC in us, low 32 bits)
//   64 | lease_deadline_ns atomic u64 | owner_pidns u32 | pad                  (C, claim)
//   80 | response_ready ShmSemaphore (32 B) | pad
//
// The reply seal (shm/reply_seal.h): the daemon echoes the request's nonce and the slot
// generation, adds the digest of the request bytes it evaluated and a check value over
// the reply keyed by those three; the client accepts nothing else.
//
// Slot states and who moves them (C = owning client, S = server):
//   Free --C claim (CAS)--> Claimed --C publish--> Ready --S take (CAS)--> Busy
//   Busy --S answer (CAS)--> Answered --C release--> Free
//   Claimed/Ready --C withdraw on deadline--> Free      Busy --C give up (CAS)--> Abandoned
//   Abandoned --S answer fails, S frees--> Free
//   any but Busy, owner dead or lease expired --S reclaim (CAS)--> Free
//   any, the same word for longer than kLeaseCapNs (Busy: no thread on it) --S--> Free
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace estimator::shm {

inline constexpr std::size_t kCacheLine = 64;
inline constexpr std::uint64_t kMagic = 0x314D48535457504BULL;  // "KPWTSHM1" little-endian
// 3: futex-based ShmSemaphore instead of glibc sem_t (same size and offsets).
// 4: fixed message positions (no offsets), the reply seal, the lease moved to line 1.
// 5: server_sleeping a u64 of one bit per dispatch thread (was a u32 flag 1/0).
inline constexpr std::uint32_t kLayoutVersion = 5;
inline constexpr std::uint32_t kMaxSlots = 512;  // 8 ready-mask words of 64 bits
inline constexpr std::uint32_t kMaskWords = kMaxSlots / 64;
inline constexpr unsigned kMaxDispatchThreads = 64;  // one bit each in server_sleeping

// The longest deadline a client gives a call (longer ones are cut to it), and how long
// after its deadline it may still be reading its reply. A slot whose state word has not
// changed for kLeaseCapNs is freed by the daemon whoever it names as owner, whatever
// lease it shows: an honest client changes the word (claim, publish, release) well
// within that, so only a dead or forged owner is held to the cap.
inline constexpr std::uint64_t kMaxDeadlineNs = 10'000'000'000ULL;
inline constexpr std::uint64_t kLeaseGraceNs = 1'000'000'000ULL;
inline constexpr std::uint64_t kLeaseCapNs = kMaxDeadlineNs + kLeaseGraceNs;

enum class ServerState : std::uint32_t {
  kInitializing = 0,  // segment being laid out; clients must not use it yet
  kServing = 1,
  kStopping = 2,      // clean shutdown in progress; clients re-attach later
};

enum class SlotState : std::uint8_t {
  kFree = 0,
  kClaimed = 1,
  kReady = 2,
  kBusy = 3,
  kAnswered = 4,
  kAbandoned = 5,
};

// The slot's state word packs state, a generation bumped on every claim (so a reclaim
// CAS cannot free a newer claim by the same pid: no ABA) and the owner's pid.
struct SlotWord {
  SlotState state;
  std::uint16_t generation;
  std::int32_t pid;

  static constexpr SlotWord unpack(std::uint64_t w) {
    return {static_cast<SlotState>(w & 0xFF), static_cast<std::uint16_t>((w >> 8) & 0xFFFF),
            static_cast<std::int32_t>(w >> 32)};
  }
  constexpr std::uint64_t pack() const {
    return static_cast<std::uint64_t>(static_cast<std::uint8_t>(state)) |
           (static_cast<std::uint64_t>(generation) << 8) |
           (static_cast<std::uint64_t>(static_cast<std::uint32_t>(pid)) << 32);
  }
  constexpr SlotWord with(SlotState s) const { return {s, generation, pid}; }
};

// A counting semaphore between processes: a count changed with atomics, and futex(2)
// called directly on it (shm/wait.h). Not glibc's sem_t: glibc aborts the process when a
// futex call on a sem_t fails, and a peer scribbling on the sem_t (its flags word) makes
// the call fail, so any client could kill the daemon with one write.
struct alignas(16) ShmSemaphore {
  std::atomic<std::uint32_t> count;
  std::uint32_t reserved[7];

  ShmSemaphore() = delete;
  ShmSemaphore(const ShmSemaphore&) = delete;
  ShmSemaphore& operator=(const ShmSemaphore&) = delete;
};

struct alignas(kCacheLine) SegmentHeader {
  // line 0: immutable once state is kServing
  std::uint64_t magic;
  std::uint32_t layout_version;
  std::uint32_t header_bytes;
  std::uint64_t schema_hash;
  std::uint64_t segment_bytes;
  std::uint32_t slot_count;
  std::uint32_t slot_stride;
  std::uint32_t request_capacity;
  std::uint32_t response_capacity;
  std::int32_t server_pid;
  std::uint32_t server_pidns;
  // line 1
  alignas(kCacheLine) std::uint64_t epoch;
  std::atomic<std::uint32_t> state;
  // line 2
  alignas(kCacheLine) std::atomic<std::uint64_t> heartbeat_ns;
  // line 3
  alignas(kCacheLine) std::atomic<std::uint64_t> ready_mask[kMaskWords];
  // line 4
  // One bit per dispatch thread, set while it sleeps (fetch_or before, fetch_and after):
  // a single 1/0 flag would be cleared by one thread waking while another still sleeps,
  // and clients ring only when it is non-zero. A peer's forgery costs latency until the
  // threads' next sleep and wake-up rewrite their bits; it cannot make the daemon miss a
  // request for good (a waiting client rings again every 50 ms; idle threads rescan).
  alignas(kCacheLine) std::atomic<std::uint64_t> server_sleeping;
  // The CPU a dispatch thread last took a request on: a client on the same CPU must not spin (it
  // would only delay the daemon it waits for until its spin runs out).
  std::atomic<std::uint32_t> server_cpu;
  ShmSemaphore doorbell;
  // lines 5-7 reserved for future fields
  alignas(kCacheLine) std::uint8_t reserved[3 * kCacheLine];

  SegmentHeader() = delete;  // only ever placed in shared memory
  SegmentHeader(const SegmentHeader&) = delete;
  SegmentHeader& operator=(const SegmentHeader&) = delete;
};

struct alignas(kCacheLine) SlotControl {
  // line 0: the hand-off
  std::atomic<std::uint64_t> word;
  std::atomic<std::uint32_t> client_sleeping;
  std::atomic<std::uint32_t> client_cpu;  // where the owner published from (same reason)
  std::uint64_t request_nonce;            // unpredictable, drawn for this request
  std::uint32_t request_len;              // the request is the area's last request_len bytes
  std::uint32_t response_len;             // the reply is the area's last response_len bytes
  std::uint64_t response_nonce;           // the seal: request_nonce as the daemon read it,
  std::uint64_t request_digest;           // digest of the request bytes it evaluated,
  std::uint64_t response_check;           // reply_check() of the reply,
  std::uint32_t response_generation;      // and the generation of the word it took
  // When the client published (CLOCK_MONOTONIC microseconds, wrapping): the daemon learns
  // a client's period from these, not from when it woke up to take the request (which a
  // loaded machine delays by milliseconds). A hint only: implausible values are ignored.
  std::uint32_t publish_us;
  // line 1
  alignas(kCacheLine) std::atomic<std::uint64_t> lease_deadline_ns;  // CLOCK_MONOTONIC; 0 = not yet set
  std::uint32_t owner_pidns;
  alignas(16) ShmSemaphore response_ready;

  SlotControl() = delete;
  SlotControl(const SlotControl&) = delete;
  SlotControl& operator=(const SlotControl&) = delete;
};

inline constexpr std::size_t kHeaderBytes = sizeof(SegmentHeader);

static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(sizeof(ShmSemaphore) == 32 && offsetof(ShmSemaphore, count) == 0);
static_assert(sizeof(std::atomic<std::uint64_t>) == 8 && sizeof(std::atomic<std::uint32_t>) == 4);
static_assert(sizeof(SegmentHeader) == 512);
static_assert(offsetof(SegmentHeader, magic) == 0);
static_assert(offsetof(SegmentHeader, layout_version) == 8);
static_assert(offsetof(SegmentHeader, schema_hash) == 16);
static_assert(offsetof(SegmentHeader, server_pidns) == 52);
static_assert(offsetof(SegmentHeader, epoch) == 1 * kCacheLine);
static_assert(offsetof(SegmentHeader, state) == 1 * kCacheLine + 8);
static_assert(offsetof(SegmentHeader, heartbeat_ns) == 2 * kCacheLine);
static_assert(offsetof(SegmentHeader, ready_mask) == 3 * kCacheLine);
static_assert(sizeof(SegmentHeader::ready_mask) == kCacheLine);
static_assert(offsetof(SegmentHeader, server_sleeping) == 4 * kCacheLine);
static_assert(sizeof(SegmentHeader::server_sleeping) * 8 == kMaxDispatchThreads);
static_assert(offsetof(SegmentHeader, server_cpu) == 4 * kCacheLine + 8);
static_assert(offsetof(SegmentHeader, doorbell) == 4 * kCacheLine + 16);
static_assert(sizeof(SlotControl) == 2 * kCacheLine);
static_assert(offsetof(SlotControl, word) == 0);
static_assert(offsetof(SlotControl, client_sleeping) == 8);
static_assert(offsetof(SlotControl, client_cpu) == 12);
static_assert(offsetof(SlotControl, request_nonce) == 16);
static_assert(offsetof(SlotControl, request_len) == 24);
static_assert(offsetof(SlotControl, response_len) == 28);
static_assert(offsetof(SlotControl, response_nonce) == 32);
static_assert(offsetof(SlotControl, request_digest) == 40);
static_assert(offsetof(SlotControl, response_check) == 48);
static_assert(offsetof(SlotControl, response_generation) == 56);
static_assert(offsetof(SlotControl, publish_us) == 60);
static_assert(offsetof(SlotControl, lease_deadline_ns) == kCacheLine);
static_assert(offsetof(SlotControl, owner_pidns) == kCacheLine + 8);
static_assert(offsetof(SlotControl, response_ready) == kCacheLine + 16);
static_assert(SlotWord{SlotState::kBusy, 0xBEEF, -2}.pack() == 0xFFFFFFFE00BEEF03ULL);
static_assert(SlotWord::unpack(0xFFFFFFFE00BEEF03ULL).pid == -2);

// Slot areas are multiples of a cache line so every SlotControl starts on one.
constexpr std::uint32_t round_up_to_line(std::uint64_t n) {
  return static_cast<std::uint32_t>((n + kCacheLine - 1) / kCacheLine * kCacheLine);
}

constexpr std::uint64_t slot_stride(std::uint32_t request_capacity,
                                    std::uint32_t response_capacity) {
  return sizeof(SlotControl) + std::uint64_t{request_capacity} + response_capacity;
}

constexpr std::uint64_t segment_bytes(std::uint32_t slot_count, std::uint32_t request_capacity,
                                      std::uint32_t response_capacity) {
  return kHeaderBytes + std::uint64_t{slot_count} * slot_stride(request_capacity,
                                                                response_capacity);
}

}  // namespace estimator::shm
