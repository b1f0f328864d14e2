#include "microproc/ring_message.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "schemas/call.capnp.h"

namespace mp::microproc {
namespace {

constexpr size_t kWord = sizeof(capnp::word);

template <typename T>
constexpr size_t StructWords() {
  return T::_capnpPrivate::dataWordSize + T::_capnpPrivate::pointerCount;
}
size_t TextWords(size_t bytes) { return (bytes + 1 + kWord - 1) / kWord; }  // with its NUL
size_t DataWords(size_t bytes) { return (bytes + kWord - 1) / kWord; }
size_t HeaderListWords(std::span<const HeaderSizes> headers) {
  size_t words = 1 + headers.size() * StructWords<call::Header>();  // tag word + elements
  for (const HeaderSizes& h : headers) words += TextWords(h.name) + TextWords(h.value);
  return words;
}
// One-segment table (segment count - 1, then the size) + the root pointer.
constexpr size_t kFramingWords = 2;

// A message held privately below this size keeps its buffer for the next one.
constexpr size_t kKeepAssemblyBytes = 1 << 20;

}  // namespace

size_t CallMessageBytes(size_t method, size_t path, size_t query,
                        std::span<const HeaderSizes> headers, size_t body) {
  return kWord * (kFramingWords + StructWords<call::Call>() + TextWords(method) +
                  TextWords(path) + TextWords(query) + HeaderListWords(headers) +
                  DataWords(body));
}

size_t ReplyMessageBytes(std::span<const HeaderSizes> headers, size_t body) {
  return kWord * (kFramingWords + StructWords<call::Reply>() + HeaderListWords(headers) +
                  DataWords(body));
}

size_t ErrorMessageBytes(size_t message) {
  return kWord * (kFramingWords + StructWords<call::Error>() + TextWords(message));
}

// ---- FrameMessageBuilder ----

FrameMessageBuilder::FrameMessageBuilder(std::byte* frame, size_t bytes) noexcept
    : segment_(reinterpret_cast<capnp::word*>(frame) + 1),
      segment_words_(bytes / kWord - 1) {}

FrameMessageBuilder::~FrameMessageBuilder() noexcept(false) = default;

kj::ArrayPtr<capnp::word> FrameMessageBuilder::allocateSegment(unsigned int minimum_words) {
  if (!segment_given_ && minimum_words <= segment_words_) {
    segment_given_ = true;
    // Ring memory holds earlier frames: Cap'n Proto requires a zeroed segment.
    std::memset(segment_, 0, segment_words_ * kWord);
    return kj::arrayPtr(segment_, segment_words_);
  }
  segment_given_ = true;
  const size_t words = std::max<size_t>(minimum_words, 1024);
  auto spill = kj::heapArray<capnp::word>(words);
  std::memset(spill.begin(), 0, words * kWord);
  kj::ArrayPtr<capnp::word> out = spill;
  spilled_.push_back(std::move(spill));
  return out;
}

size_t FrameMessageBuilder::FinishInFrame() noexcept {
  auto segments = getSegmentsForOutput();
  const uint32_t used = segments.size() == 1 ? static_cast<uint32_t>(segments[0].size()) : 0;
  const uint32_t table[2] = {0, used};  // segment count - 1, segment 0's words
  std::memcpy(segment_ - 1, table, sizeof table);
  return kWord * (1 + used);
}

// ---- ChunkedSend ----

bool ChunkedSend::Pump(shm::RingWriter& ring, bool* wake) noexcept {
  const auto* bytes = reinterpret_cast<const std::byte*>(message_.begin());
  const uint64_t total = total_bytes();
  const uint64_t max_frame = MaxFrameBytes(ring.capacity()) & ~uint64_t{kWord - 1};
  while (sent_ < total || total == 0) {
    const uint64_t rest = total - sent_;
    const bool last = rest <= max_frame;
    const uint64_t n = last ? rest : max_frame;
    bool w = false;
    if (!ring.TryWrite(last ? kind_ : shm::FrameKind::kChunk, call_id_, {bytes + sent_, n}, &w)) {
      return false;
    }
    *wake = *wake || w;
    sent_ += n;
    if (last) return true;
  }
  return true;
}

// ---- MessageAssembler ----

absl::Status MessageAssembler::Append(std::span<const std::byte> payload) {
  if (payload.size() > max_bytes_ - bytes_) {
    return absl::OutOfRangeError(absl::StrCat("message of more than ", bytes_ + payload.size(),
                                              " bytes, past the maximum of ", max_bytes_));
  }
  const uint64_t end = bytes_ + payload.size();
  words_.resize((end + kWord - 1) / kWord);
  // One copy out of shared memory; the peer may rewrite the frame after this.
  if (!payload.empty()) {
    std::memcpy(reinterpret_cast<std::byte*>(words_.data()) + bytes_, payload.data(),
                payload.size());
  }
  bytes_ = end;
  return absl::OkStatus();
}

absl::Status MessageAssembler::AddChunk(uint64_t call_id, std::span<const std::byte> payload) {
  if (active_ && call_id != call_id_) {
    return absl::FailedPreconditionError(
        absl::StrCat("chunk of call ", call_id, " while call ", call_id_, "'s message is in progress"));
  }
  if (!active_) {
    active_ = true;
    call_id_ = call_id;
    bytes_ = 0;
  }
  return Append(payload);
}

absl::StatusOr<kj::ArrayPtr<const capnp::word>> MessageAssembler::Complete(
    uint64_t call_id, std::span<const std::byte> payload) {
  if (!active_ || call_id != call_id_) {
    return absl::FailedPreconditionError(
        absl::StrCat("last frame of call ", call_id, " without its chunks"));
  }
  if (auto s = Append(payload); !s.ok()) return s;
  active_ = false;
  if (bytes_ % kWord != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunked message of ", bytes_, " bytes is not a whole number of words"));
  }
  return kj::arrayPtr(reinterpret_cast<const capnp::word*>(words_.data()), bytes_ / kWord);
}

void MessageAssembler::Reset() noexcept {
  active_ = false;
  call_id_ = 0;
  bytes_ = 0;
  if (words_.capacity() * kWord > kKeepAssemblyBytes) {
    std::vector<uint64_t>().swap(words_);
  } else {
    words_.clear();
  }
}

}  // namespace mp::microproc
