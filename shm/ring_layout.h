// The bytes of a ring memfd: one per microprocess, mapped MAP_SHARED by the host and by the
// worker. Offsets only, fixed layout. Everything here is writable by the worker and therefore
// hostile to the host: the host reads each field once and validates it against the capacities
// it keeps privately.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace mp::shm {

inline constexpr uint64_t kRingMagic = 0x31474E4952504D00ull;  // "\0MPRING1"
inline constexpr uint64_t kRingHeaderBytes = 4096;
inline constexpr uint64_t kFrameAlign = 16;
inline constexpr uint64_t kMaxMessageBytesLimit = uint64_t{64} << 20;  // maxMessageKb's ceiling  // keeps payloads 8-aligned for Cap'n Proto readers

// Frame kinds. A frame is [u32 length][u32 kind][u64 call id][payload, padded to 16 bytes].
// Kind 0 never appears in a published frame: it marks the slot where the next frame will go.
enum class FrameKind : uint32_t {
  kCall = 1,    // host → worker: mp.call.Call
  kReply = 2,   // worker → host: mp.call.Reply
  kError = 3,   // worker → host: mp.call.Error
  kCancel = 4,  // host → worker: give up the call with this id
  kStop = 5,    // host → worker: exit cleanly after the current call
  // Either way: a piece of a message too large for one frame. The pieces of one call's
  // message follow each other; the message's own kind (kCall, kReply, kError) ends it.
  kChunk = 6,
  kPad = 7,     // filler to the end of the ring; never delivered
  // A handler's request for a service the host brokers (mp.call.ServiceRequest), and the
  // host's answer (mp.call.ServiceReply), both with the id of the call the handler serves.
  kServiceRequest = 8,  // worker → host
  kServiceReply = 9,    // host → worker
};
inline constexpr uint32_t kMaxFrameKind = 9;

// Publication. The first 8 bytes of a frame header (length | kind << 32) are its publication
// word: the producer writes the payload and the call id, zeroes the word of the slot after
// the frame (always free: a ring never fills its last 16 bytes), and then stores the word with
// release order. The consumer polls the word at its own position: 0 means nothing yet, so it
// reads the frame's own cache line rather than a shared tail, and only that line moves
// between the cores per frame.
struct FrameHeader {
  uint32_t length;  // payload bytes, excluding this header and padding
  uint32_t kind;    // a FrameKind; 0 while unpublished
  uint64_t call_id;
};
static_assert(sizeof(FrameHeader) == 16);
static_assert(std::is_trivially_copyable_v<FrameHeader>);
inline constexpr uint64_t PublicationWord(uint32_t length, uint32_t kind) {
  return uint64_t{length} | uint64_t{kind} << 32;
}
inline constexpr uint64_t kRingSlack = 16;  // never filled: room to clear the next slot

// Control words of one single-producer single-consumer ring. `head` and `tail` are byte
// positions that only grow (offset = position & (capacity - 1)); each is written by one side.
// The producer reads `head` for free space; the consumer never needs `tail` (frames carry
// their own publication word): it is kept for inspection only.
struct RingControl {
  alignas(64) std::atomic<uint64_t> head;  // written by the consumer
  alignas(64) std::atomic<uint64_t> tail;  // written by the producer; informational
  // Written by the consumer: 1 while it sleeps (or is about to), so the producer must wake it.
  alignas(64) std::atomic<uint32_t> consumer_sleeping;
  // Futex word the consumer sleeps on; the producer bumps it before a futex wake.
  std::atomic<uint32_t> wake_seq;
  // CLOCK_MONOTONIC ns of the producer's last futex wake: how late the consumer's spin missed
  // (SpinBudget). Informational; never trusted for more.
  std::atomic<int64_t> woken_at_ns;
};
static_assert(std::atomic<uint64_t>::is_always_lock_free);
static_assert(sizeof(RingControl) == 192);

// Written by the worker only; informational for the host (never trusted for decisions beyond
// what it reports about the worker itself).
struct WorkerBlock {
  alignas(64) std::atomic<uint32_t> state;       // a WorkerState
  std::atomic<int32_t> forbidden_syscall;        // set by the SIGSYS path before exiting, or -1
  std::atomic<uint32_t> landlock;  // 1 once the worker restricted itself with Landlock (its claim)
};

enum class WorkerState : uint32_t { kStarting = 0, kReady = 1, kBusy = 2, kStopped = 3 };

// Written by the host only; the worker reads it.
struct HostBlock {
  // The call the host gave up on (deadline): a handler polling mp_reply.cancelled sees it and
  // may return early. 0 = none.
  alignas(64) std::atomic<uint64_t> cancel_call_id;
  // 1 if the module was granted services (config "services"): the worker then copies each
  // call out of the ring before its handler runs, so that it can read the host's service
  // answers, which arrive behind it, while the handler still holds the call.
  std::atomic<uint32_t> services;
};

struct RingFileHeader {
  uint64_t magic;
  uint64_t request_capacity;   // host → worker ring, power of two
  uint64_t response_capacity;  // worker → host ring, power of two
  // Largest message in either direction, chunked or not (the module's maxMessageKb).
  // Host-written; the worker refuses to build or accept anything larger.
  uint64_t max_message_bytes;
  RingControl request;
  RingControl response;
  WorkerBlock worker;
  HostBlock host;
};
static_assert(sizeof(RingFileHeader) <= kRingHeaderBytes);
static_assert(std::is_standard_layout_v<RingFileHeader>);

}  // namespace mp::shm
