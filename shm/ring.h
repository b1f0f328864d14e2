// Single-producer single-consumer rings of frames in shared memory, and the ring memfd that
// holds one in each direction. Hot paths are noexcept and allocate nothing.
//
// Each endpoint keeps its own position and the capacity privately and never re-reads them from
// shared memory. The producer reads the consumer's head once per check and validates it; the
// consumer reads each frame's publication word once and validates length and kind
// (ring_layout.h, "Publication").
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "shm/ring_layout.h"
#include "shm/segment.h"

namespace mp::shm {

// Largest payload a ring of `capacity` bytes carries in one frame. Half the ring (less the
// header) guarantees a frame always fits once the ring drains, whatever the wrap position
// (a pad shorter than the frame, the frame, and the slack are at most the capacity).
constexpr uint64_t MaxFramePayload(uint64_t capacity) {
  return capacity / 2 - sizeof(FrameHeader);
}

// Producer end. Owned by exactly one thread of one process.
class RingWriter {
 public:
  RingWriter() = default;
  RingWriter(RingControl* control, std::byte* data, uint64_t capacity) noexcept;

  // Space for a frame with `payload_bytes` of payload; nullptr if the ring is full right now
  // or the frame exceeds MaxFramePayload. Write the payload there, then Commit. Nothing is
  // visible to the consumer before Commit; a reservation not committed is simply dropped by
  // the next Reserve.
  std::byte* Reserve(uint64_t payload_bytes) noexcept;

  // Publishes the reserved frame with `payload_bytes` (at most the reserved size) of payload.
  // Returns true if the consumer announced it is asleep, in which case the caller must wake it
  // (futex or eventfd, depending on the side).
  bool Commit(FrameKind kind, uint64_t call_id, uint64_t payload_bytes) noexcept;

  // Reserve + copy + Commit. Returns false if it does not fit now; sets `*wake` as Commit.
  bool TryWrite(FrameKind kind, uint64_t call_id, std::span<const std::byte> payload,
                bool* wake) noexcept;

  // Bytes a frame of `payload_bytes` occupies, padding included.
  static uint64_t FrameBytes(uint64_t payload_bytes) noexcept;

  // True if the consumer's head is impossible (ahead of our tail or further back than the
  // capacity): a hostile or broken consumer.
  bool PeerCorrupt() const noexcept { return peer_corrupt_; }
  uint64_t capacity() const noexcept { return capacity_; }

 private:
  RingControl* control_ = nullptr;
  std::byte* data_ = nullptr;
  uint64_t capacity_ = 0;
  uint64_t tail_ = 0;  // private copy; the shared tail is only ever written from it
  // The consumer's head as last read. Space only grows as the consumer advances, so the
  // shared head is re-read only when this copy leaves too little room: the head's cache line
  // then moves between cores once per ring's worth of frames, not once per frame.
  uint64_t cached_head_ = 0;
  uint64_t reserved_at_ = 0;  // offset of the reserved frame
  uint64_t pad_ = 0;          // bytes of pad before it (it wraps to offset 0), or 0
  bool peer_corrupt_ = false;
};

// A frame as seen by the consumer. `payload` points into shared memory: a reader that does not
// trust the producer must copy it before validating it.
struct FrameView {
  FrameKind kind;
  uint64_t call_id;
  std::span<const std::byte> payload;
};

enum class ReadStatus { kEmpty, kFrame, kViolation };

// Why a frame was refused. Stable names: they appear in logs, errors and metrics.
enum class RingViolation {
  kNone,
  kMisaligned,       // a starting head not on a frame boundary
  kLengthPastRing,   // frame running past the ring's end
  kFrameTooLarge,    // longer than the configured maximum
  kBadKind,          // unknown kind, or a kind this direction never carries
  kBadPadding,       // a pad frame that does not end exactly at the ring's end
};
absl::string_view RingViolationName(RingViolation v) noexcept;

// Consumer end. Owned by exactly one thread of one process.
class RingReader {
 public:
  RingReader() = default;
  // `allowed_kinds` is a bit set of (1 << FrameKind) this direction may carry.
  RingReader(RingControl* control, const std::byte* data, uint64_t capacity,
             uint32_t allowed_kinds) noexcept;

  // Looks at the next frame without consuming it. On kViolation, `violation()` says why and
  // the reader must stop using this ring.
  ReadStatus Peek(FrameView* frame) noexcept;

  // Consumes the frame Peek returned.
  void Pop() noexcept;

  // True if no frame is published at our position.
  bool Empty() const noexcept;

  // A hint for spin loops: false while the producer's shared tail says nothing was added. It
  // reads the tail's cache line, which the producer writes once per frame, instead of the
  // frame slot it may be building a message in (polling that line would pull it away from
  // the producer at every store). Never trusted: only Peek and Empty decide.
  bool MaybeReady() const noexcept {
    return control_->tail.load(std::memory_order_relaxed) != head_;
  }

  // The sleep protocol. Consumer: announce → re-check Empty() → wait → ClearSleeping.
  // Producer: publish the frame → read the flag with a read-modify-write (Commit does this).
  // Returns the futex value to wait on.
  uint32_t AnnounceSleep() noexcept;
  void ClearSleeping() noexcept;
  RingControl* control() const noexcept { return control_; }

  RingViolation violation() const noexcept { return violation_; }
  uint64_t capacity() const noexcept { return capacity_; }

 private:
  ReadStatus Fail(RingViolation v) noexcept;
  RingControl* control_ = nullptr;
  const std::byte* data_ = nullptr;
  uint64_t capacity_ = 0;
  uint64_t head_ = 0;  // private copy
  uint64_t pending_ = 0;  // bytes Pop() will consume
  uint32_t allowed_kinds_ = 0;
  RingViolation violation_ = RingViolation::kNone;
};

// The memfd holding both rings of one microprocess. The host creates it and keeps the
// capacities; the worker adopts it and must check them against its mapping.
class RingFile {
 public:
  // Creates and initializes a ring memfd; capacities must be powers of two ≥ 4096.
  // `max_message_bytes` bounds a message in either direction (see kChunk).
  static absl::StatusOr<RingFile> Create(absl::string_view name, uint64_t request_capacity,
                                         uint64_t response_capacity,
                                         uint64_t max_message_bytes = 1 << 20);
  // Maps a ring memfd made by Create in another process and validates its header.
  static absl::StatusOr<RingFile> Attach(UniqueFd fd);

  // Host side: writes requests, reads responses.
  RingWriter RequestWriter() noexcept;
  RingReader ResponseReader() noexcept;
  // Worker side: reads requests, writes responses.
  RingReader RequestReader() noexcept;
  RingWriter ResponseWriter() noexcept;

  RingFileHeader* header() const noexcept {
    return static_cast<RingFileHeader*>(mapping_.data());
  }
  const Segment& segment() const noexcept { return segment_; }
  uint64_t request_capacity() const noexcept { return request_capacity_; }
  uint64_t response_capacity() const noexcept { return response_capacity_; }
  // As created (host) or as read once at Attach (worker).
  uint64_t max_message_bytes() const noexcept { return max_message_bytes_; }

 private:
  RingFile(Segment segment, Mapping mapping, uint64_t req, uint64_t resp, uint64_t max_message)
      : segment_(std::move(segment)),
        mapping_(std::move(mapping)),
        request_capacity_(req),
        response_capacity_(resp),
        max_message_bytes_(max_message) {}
  Segment segment_;
  Mapping mapping_;
  uint64_t request_capacity_;
  uint64_t response_capacity_;
  uint64_t max_message_bytes_;
};

}  // namespace mp::shm
