// libFuzzer target for the two places where worker-written bytes reach the host: the response
// ring (shm::RingReader over a ring whose control words and data a hostile worker wrote) and
// the decoder of what it delivers (microproc::MessageAssembler for chunked replies, then
// host::DecodeResponse, or host::DecodeServiceRequest for a handler's service request). Built only with -DMP_FUZZ=ON (clang);
// see docs/fuzzing.md.
//
// Input format. Byte 0 selects the mode:
//   bit 7 clear  decoder mode: DecodeResponse(FrameKind(byte0 & 7), bytes 1..). Kinds 0..7 cover
//                reply, error, the kinds a response never carries and two that do not exist.
//   bit 7 set    ring mode, bytes after byte 0:
//                  [u64 head][u16 delta][u8 moves][moves & 3 × u16 more][ring bytes...]
//                head is the response ring's consumer position, rounded down to a multiple
//                of kFrameAlign (see below); the shared tail is set to head + delta (head -
//                delta if byte0 bit 6 is set) and moved by each `more` when the reader finds
//                the ring empty: the reader must ignore it (frames carry their own
//                publication words). The ring bytes are written at the head's offset in the
//                data area, wrapping at the end, at most one capacity.
// Every frame the reader returns is checked to lie inside the data area, then copied and
// decoded. Broken invariants abort (a libFuzzer crash); so do ASan and UBSan reports.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "host/reply_rules.h"
#include "host/service_codec.h"
#include "host/response_decoder.h"
#include "microproc/ring_message.h"
#include "shm/ring.h"
#include "shm/ring_layout.h"

namespace {

using mp::host::DecodeResponse;
using mp::shm::FrameKind;

constexpr uint64_t kCapacity = 4096;  // request and response rings alike
constexpr int kMaxSteps = 1024;       // Peek/Pop rounds per input: a frame takes ≥ 16 bytes
constexpr uint64_t kMaxMessage = 16384;  // the assembler's limit: four rings' worth

[[noreturn]] void Broken(const char* what) {
  std::fprintf(stderr, "response_fuzzer: invariant broken: %s\n", what);
  std::abort();
}

// What a decoded response must satisfy, whatever the input.
// A service request (ABI 1.1), as the host decodes it: from an 8-aligned private copy.
void CheckServiceRequest(const std::string& payload) {
  if (payload.size() % 8 != 0) return;  // the host kills a worker for it before decoding
  std::vector<uint64_t> words(payload.size() / 8);
  if (!payload.empty()) std::memcpy(words.data(), payload.data(), payload.size());
  auto r = mp::host::DecodeServiceRequest(
      kj::arrayPtr(reinterpret_cast<const capnp::word*>(words.data()), words.size()));
  if (!r.ok()) {
    if (r.status().message().empty()) Broken("a service request refused without a message");
    return;
  }
  if (r->service.empty() || r->service.size() > 32) Broken("accepted a service name out of bounds");
  if (r->is_redis && r->argv.empty()) Broken("accepted a Redis request without a command");
  if (!r->is_redis && (r->call.path.empty() || r->call.path[0] != '/')) {
    Broken("accepted a module call whose path does not start with /");
  }
}

void CheckDecoded(FrameKind kind, const std::string& payload) {
  if (kind == FrameKind::kServiceRequest) {
    CheckServiceRequest(payload);
    return;
  }
  auto r = DecodeResponse(kind, payload);
  if (!r.ok()) {
    if (r.status().message().empty()) Broken("a refusal without a message");
    return;
  }
  if (kind != FrameKind::kReply && kind != FrameKind::kError) Broken("accepted a foreign kind");
  if (r->is_error != (kind == FrameKind::kError)) Broken("is_error does not match the kind");
  if (r->error_message.size() > 512) Broken("error message longer than 512 bytes");
  if (!r->is_error) {
    // What would reach a client: the reply rules either refuse it (with a reason) or leave a
    // final status and valid headers, none of them the host's.
    mp::host::HeaderList headers = r->headers;
    auto allowed = mp::host::ApplyReplyRules(r->status, &headers);
    if (!allowed.ok()) {
      if (allowed.message().empty()) Broken("a reply refused without a reason");
      return;
    }
    if (r->status < 200 || r->status > 599) Broken("let a status outside 200-599 out");
    for (const auto& [name, value] : headers) {
      if (!mp::host::IsValidHeaderName(name) || !mp::host::IsValidHeaderValue(value)) {
        Broken("let an invalid header out");
      }
      if (mp::host::IsHostOwnedHeader(name)) Broken("let a host-owned header out");
    }
  }
}

class FuzzRing {
 public:
  FuzzRing() {
    auto ring = mp::shm::RingFile::Create("response_fuzzer", kCapacity, kCapacity);
    if (!ring.ok()) {
      std::fprintf(stderr, "response_fuzzer: %s\n", std::string(ring.status().message()).c_str());
      std::abort();
    }
    ring_ = new mp::shm::RingFile(*std::move(ring));  // lives as long as the fuzzing process
    data_ = reinterpret_cast<std::byte*>(ring_->header()) + mp::shm::kRingHeaderBytes +
            ring_->request_capacity();
  }

