// Cap'n Proto messages over the rings: exact sizes, building in place (zeroing, wraparound,
// spilling), chunked messages at the maximum and one byte past it, and a reassembler that
// refuses what a hostile peer could send.
#include "microproc/ring_message.h"

#include <capnp/serialize.h>

#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "schemas/call.capnp.h"
#include "shm/ring.h"

namespace mp::microproc {
namespace {

constexpr uint64_t kRing = 4096;  // one frame holds at most 2032 bytes

struct Request {
  std::string method = "POST", path = "/x", query = "a=1";
  std::vector<std::pair<std::string, std::string>> headers = {{"Host", "h"}, {"X-Y", "zz"}};
  std::string body;

  std::vector<HeaderSizes> Sizes() const {
    std::vector<HeaderSizes> s;
    for (const auto& [n, v] : headers) s.push_back({n.size(), v.size()});
    return s;
  }
  size_t Bytes() const {
    return CallMessageBytes(method.size(), path.size(), query.size(), Sizes(), body.size());
  }
  void Fill(call::Call::Builder c) const {
    c.setMethod(method);
    c.setPath(path);
    c.setQuery(query);
    auto hs = c.initHeaders(static_cast<unsigned>(headers.size()));
    for (size_t i = 0; i < headers.size(); ++i) {
      hs[i].setName(headers[i].first);
      hs[i].setValue(headers[i].second);
    }
    c.setBody(kj::arrayPtr(reinterpret_cast<const kj::byte*>(body.data()), body.size()));
  }
  void ExpectEquals(call::Call::Reader c) const {
    EXPECT_EQ(c.getMethod().cStr(), method);
    EXPECT_EQ(c.getPath().cStr(), path);
    EXPECT_EQ(c.getQuery().cStr(), query);
    ASSERT_EQ(c.getHeaders().size(), headers.size());
    for (size_t i = 0; i < headers.size(); ++i) {
      EXPECT_EQ(c.getHeaders()[i].getName().cStr(), headers[i].first);
      EXPECT_EQ(c.getHeaders()[i].getValue().cStr(), headers[i].second);
    }
    auto b = c.getBody();
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(b.begin()), b.size()), body);
  }
};

std::string Body(size_t n, int seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(i * 31 + seed);
  return s;
}

size_t MallocBytes(const Request& r) {
  capnp::MallocMessageBuilder m;
  r.Fill(m.initRoot<call::Call>());
  return capnp::computeSerializedSizeInWords(m) * sizeof(capnp::word);
}

TEST(MessageSizeTest, SizesAreExactForEveryShape) {
  for (size_t text : {0, 1, 6, 7, 8, 9, 15, 16, 100}) {
    for (size_t body : {0, 1, 7, 8, 9, 1000}) {
      for (size_t nh : {0, 1, 3}) {
        Request r;
        r.method = std::string(text, 'm');
        r.path = std::string(text / 2, 'p');
        r.query = std::string(text % 5, 'q');
        r.headers.clear();
        for (size_t i = 0; i < nh; ++i) r.headers.emplace_back(std::string(text + i, 'n'), std::string(i * 3, 'v'));
        r.body = Body(body, 1);
        EXPECT_EQ(r.Bytes(), MallocBytes(r)) << text << " " << body << " " << nh;
      }
    }
  }
  for (size_t body : {0, 5, 8, 4000}) {
    std::vector<HeaderSizes> hs = {{12, 16}, {0, 0}};
    capnp::MallocMessageBuilder m;
    auto r = m.initRoot<call::Reply>();
    r.setStatus(200);
    auto h = r.initHeaders(2);
    h[0].setName(std::string(12, 'a'));
    h[0].setValue(std::string(16, 'b'));
    h[1].setName("");
    h[1].setValue("");
    std::string b = Body(body, 2);
    r.setBody(kj::arrayPtr(reinterpret_cast<const kj::byte*>(b.data()), b.size()));
    EXPECT_EQ(ReplyMessageBytes(hs, body), capnp::computeSerializedSizeInWords(m) * 8) << body;
  }
  for (size_t text : {0, 7, 8, 300}) {
    capnp::MallocMessageBuilder m;
    auto e = m.initRoot<call::Error>();
    e.setCode(call::Error::Code::CANCELLED);
    e.setMessage(std::string(text, 'e'));
    EXPECT_EQ(ErrorMessageBytes(text), capnp::computeSerializedSizeInWords(m) * 8) << text;
  }
}

class RingMessageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto f = shm::RingFile::Create("ring_message_test", kRing, kRing, 64 << 10);
    ASSERT_TRUE(f.ok()) << f.status();
    file_ = std::make_unique<shm::RingFile>(*std::move(f));
    writer_ = file_->RequestWriter();
    reader_ = file_->RequestReader();
    reply_writer_ = file_->ResponseWriter();
    reply_reader_ = file_->ResponseReader();
  }
  std::unique_ptr<shm::RingFile> file_;
  shm::RingWriter writer_;  // calls, host → worker
  shm::RingReader reader_;
  shm::RingWriter reply_writer_;  // replies, worker → host
  shm::RingReader reply_reader_;
};

TEST_F(RingMessageTest, BuiltInPlaceOverDirtyMemoryAtEveryWrapPosition) {
  // Dirty the whole ring first: the builder must zero its segment.
  std::byte* data = reinterpret_cast<std::byte*>(file_->header()) + shm::kRingHeaderBytes;
  std::memset(data, 0xAB, kRing);
  // Message sizes that are not a divisor of the ring: the frames start at every 16-byte
  // offset class in turn and wrap with a pad frame.
  for (int i = 0; i < 300; ++i) {
    Request r;
    r.body = Body(static_cast<size_t>(i * 13 % 900), i);
    r.path = "/" + std::string(static_cast<size_t>(i % 17), 'p');
    const size_t bytes = r.Bytes();
    std::byte* frame = writer_.Reserve(bytes);
    ASSERT_NE(frame, nullptr) << i;
    FrameMessageBuilder m(frame, bytes);
    r.Fill(m.initRoot<call::Call>());
    ASSERT_TRUE(m.InFrame());
    const size_t used = m.FinishInFrame();
    EXPECT_EQ(used, bytes);
    writer_.Commit(shm::FrameKind::kCall, 100 + i, used);

    shm::FrameView v;
    ASSERT_EQ(reader_.Peek(&v), shm::ReadStatus::kFrame) << i;
    EXPECT_EQ(v.call_id, 100u + i);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(v.payload.data()), reinterpret_cast<uintptr_t>(frame))
        << "read in place, where it was built";
    capnp::FlatArrayMessageReader msg(kj::arrayPtr(
        reinterpret_cast<const capnp::word*>(v.payload.data()), v.payload.size() / 8));
    r.ExpectEquals(msg.getRoot<call::Call>());
    reader_.Pop();
  }
}

TEST_F(RingMessageTest, TooSmallAFrameSpillsAndStaysCorrect) {
  Request r;
  r.body = Body(500, 3);
  std::byte* frame = writer_.Reserve(64);
  ASSERT_NE(frame, nullptr);
  FrameMessageBuilder m(frame, 64);
  r.Fill(m.initRoot<call::Call>());
  EXPECT_FALSE(m.InFrame());
  auto flat = capnp::messageToFlatArray(m);
  capnp::FlatArrayMessageReader msg(flat);
  r.ExpectEquals(msg.getRoot<call::Call>());
}

// Sends `message` through the ring in chunks while draining the other end into `assembler`,
// one thread taking turns. Returns the reassembled message or the assembler's error.
absl::StatusOr<std::string> RoundTrip(shm::RingWriter& w, shm::RingReader& r,
                                      MessageAssembler& assembler, std::string message,
                                      size_t* frames) {
  auto words = kj::heapArray<capnp::word>((message.size() + 7) / 8);
  std::memcpy(static_cast<void*>(words.begin()), message.data(), message.size());
  // A byte count that is not a whole number of words is sent as such (a hostile sender).
  ChunkedSend send(shm::FrameKind::kReply, 7, std::move(words));
  *frames = 0;
  bool sent = false;
  for (int turn = 0; turn < 100000; ++turn) {
    bool wake = false;
    if (!sent) sent = send.Pump(w, &wake);
    shm::FrameView v;
    while (r.Peek(&v) == shm::ReadStatus::kFrame) {
      ++*frames;
      if (v.kind == shm::FrameKind::kChunk) {
        absl::Status s = assembler.AddChunk(v.call_id, v.payload);
        r.Pop();
        if (!s.ok()) return s;
        continue;
      }
      EXPECT_EQ(v.kind, shm::FrameKind::kReply);
      if (!assembler.active()) {  // fitted one frame
        std::string out(reinterpret_cast<const char*>(v.payload.data()), v.payload.size());
        r.Pop();
        return out;
      }
      auto whole = assembler.Complete(v.call_id, v.payload);
      r.Pop();
      if (!whole.ok()) return whole.status();
      return std::string(reinterpret_cast<const char*>(whole->begin()), whole->size() * 8);
    }
  }
  return absl::DeadlineExceededError("no progress");
}

