#include "shm/ring.h"

#include <sys/mman.h>

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace mp::shm {
namespace {

constexpr uint64_t AlignFrame(uint64_t n) { return (n + kFrameAlign - 1) & ~(kFrameAlign - 1); }

constexpr uint32_t KindBit(FrameKind k) { return 1u << static_cast<uint32_t>(k); }
constexpr uint32_t kRequestKinds = KindBit(FrameKind::kCall) | KindBit(FrameKind::kCancel) |
                                   KindBit(FrameKind::kStop) | KindBit(FrameKind::kChunk) |
                                   KindBit(FrameKind::kServiceReply);
constexpr uint32_t kResponseKinds = KindBit(FrameKind::kReply) | KindBit(FrameKind::kError) |
                                    KindBit(FrameKind::kChunk) |
                                    KindBit(FrameKind::kServiceRequest);

bool ValidCapacity(uint64_t c) { return c >= 4096 && std::has_single_bit(c); }

}  // namespace

// ---- Publication words ----

namespace {

// The publication word of the frame at `offset` (8-aligned: offsets are multiples of 16).
std::atomic_ref<uint64_t> Word(std::byte* data, uint64_t offset) noexcept {
  return std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(data + offset));
}
uint64_t LoadWord(const std::byte* data, uint64_t offset) noexcept {
  // atomic_ref needs a non-const object; the load does not write.
  return Word(const_cast<std::byte*>(data), offset).load(std::memory_order_acquire);
}

}  // namespace

// ---- RingWriter ----

RingWriter::RingWriter(RingControl* control, std::byte* data, uint64_t capacity) noexcept
    : control_(control),
      data_(data),
      capacity_(capacity),
      tail_(control->tail.load(std::memory_order_relaxed)),
      cached_head_(control->head.load(std::memory_order_relaxed)) {}

uint64_t RingWriter::FrameBytes(uint64_t payload_bytes) noexcept {
  return sizeof(FrameHeader) + AlignFrame(payload_bytes);
}

std::byte* RingWriter::Reserve(uint64_t payload_bytes) noexcept {
  if (payload_bytes > MaxFramePayload(capacity_) || peer_corrupt_) return nullptr;
  const uint64_t need = FrameBytes(payload_bytes);
  const uint64_t offset = tail_ & (capacity_ - 1);
  const uint64_t to_end = capacity_ - offset;
  pad_ = need > to_end ? to_end : 0;  // pad to the end and start at offset 0
  const uint64_t total = pad_ + need + kRingSlack;
  if (capacity_ - (tail_ - cached_head_) < total) {
    const uint64_t head = control_->head.load(std::memory_order_acquire);  // read once
    if (head > tail_ || tail_ - head > capacity_ || head < cached_head_) {
      peer_corrupt_ = true;
      return nullptr;
    }
    cached_head_ = head;
    if (capacity_ - (tail_ - cached_head_) < total) return nullptr;
  }
  reserved_at_ = pad_ != 0 ? 0 : offset;
  return data_ + reserved_at_ + sizeof(FrameHeader);
}

bool RingWriter::Commit(FrameKind kind, uint64_t call_id, uint64_t payload_bytes) noexcept {
  std::memcpy(data_ + reserved_at_ + offsetof(FrameHeader, call_id), &call_id, sizeof call_id);
  const uint64_t next = tail_ + pad_ + FrameBytes(payload_bytes);
  // The slot after this frame reads "nothing yet" before this frame reads published.
  Word(data_, next & (capacity_ - 1)).store(0, std::memory_order_relaxed);
  Word(data_, reserved_at_)
      .store(PublicationWord(static_cast<uint32_t>(payload_bytes), static_cast<uint32_t>(kind)),
             std::memory_order_release);
  if (pad_ != 0) {
    // Published after the frame it leads to: a consumer that skips it finds the frame there.
    Word(data_, tail_ & (capacity_ - 1))
        .store(PublicationWord(static_cast<uint32_t>(pad_ - sizeof(FrameHeader)),
                               static_cast<uint32_t>(FrameKind::kPad)),
               std::memory_order_release);
  }
  tail_ = next;
  pad_ = 0;
  control_->tail.store(tail_, std::memory_order_release);  // a hint (MaybeReady), never trusted
  // Pairs with the consumer's exchange in AnnounceSleep (Dekker, on one word): the two
  // read-modify-writes of the flag are ordered. Ours first: its exchange synchronizes with it
  // and its re-check sees our word. Its first: we read its 1 and wake it. A plain load, even
  // after a fence, could let both miss each other; an RMW says so without a fence (which
  // ThreadSanitizer cannot check).
  return control_->consumer_sleeping.fetch_add(0, std::memory_order_acq_rel) != 0;
}