  void Run(const uint8_t* in, size_t size) {
    const bool backwards = (in[0] & 0x40) != 0;
    ++in, --size;
    uint64_t head = 0;
    uint16_t delta = 0;
    uint8_t moves = 0;
    Take(in, size, &head);
    // The reader takes its starting head from shared memory and trusts it. The host builds its
    // reader before the worker exists (Supervisor::SpawnWorker), so that head is always the
    // host's own: a sum of whole frames. A misaligned head would let Peek read a frame header
    // up to 15 bytes past the data area, which no worker can cause; only the tail and the
    // bytes are hostile here.
    head &= ~(mp::shm::kFrameAlign - 1);
    Take(in, size, &delta);
    Take(in, size, &moves);
    uint16_t more[3] = {};
    const int n_more = moves & 3;
    for (int i = 0; i < n_more; ++i) Take(in, size, &more[i]);

    // The worker's writes: the control words and the data area.
    auto& control = ring_->header()->response;
    std::memset(data_, 0, kCapacity);
    for (size_t i = 0; i < size && i < kCapacity; ++i) {
      data_[(head + i) & (kCapacity - 1)] = static_cast<std::byte>(in[i]);
    }
    uint64_t tail = backwards ? head - delta : head + delta;
    control.head.store(head);
    control.tail.store(tail);
    control.consumer_sleeping.store(0);

    mp::shm::RingReader reader = ring_->ResponseReader();
    mp::microproc::MessageAssembler chunks(kMaxMessage);
    int next_move = 0;
    for (int step = 0; step < kMaxSteps; ++step) {
      const uint64_t before = control.head.load();
      mp::shm::FrameView frame{};
      const mp::shm::ReadStatus status = reader.Peek(&frame);
      if (status == mp::shm::ReadStatus::kViolation) {
        if (reader.violation() == mp::shm::RingViolation::kNone) Broken("violation without a cause");
        if (reader.Peek(&frame) != mp::shm::ReadStatus::kViolation) Broken("violation forgotten");
        return;
      }
      if (status == mp::shm::ReadStatus::kEmpty) {
        if (next_move == n_more) return;
        tail += more[next_move++];
        control.tail.store(tail);
        continue;
      }
      CheckFrame(frame);
      // As the host: chunks are copied into the assembler; a last frame completes the message,
      // or is copied out of shared memory on its own, before it is decoded.
      if (frame.kind == FrameKind::kChunk) {
        if (chunks.AddChunk(frame.call_id, frame.payload).ok() && chunks.bytes() > kMaxMessage) {
          Broken("assembled past the maximum");
        }
      } else if (chunks.active()) {
        auto whole = chunks.Complete(frame.call_id, frame.payload);
        if (whole.ok()) {
          if (whole->size() * 8 > kMaxMessage) Broken("completed past the maximum");
          CheckDecoded(frame.kind, std::string(reinterpret_cast<const char*>(whole->begin()),
                                               whole->size() * 8));
        }
        chunks.Reset();
      } else {
        std::string copy(reinterpret_cast<const char*>(frame.payload.data()), frame.payload.size());
        CheckDecoded(frame.kind, copy);
      }
      reader.Pop();
      // One frame, after at most one pad that reached the ring's end.
      const uint64_t advance = control.head.load() - before;
      const uint64_t bytes = mp::shm::RingWriter::FrameBytes(frame.payload.size());
      if (advance < bytes || advance > kCapacity) Broken("head moved by more than the frame");
    }
  }

 private:
  template <typename T>
  static void Take(const uint8_t*& in, size_t& size, T* out) {
    if (size < sizeof(T)) return;
    std::memcpy(out, in, sizeof(T));
    in += sizeof(T);
    size -= sizeof(T);
  }

  void CheckFrame(const mp::shm::FrameView& frame) const {
    if (frame.kind != FrameKind::kReply && frame.kind != FrameKind::kError &&
        frame.kind != FrameKind::kChunk && frame.kind != FrameKind::kServiceRequest) {
      Broken("delivered a kind the response ring never carries");
    }
    const std::byte* begin = frame.payload.data();
    const std::byte* end = begin + frame.payload.size();
    if (begin < data_ + sizeof(mp::shm::FrameHeader) || end > data_ + kCapacity) {
      Broken("payload outside the data area");
    }
    if ((begin - data_) % 8 != 0) Broken("payload not 8-byte aligned");
    if (frame.payload.size() > mp::shm::MaxFramePayload(kCapacity)) Broken("payload too large");
  }

  mp::shm::RingFile* ring_;
  std::byte* data_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  if ((data[0] & 0x80) == 0) {
    CheckDecoded(static_cast<FrameKind>(data[0] & 7),
                 std::string(reinterpret_cast<const char*>(data) + 1, size - 1));
    return 0;
  }
  static FuzzRing* ring = new FuzzRing();
  ring->Run(data, size);
  return 0;
}