TEST_F(RingMessageTest, ChunkedMessageAtTheMaximumArrivesWhole) {
  constexpr uint64_t kMax = 64 << 10;  // 32 frames of this ring
  MessageAssembler assembler(kMax);
  const std::string message = Body(kMax, 5);
  size_t frames = 0;
  auto got = RoundTrip(reply_writer_, reply_reader_, assembler, message, &frames);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, message);
  EXPECT_EQ(frames, (kMax + 2031) / 2032);
  // Again, after a reset, from another wrap position.
  assembler.Reset();
  auto again = RoundTrip(reply_writer_, reply_reader_, assembler, Body(kMax - 8, 6), &frames);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, Body(kMax - 8, 6));
}

TEST_F(RingMessageTest, OneBytePastTheMaximumIsRefusedNamingIt) {
  constexpr uint64_t kMax = 64 << 10;
  MessageAssembler assembler(kMax);
  size_t frames = 0;
  // A message one word past the maximum: the assembler refuses at the frame that passes it.
  auto words = kj::heapArray<capnp::word>(kMax / 8 + 1);
  std::memset(static_cast<void*>(words.begin()), 1, words.size() * 8);
  shm::FrameView v;
  ChunkedSend send(shm::FrameKind::kReply, 7, std::move(words));
  absl::Status last;
  for (int turn = 0; turn < 1000 && last.ok(); ++turn) {
    bool wake = false;
    send.Pump(reply_writer_, &wake);
    while (last.ok() && reply_reader_.Peek(&v) == shm::ReadStatus::kFrame) {
      last = v.kind == shm::FrameKind::kChunk ? assembler.AddChunk(7, v.payload)
                                              : assembler.Complete(7, v.payload).status();
      reply_reader_.Pop();
    }
  }
  EXPECT_EQ(last.code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(last.message().find("past the maximum of 65536"), std::string::npos) << last;
  // And a byte count one past, not a whole number of words: same refusal.
  MessageAssembler exact(kMax);
  std::vector<std::byte> piece(kMax / 2);
  ASSERT_TRUE(exact.AddChunk(9, piece).ok());
  ASSERT_TRUE(exact.AddChunk(9, piece).ok());
  std::byte one{1};
  EXPECT_EQ(exact.Complete(9, {&one, 1}).status().code(), absl::StatusCode::kOutOfRange);
  (void)frames;
}

TEST(MessageAssemblerTest, RefusesWhatAHostilePeerSends) {
  MessageAssembler a(1 << 10);
  std::vector<std::byte> piece(64, std::byte{2});
  // Final frame without its chunks.
  EXPECT_FALSE(a.Complete(1, piece).ok());
  // A chunk of another call while one is in progress.
  ASSERT_TRUE(a.AddChunk(1, piece).ok());
  EXPECT_EQ(a.AddChunk(2, piece).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(a.Complete(2, piece).ok());
  // Not a whole number of words.
  a.Reset();
  ASSERT_TRUE(a.AddChunk(3, piece).ok());
  std::byte odd[3] = {};
  EXPECT_EQ(a.Complete(3, odd).status().code(), absl::StatusCode::kInvalidArgument);
  // A flood of chunks stops at the maximum and keeps no more than it.
  a.Reset();
  absl::Status s;
  int n = 0;
  while (s.ok() && n < 1000) {
    s = a.AddChunk(4, piece);
    ++n;
  }
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(n, 17);  // 16 chunks of 64 bytes fill 1 KiB
  EXPECT_LE(a.bytes(), 1u << 10);
  // Reset drops it; the assembler works again.
  a.Reset();
  EXPECT_FALSE(a.active());
  ASSERT_TRUE(a.AddChunk(5, piece).ok());
  auto whole = a.Complete(5, piece);
  ASSERT_TRUE(whole.ok());
  EXPECT_EQ(whole->size(), 16u);
}

}  // namespace
}  // namespace mp::microproc