bool RingWriter::TryWrite(FrameKind kind, uint64_t call_id, std::span<const std::byte> payload,
                          bool* wake) noexcept {
  std::byte* p = Reserve(payload.size());
  if (p == nullptr) return false;
  if (!payload.empty()) std::memcpy(p, payload.data(), payload.size());
  *wake = Commit(kind, call_id, payload.size());
  return true;
}

// ---- RingReader ----

absl::string_view RingViolationName(RingViolation v) noexcept {
  switch (v) {
    case RingViolation::kNone: return "none";
    case RingViolation::kMisaligned: return "misaligned_head";
    case RingViolation::kLengthPastRing: return "length_past_ring";
    case RingViolation::kFrameTooLarge: return "frame_too_large";
    case RingViolation::kBadKind: return "bad_kind";
    case RingViolation::kBadPadding: return "bad_padding";
  }
  return "unknown";
}

RingReader::RingReader(RingControl* control, const std::byte* data, uint64_t capacity,
                       uint32_t allowed_kinds) noexcept
    : control_(control),
      data_(data),
      capacity_(capacity),
      head_(control->head.load(std::memory_order_relaxed)),
      allowed_kinds_(allowed_kinds) {
  // The starting head comes from shared memory: a misaligned one would let Peek read a frame
  // header across the end of the data area. Refuse the ring instead.
  if (head_ % kFrameAlign != 0) violation_ = RingViolation::kMisaligned;
}

bool RingReader::Empty() const noexcept {
  return LoadWord(data_, head_ & (capacity_ - 1)) == 0;
}

ReadStatus RingReader::Fail(RingViolation v) noexcept {
  violation_ = v;
  return ReadStatus::kViolation;
}

ReadStatus RingReader::Peek(FrameView* frame) noexcept {
  if (violation_ != RingViolation::kNone) return ReadStatus::kViolation;
  for (;;) {
    const uint64_t offset = head_ & (capacity_ - 1);
    const uint64_t to_end = capacity_ - offset;
    const uint64_t word = LoadWord(data_, offset);  // one read of the peer-written word
    if (word == 0) return ReadStatus::kEmpty;
    const auto length = static_cast<uint32_t>(word);
    const auto kind = static_cast<uint32_t>(word >> 32);
    if (kind == static_cast<uint32_t>(FrameKind::kPad)) {
      // A pad reaches exactly the ring's end, and never starts at offset 0 (it would lead
      // back to itself: this loop would never end).
      if (length != to_end - sizeof(FrameHeader) || offset == 0) {
        return Fail(RingViolation::kBadPadding);
      }
      head_ += to_end;
      control_->head.store(head_, std::memory_order_release);
      continue;
    }
    if (kind > kMaxFrameKind || (allowed_kinds_ & (1u << kind)) == 0) {
      return Fail(RingViolation::kBadKind);
    }
    if (length > MaxFramePayload(capacity_)) return Fail(RingViolation::kFrameTooLarge);
    const uint64_t bytes = RingWriter::FrameBytes(length);
    if (bytes > to_end) return Fail(RingViolation::kLengthPastRing);
    frame->kind = static_cast<FrameKind>(kind);
    std::memcpy(&frame->call_id, data_ + offset + offsetof(FrameHeader, call_id),
                sizeof frame->call_id);
    frame->payload = {data_ + offset + sizeof(FrameHeader), length};
    pending_ = bytes;
    return ReadStatus::kFrame;
  }
}

