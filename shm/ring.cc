#include "shm/ring.h"

#include <sys/mman.h>

#include <atomic>
#include <bit>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace mp::shm {
namespace {

constexpr uint64_t AlignFrame(uint64_t n) { return (n + kFrameAlign - 1) & ~(kFrameAlign - 1); }

constexpr uint32_t KindBit(FrameKind k) { return 1u << static_cast<uint32_t>(k); }
constexpr uint32_t kRequestKinds = KindBit(FrameKind::kCall) | KindBit(FrameKind::kCancel) |
                                   KindBit(FrameKind::kStop) | KindBit(FrameKind::kChunk);
constexpr uint32_t kResponseKinds =
    KindBit(FrameKind::kReply) | KindBit(FrameKind::kError) | KindBit(FrameKind::kChunk);

bool ValidCapacity(uint64_t c) { return c >= 4096 && std::has_single_bit(c); }

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
  uint64_t offset = tail_ & (capacity_ - 1);
  const uint64_t to_end = capacity_ - offset;
  const uint64_t worst = need > to_end ? to_end + need : need;
  if (capacity_ - (tail_ - cached_head_) < worst) {
    const uint64_t head = control_->head.load(std::memory_order_acquire);  // read once
    if (head > tail_ || tail_ - head > capacity_ || head < cached_head_) {
      peer_corrupt_ = true;
      return nullptr;
    }
    cached_head_ = head;
  }
  const uint64_t free_bytes = capacity_ - (tail_ - cached_head_);
  if (need > to_end) {
    // Pad to the end and start at offset 0; both must fit.
    if (to_end + need > free_bytes) return nullptr;
    FrameHeader pad{static_cast<uint32_t>(to_end - sizeof(FrameHeader)),
                    static_cast<uint32_t>(FrameKind::kPad), 0};
    std::memcpy(data_ + offset, &pad, sizeof pad);
    tail_ += to_end;  // published together with the frame in Commit
    offset = 0;
  } else if (need > free_bytes) {
    return nullptr;
  }
  reserved_at_ = offset;
  return data_ + offset + sizeof(FrameHeader);
}

bool RingWriter::Commit(FrameKind kind, uint64_t call_id, uint64_t payload_bytes) noexcept {
  FrameHeader h{static_cast<uint32_t>(payload_bytes), static_cast<uint32_t>(kind), call_id};
  std::memcpy(data_ + reserved_at_, &h, sizeof h);
  tail_ += FrameBytes(payload_bytes);
  control_->tail.store(tail_, std::memory_order_release);
  // Pairs with the consumer's fence in AnnounceSleep: either it sees our tail, or we see its
  // flag (Dekker). Without the fence both could miss each other and the consumer sleeps on.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  return control_->consumer_sleeping.load(std::memory_order_relaxed) != 0;
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
    case RingViolation::kTailOutOfRange: return "tail_out_of_range";
    case RingViolation::kMisaligned: return "misaligned_tail";
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
      cached_tail_(head_),
      allowed_kinds_(allowed_kinds) {
  // The starting head comes from shared memory: a misaligned one would let Peek read a frame
  // header across the end of the data area. Refuse the ring instead.
  if (head_ % kFrameAlign != 0) violation_ = RingViolation::kMisaligned;
}

bool RingReader::Empty() const noexcept {
  return control_->tail.load(std::memory_order_acquire) == head_;
}

ReadStatus RingReader::Fail(RingViolation v) noexcept {
  violation_ = v;
  return ReadStatus::kViolation;
}

ReadStatus RingReader::Peek(FrameView* frame) noexcept {
  if (violation_ != RingViolation::kNone) return ReadStatus::kViolation;
  for (;;) {
    if (cached_tail_ == head_) {
      const uint64_t tail = control_->tail.load(std::memory_order_acquire);  // read once
      if (tail == head_) return ReadStatus::kEmpty;
      const uint64_t published = tail - head_;  // wraps huge if the tail moved backwards
      if (published > capacity_) return Fail(RingViolation::kTailOutOfRange);
      if (published % kFrameAlign != 0) return Fail(RingViolation::kMisaligned);
      cached_tail_ = tail;
    }
    const uint64_t avail = cached_tail_ - head_;
    const uint64_t offset = head_ & (capacity_ - 1);
    const uint64_t to_end = capacity_ - offset;
    FrameHeader h;
    std::memcpy(&h, data_ + offset, sizeof h);  // one read of peer-written bytes
    if (h.kind == static_cast<uint32_t>(FrameKind::kPad)) {
      if (h.length != to_end - sizeof(FrameHeader) || avail < to_end) {
        return Fail(RingViolation::kBadPadding);
      }
      head_ += to_end;
      control_->head.store(head_, std::memory_order_release);
      continue;
    }
    if (h.kind > kMaxFrameKind || (allowed_kinds_ & (1u << h.kind)) == 0) {
      return Fail(RingViolation::kBadKind);
    }
    if (h.length > MaxFramePayload(capacity_)) return Fail(RingViolation::kFrameTooLarge);
    const uint64_t bytes = RingWriter::FrameBytes(h.length);
    if (bytes > avail || bytes > to_end) return Fail(RingViolation::kLengthPastRing);
    frame->kind = static_cast<FrameKind>(h.kind);
    frame->call_id = h.call_id;
    frame->payload = {data_ + offset + sizeof(FrameHeader), h.length};
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
  control_->consumer_sleeping.store(1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_seq_cst);
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
