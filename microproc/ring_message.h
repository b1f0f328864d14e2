// Cap'n Proto messages over the rings, both directions.
//
// A message that fits one frame is built in place: FrameMessageBuilder hands Cap'n Proto the
// reserved frame as its only segment, so the message is never built elsewhere and copied in.
// A message larger than one frame (up to the module's maxMessageKb) travels as kChunk frames
// followed by one frame of the message's own kind; MessageAssembler puts it back together
// into private, word-aligned memory on the other side.
//
// Wire format of a message, in one frame or split over several: the standard Cap'n Proto
// stream framing (segment table, then segments), so capnp::FlatArrayMessageReader reads it.
#pragma once

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "shm/ring.h"

namespace mp::microproc {

// ---- Exact sizes ----
// Serialized bytes (segment table included) of a message built field by field into one
// segment, as FrameMessageBuilder does: Cap'n Proto allocates each object once, in order,
// with no gaps, so these are exact, not estimates.
struct HeaderSizes {
  size_t name;
  size_t value;
};
size_t CallMessageBytes(size_t method, size_t path, size_t query,
                        std::span<const HeaderSizes> headers, size_t body);
size_t ReplyMessageBytes(std::span<const HeaderSizes> headers, size_t body);
size_t ErrorMessageBytes(size_t message);

// ---- Building in place ----

// A MessageBuilder whose first segment is the payload of a frame reserved in a ring. The
// frame must be 8-aligned, `bytes` a multiple of 8 of at least 16 (the segment table takes
// the first word). The segment is zeroed when Cap'n Proto first asks for it, as it requires.
//
// If the message outgrows the frame (the size given was too small), further segments come
// from the heap and InFrame() turns false: the caller then sends
// capnp::messageToFlatArray(*this) as chunks instead (SendChunked) and leaves the frame
// uncommitted. Not thread-safe; one message per builder.
class FrameMessageBuilder final : public capnp::MessageBuilder {
 public:
  FrameMessageBuilder(std::byte* frame, size_t bytes) noexcept;
  ~FrameMessageBuilder() noexcept(false) override;

  kj::ArrayPtr<capnp::word> allocateSegment(unsigned int minimum_words) override;

  bool InFrame() const noexcept { return spilled_.empty(); }
  // Writes the segment table into the frame and returns the payload bytes to Commit.
  // Only when InFrame().
  size_t FinishInFrame() noexcept;

 private:
  capnp::word* segment_;   // the frame after its segment-table word
  size_t segment_words_;
  bool segment_given_ = false;
  std::vector<kj::Array<capnp::word>> spilled_;
};

// ---- Chunked messages ----

// Largest payload of one frame in a ring of `capacity` bytes; a message longer than this is
// sent as chunks.
inline uint64_t MaxFrameBytes(uint64_t capacity) { return shm::MaxFramePayload(capacity); }

// Sends one serialized message as frames: kChunk frames of MaxFrameBytes, then the rest as a
// frame of `kind`. Resumable: Pump() writes what fits now and is called again once the
// consumer has made room. Owns a private copy of the message.
class ChunkedSend {
 public:
  ChunkedSend(shm::FrameKind kind, uint64_t call_id, kj::Array<capnp::word> message) noexcept
      : kind_(kind), call_id_(call_id), message_(std::move(message)) {}

  // Writes frames until the ring is full or the message is sent; returns true once sent.
  // Sets `*wake` if the consumer announced it sleeps and must be woken.
  bool Pump(shm::RingWriter& ring, bool* wake) noexcept;

  uint64_t call_id() const noexcept { return call_id_; }
  uint64_t total_bytes() const noexcept { return message_.size() * sizeof(capnp::word); }
  uint64_t sent_bytes() const noexcept { return sent_; }

 private:
  shm::FrameKind kind_;
  uint64_t call_id_;
  kj::Array<capnp::word> message_;
  uint64_t sent_ = 0;
};

// ---- Sending: one path for both sides ----

// Builds the message that `fill(capnp::MessageBuilder&)` writes, of exact size `bytes`, to be
// sent on `out` as a frame of `kind`. With `frame` (a reservation of `bytes` in `out`) it is
// built there, in place, and committed; `*wake` says whether the consumer sleeps. Without one
// (the message is larger than a frame, or there is no room now), or if it outgrows the frame
// after all, it is built in private memory and returned as a ChunkedSend for the caller to
// pump: the host as the worker makes room, the worker waiting for room.
template <typename Fill>
std::optional<ChunkedSend> BuildMessage(shm::RingWriter& out, shm::FrameKind kind,
                                        uint64_t call_id, size_t bytes, std::byte* frame,
                                        Fill&& fill, bool* wake) {
  if (frame != nullptr) {
    FrameMessageBuilder message(frame, bytes);
    fill(static_cast<capnp::MessageBuilder&>(message));
    if (message.InFrame()) {
      *wake = out.Commit(kind, call_id, message.FinishInFrame()) || *wake;
      return std::nullopt;
    }
    return ChunkedSend(kind, call_id, capnp::messageToFlatArray(message));  // size was wrong
  }
  capnp::MallocMessageBuilder message(static_cast<unsigned>(bytes / sizeof(capnp::word)));
  fill(static_cast<capnp::MessageBuilder&>(message));
  return ChunkedSend(kind, call_id, capnp::messageToFlatArray(message));
}

// Reassembles a chunked message into private memory, refusing anything past `max_bytes`.
// Chunk payloads are copied out of the ring as they arrive: the result is private, and the
// frames can be released at once so that the sender can go on.
class MessageAssembler {
 public:
  explicit MessageAssembler(uint64_t max_bytes) noexcept : max_bytes_(max_bytes) {}

  // A kChunk frame's payload. Fails, naming the problem, if another call's message is in
  // progress or the message would pass the maximum.
  absl::Status AddChunk(uint64_t call_id, std::span<const std::byte> payload);

  // The final frame of a message in progress: appends it and returns the whole message,
  // valid until the next call on this assembler.
  absl::StatusOr<kj::ArrayPtr<const capnp::word>> Complete(uint64_t call_id,
                                                           std::span<const std::byte> payload);

  // Drops the message in progress, if any, and memory beyond a small buffer.
  void Reset() noexcept;

  bool active() const noexcept { return active_; }
  uint64_t call_id() const noexcept { return call_id_; }
  uint64_t bytes() const noexcept { return bytes_; }
  uint64_t max_bytes() const noexcept { return max_bytes_; }

 private:
  absl::Status Append(std::span<const std::byte> payload);
  uint64_t max_bytes_;
  bool active_ = false;
  uint64_t call_id_ = 0;
  uint64_t bytes_ = 0;
  std::vector<uint64_t> words_;  // 8-aligned storage for FlatArrayMessageReader
};

}  // namespace mp::microproc
