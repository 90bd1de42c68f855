// SPDX-License-Identifier: Apache-2.0
// What binds a reply to the request it answers (docs/reliability.md, "Forged answers").
//
// Every client can write every slot, so the bytes in a slot prove nothing by themselves.
// The client draws a nonce nobody else can predict, keeps it, and hands it over with the
// request; the daemon echoes it with the slot generation, a digest of the request bytes
// it evaluated (its private copy, keyed by the nonce) and a check value over the reply
// keyed by all three. The client accepts a reply only if the echo equals what it keeps
// and the digest equals that of the bytes it encoded itself. A writer that cannot read
// the nonce while the request is in flight can neither produce such a reply nor change
// the request without changing its digest (keyed, the digest cannot be steered).
//
// The hash is fast, not cryptographic: it must catch bytes a blind writer changed, not
// resist a reader who could forge the whole reply anyway.
#pragma once

#include <cstdint>
#include <span>

namespace estimator::shm {

// A 64-bit hash of `bytes`, seeded with `key`.
std::uint64_t digest(std::span<const std::uint8_t> bytes, std::uint64_t key = 0);

// The check value the daemon stores beside a reply (SlotControl::response_check).
inline std::uint64_t reply_check(std::uint64_t nonce, std::uint32_t generation,
                                 std::uint64_t request_digest,
                                 std::span<const std::uint8_t> reply) {
  return digest(reply, nonce ^ digest({reinterpret_cast<const std::uint8_t*>(&request_digest),
                                       sizeof request_digest},
                                      generation));
}

// A fresh nonce, never 0: SipHash-1-3 of a per-thread counter under a per-thread 128-bit
// key drawn from getrandom(2) (re-drawn in a forked child, which must not repeat its
// parent's nonces). About as cheap as a few multiplications; no system call per nonce.
std::uint64_t next_nonce();

}  // namespace estimator::shm
