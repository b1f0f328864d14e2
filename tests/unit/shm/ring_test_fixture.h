// Shared by the ring tests: a ring file with both ends of both rings, and helpers that drive
// frames through it or write its shared words by hand as a hostile peer would.
#pragma once

#include <time.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <span>
#include <vector>

#include "gtest/gtest.h"
#include "shm/ring.h"

namespace mp::shm::testutil {

constexpr uint64_t kCap = 4096;
constexpr uint64_t kMax = MaxFramePayload(kCap);
static_assert(kMax == 2032);

// Deterministic bytes that differ per frame, so a frame read from the wrong place shows.
inline std::vector<std::byte> Pattern(size_t n, uint64_t seed) {
  std::vector<std::byte> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>((i * 131 + seed * 7 + 1) & 0xff);
  return v;
}

inline bool SameBytes(std::span<const std::byte> a, std::span<const std::byte> b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
}

inline int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

class RingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto f = RingFile::Create("ring_test", kCap, kCap);
    ASSERT_TRUE(f.ok()) << f.status();
    file_.emplace(*std::move(f));
    host_out_ = file_->RequestWriter();
    worker_in_ = file_->RequestReader();
    worker_out_ = file_->ResponseWriter();
    host_in_ = file_->ResponseReader();
  }

  RingControl& request() { return file_->header()->request; }
  std::byte* request_data() {
    return reinterpret_cast<std::byte*>(file_->header()) + kRingHeaderBytes;
  }
  // Writes a frame header straight into the request ring, as a hostile producer would.
  void PutHeader(uint64_t offset, uint32_t length, uint32_t kind, uint64_t call_id = 9) {
    FrameHeader h{length, kind, call_id};
    std::memcpy(request_data() + offset, &h, sizeof h);
  }
  // One request frame through the real writer and reader, checked on the way.
  void RoundTrip(uint64_t payload_bytes, uint64_t call_id) {
    auto payload = Pattern(payload_bytes, call_id);
    bool wake = true;
    ASSERT_TRUE(host_out_.TryWrite(FrameKind::kCall, call_id, payload, &wake));
    EXPECT_FALSE(wake);
    FrameView f;
    ASSERT_EQ(worker_in_.Peek(&f), ReadStatus::kFrame) << RingViolationName(worker_in_.violation());
    EXPECT_EQ(f.kind, FrameKind::kCall);
    EXPECT_EQ(f.call_id, call_id);
    EXPECT_TRUE(SameBytes(f.payload, payload)) << "payload of " << payload_bytes << " bytes";
    EXPECT_EQ(reinterpret_cast<uintptr_t>(f.payload.data()) % 8, 0u);
    worker_in_.Pop();
    EXPECT_TRUE(worker_in_.Empty());
  }
  // Moves both ends of the request ring (empty) to ring offset `target` with plain frames.
  void AdvanceTo(uint64_t target) {
    uint64_t pos = request().tail.load();
    for (int guard = 0; (pos & (kCap - 1)) != target && guard < 8; ++guard) {
      const uint64_t offset = pos & (kCap - 1);
      const uint64_t delta = (target - offset) & (kCap - 1);
      const uint64_t chunk = std::min({delta, kCap - offset, kCap / 2});
      ASSERT_NO_FATAL_FAILURE(RoundTrip(chunk - sizeof(FrameHeader), 1000 + guard));
      pos = request().tail.load();
    }
    ASSERT_EQ(pos & (kCap - 1), target);
    ASSERT_EQ(request().head.load(), pos);
  }
  ReadStatus PeekRequest() {
    FrameView f;
    return worker_in_.Peek(&f);
  }

  std::optional<RingFile> file_;
  RingWriter host_out_, worker_out_;
  RingReader worker_in_, host_in_;
};

}  // namespace mp::shm::testutil