void RingReader::Pop() noexcept {
  head_ += pending_;
  pending_ = 0;
  control_->head.store(head_, std::memory_order_release);
}

uint32_t RingReader::AnnounceSleep() noexcept {
  // Pairs with the producer's read-modify-write of the flag (Commit, or
  // WakeFutexConsumerIfSleeping): the caller re-checks the ring after this.
  control_->consumer_sleeping.exchange(1, std::memory_order_acq_rel);
  return control_->wake_seq.load(std::memory_order_acquire);
}

void RingReader::ClearSleeping() noexcept {
  control_->consumer_sleeping.store(0, std::memory_order_relaxed);
}

// ---- RingFile ----

absl::StatusOr<RingFile> RingFile::Create(absl::string_view name, uint64_t request_capacity,
                                          uint64_t response_capacity,
                                          uint64_t max_message_bytes) {
  if (!ValidCapacity(request_capacity) || !ValidCapacity(response_capacity)) {
    return absl::InvalidArgumentError(absl::StrCat("ring ", name, ": capacities ",
                                                   request_capacity, "/", response_capacity,
                                                   " must be powers of two of at least 4096"));
  }
  auto seg = Segment::Create(name, kRingHeaderBytes + request_capacity + response_capacity);
  if (!seg.ok()) return seg.status();
  auto map = seg->MapShared(PROT_READ | PROT_WRITE);
  if (!map.ok()) return map.status();
  auto* h = new (map->data()) RingFileHeader{};
  h->request_capacity = request_capacity;
  h->response_capacity = response_capacity;
  h->max_message_bytes = max_message_bytes;
  h->worker.forbidden_syscall.store(-1, std::memory_order_relaxed);
  h->magic = kRingMagic;
  return RingFile(*std::move(seg), *std::move(map), request_capacity, response_capacity,
                  max_message_bytes);
}

absl::StatusOr<RingFile> RingFile::Attach(UniqueFd fd) {
  auto seg = Segment::Adopt(std::move(fd), "ring");
  if (!seg.ok()) return seg.status();
  if (seg->size() < kRingHeaderBytes) return absl::DataLossError("ring: memfd too small");
  auto map = seg->MapShared(PROT_READ | PROT_WRITE);
  if (!map.ok()) return map.status();
  const auto* h = static_cast<const RingFileHeader*>(map->data());
  const uint64_t req = h->request_capacity, resp = h->response_capacity;
  const uint64_t max_message = h->max_message_bytes;
  if (h->magic != kRingMagic || !ValidCapacity(req) || !ValidCapacity(resp) ||
      kRingHeaderBytes + req + resp != seg->size() || max_message == 0 ||
      max_message > kMaxMessageBytesLimit) {
    return absl::DataLossError("ring: header does not match the memfd");
  }
  return RingFile(*std::move(seg), *std::move(map), req, resp, max_message);
}

RingWriter RingFile::RequestWriter() noexcept {
  return RingWriter(&header()->request, mapping_.bytes() + kRingHeaderBytes, request_capacity_);
}
RingReader RingFile::ResponseReader() noexcept {
  return RingReader(&header()->response,
                    mapping_.bytes() + kRingHeaderBytes + request_capacity_, response_capacity_,
                    kResponseKinds);
}
RingReader RingFile::RequestReader() noexcept {
  return RingReader(&header()->request, mapping_.bytes() + kRingHeaderBytes, request_capacity_,
                    kRequestKinds);
}
RingWriter RingFile::ResponseWriter() noexcept {
  return RingWriter(&header()->response,
                    mapping_.bytes() + kRingHeaderBytes + request_capacity_, response_capacity_);
}

}  // namespace mp::shm
