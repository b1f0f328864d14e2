// DecodeResponse is the one place where worker-written bytes become host data. These tests feed
// it well-formed replies and errors (built with Cap'n Proto's own builder) and hostile frames
// (hand-written words: segment tables, pointers that run off the segment, pointers that alias
// one object many times), and assert the exact outcome of each.
#include "host/response_decoder.h"

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "schemas/call.capnp.h"

namespace mp::host {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using Headers = std::vector<std::pair<std::string, std::string>>;

constexpr char kBadKind[] = "frame kind is neither reply nor error";
constexpr char kNotWords[] = "payload not a whole number of words";
constexpr char kMalformed[] = "malformed reply: ";

// ---- Building frames ----

std::string Flatten(capnp::MessageBuilder& message) {
  kj::Array<capnp::word> words = capnp::messageToFlatArray(message);
  auto bytes = words.asBytes();
  return std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
}

void FillReply(call::Reply::Builder reply, uint16_t status, const Headers& headers,
               const std::string& body) {
  reply.setStatus(status);
  auto list = reply.initHeaders(static_cast<unsigned>(headers.size()));
  for (size_t i = 0; i < headers.size(); ++i) {
    // Text::Reader(ptr, size) keeps embedded NULs; std::string guarantees the terminator.
    list[i].setName(capnp::Text::Reader(headers[i].first.c_str(), headers[i].first.size()));
    list[i].setValue(capnp::Text::Reader(headers[i].second.c_str(), headers[i].second.size()));
  }
  reply.setBody(capnp::Data::Reader(reinterpret_cast<const capnp::byte*>(body.data()),
                                    body.size()));
}

std::string ReplyFrame(uint16_t status, const Headers& headers = {},
                       const std::string& body = "") {
  capnp::MallocMessageBuilder message;
  FillReply(message.initRoot<call::Reply>(), status, headers, body);
  return Flatten(message);
}

std::string ErrorFrame(call::Error::Code code, const std::string& text) {
  capnp::MallocMessageBuilder message;
  auto error = message.initRoot<call::Error>();
  error.setCode(code);
  error.setMessage(capnp::Text::Reader(text.c_str(), text.size()));
  return Flatten(message);
}

// Hand-written Cap'n Proto words (encoding spec: capnproto.org/encoding.html).
uint64_t SegmentTable(uint32_t segment_count_minus_one, uint32_t first_segment_words) {
  return uint64_t{segment_count_minus_one} | (uint64_t{first_segment_words} << 32);
}
// `offset` counts words from the end of the pointer to the target.
uint64_t StructPointer(int32_t offset, uint16_t data_words, uint16_t pointers) {
  return uint64_t{static_cast<uint32_t>(offset) << 2} | (uint64_t{data_words} << 32) |
         (uint64_t{pointers} << 48);
}
// element_size: 2 = byte, 7 = inline composite (then `count` is the word count, tag excluded).
uint64_t ListPointer(int32_t offset, uint8_t element_size, uint32_t count) {
  return 1 | uint64_t{static_cast<uint32_t>(offset) << 2} | (uint64_t{element_size} << 32) |
         (uint64_t{count} << 35);
}
constexpr uint8_t kByteElements = 2;
constexpr uint8_t kCompositeElements = 7;

std::string Bytes(const std::vector<uint64_t>& words) {
  std::string out(words.size() * 8, '\0');
  if (!words.empty()) std::memcpy(out.data(), words.data(), out.size());
  return out;
}

// Appends `text` and its NUL terminator as Text content; returns the index of its first word.
size_t AppendText(std::vector<uint64_t>& segment, const std::string& text) {
  const size_t at = segment.size();
  segment.resize(at + (text.size() + 1 + 7) / 8, 0);
  std::memcpy(&segment[at], text.data(), text.size());
  return at;
}

// A single-segment message: segment table + `segment`.
std::string OneSegment(const std::vector<uint64_t>& segment) {
  std::vector<uint64_t> words{SegmentTable(0, static_cast<uint32_t>(segment.size()))};
  words.insert(words.end(), segment.begin(), segment.end());
  return Bytes(words);
}

// A Reply of status 200 whose `copies` headers all point at the same two Texts: the name "x"
// and a value of `value_bytes` 'v's. Legal Cap'n Proto (pointers may alias), but reading it
// walks the value `copies` times while the frame holds it once.
std::string AliasedHeadersReply(uint32_t copies, size_t value_bytes) {
  std::vector<uint64_t> seg;
  seg.push_back(StructPointer(0, 1, 2));  // [0] root → [1]
  seg.push_back(200);                     // [1] Reply data: status
  seg.push_back(0);                       // [2] headers (filled below)
  seg.push_back(0);                       // [3] body: null
  const size_t tag = seg.size();          // [4] composite tag, then 2 pointers per element
  seg.push_back(StructPointer(static_cast<int32_t>(copies), 0, 2));
  seg.resize(tag + 1 + 2 * copies, 0);
  const size_t name = AppendText(seg, "x");
  const std::string value(value_bytes, 'v');
  const size_t value_at = AppendText(seg, value);
  seg[2] = ListPointer(static_cast<int32_t>(tag - 3), kCompositeElements, 2 * copies);
  for (uint32_t i = 0; i < copies; ++i) {
    const size_t name_ptr = tag + 1 + 2 * i, value_ptr = name_ptr + 1;
    seg[name_ptr] = ListPointer(static_cast<int32_t>(name - name_ptr - 1), kByteElements, 2);
    seg[value_ptr] = ListPointer(static_cast<int32_t>(value_at - value_ptr - 1), kByteElements,
                                 static_cast<uint32_t>(value_bytes + 1));
  }
  return OneSegment(seg);
}

// ---- Assertions ----

void ExpectRejected(const absl::StatusOr<DecodedReply>& r, const std::string& message) {
  ASSERT_FALSE(r.ok()) << "accepted; expected: " << message;
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(std::string(r.status().message()), message);
}

// Malformed Cap'n Proto: the message names the decoder's complaint.
void ExpectMalformed(const absl::StatusOr<DecodedReply>& r, const std::string& complaint) {
  ASSERT_FALSE(r.ok()) << "accepted; expected: " << complaint;
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), StartsWith(kMalformed));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr(complaint));
}

absl::StatusOr<DecodedReply> Reply(const std::string& payload) {
  return DecodeResponse(shm::FrameKind::kReply, payload);
}

// ---- Well-formed frames ----

TEST(DecodeResponseTest, ReplyRoundTrip) {
  const Headers headers{{"Content-Type", "text/plain; charset=utf-8"},
                        {"X-Trace", "a b\tc"},
                        {"Set-Cookie", "k=v"}};
  const std::string body("binary\0body\xff\x80", 13);
  auto r = Reply(ReplyFrame(201, headers, body));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->is_error);
  EXPECT_EQ(r->status, 201);
  EXPECT_EQ(r->headers, headers);
  EXPECT_EQ(r->body, body);
  EXPECT_EQ(r->error_message, "");
}

TEST(DecodeResponseTest, ReplyWithoutHeadersOrBody) {
  auto r = Reply(ReplyFrame(204));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->is_error);
  EXPECT_EQ(r->status, 204);
  EXPECT_TRUE(r->headers.empty());
  EXPECT_EQ(r->body, "");
}

TEST(DecodeResponseTest, MultiSegmentReplyWithFarPointers) {
  // One-word segments force every object into its own segment, reached by far pointers.
  capnp::MallocMessageBuilder message(1, capnp::AllocationStrategy::FIXED_SIZE);
  const Headers headers{{"X-A", "1"}, {"X-B", "2"}};
  FillReply(message.initRoot<call::Reply>(), 200, headers, std::string(100, 'b'));
  ASSERT_GT(message.getSegmentsForOutput().size(), 3u);
  auto r = Reply(Flatten(message));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->headers, headers);
  EXPECT_EQ(r->body, std::string(100, 'b'));
}

TEST(DecodeResponseTest, ErrorFrame) {
  auto r = DecodeResponse(shm::FrameKind::kError,
                          ErrorFrame(call::Error::Code::HANDLER_FAILED, "dictionary not loaded"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->is_error);
  EXPECT_EQ(r->error_message, "dictionary not loaded");
  EXPECT_EQ(r->status, 0);
  EXPECT_TRUE(r->headers.empty());
  EXPECT_EQ(r->body, "");
}

TEST(DecodeResponseTest, ErrorMessageIsCutTo512Bytes) {
  auto r = DecodeResponse(shm::FrameKind::kError,
                          ErrorFrame(call::Error::Code::BAD_CALL, std::string(5000, 'e')));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->is_error);
  EXPECT_EQ(r->error_message, std::string(512, 'e'));
}

// ---- Frame kind and size ----

TEST(DecodeResponseTest, WrongKindIsRejected) {
  const std::string payload = ReplyFrame(200);
  for (auto kind : {shm::FrameKind::kPad, shm::FrameKind::kCall, shm::FrameKind::kCancel,
                    shm::FrameKind::kStop, static_cast<shm::FrameKind>(6),
                    static_cast<shm::FrameKind>(0xffffffffu)}) {
    SCOPED_TRACE(static_cast<uint32_t>(kind));
    ExpectRejected(DecodeResponse(kind, payload), kBadKind);
  }
}

TEST(DecodeResponseTest, PayloadNotWholeWordsIsRejected) {
  const std::string valid = ReplyFrame(200, {}, "body");
  for (const std::string& payload :
       {valid + "x", valid.substr(0, valid.size() - 1), std::string(1, '\0'),
        std::string(7, '\0'), std::string(9, '\0')}) {
    SCOPED_TRACE(payload.size());
    ExpectRejected(Reply(payload), kNotWords);
    ExpectRejected(DecodeResponse(shm::FrameKind::kError, payload), kNotWords);
  }
}

// Zero words: no segment, so no root pointer; neither kind accepts it.
TEST(DecodeResponseTest, EmptyPayloadIsRejected) {
  ExpectMalformed(Reply(""), "Message did not contain a root pointer.");
  ExpectMalformed(DecodeResponse(shm::FrameKind::kError, ""),
                  "Message did not contain a root pointer.");
}

// ---- Malformed Cap'n Proto ----

TEST(DecodeResponseTest, TruncatedMessageIsRejected) {
  const std::string valid =
      ReplyFrame(200, {{"Content-Type", "text/plain"}}, std::string(100, 'b'));
  ASSERT_TRUE(Reply(valid).ok());
  for (size_t size = 8; size < valid.size(); size += 8) {
    SCOPED_TRACE(size);
    ExpectMalformed(Reply(valid.substr(0, size)), "Message ends prematurely in first segment.");
  }
}

TEST(DecodeResponseTest, GarbageIsRejected) {
  // 0xAB...: the segment table claims 0xABABABAC segments.
  ExpectMalformed(Reply(std::string(64, '\xab')), "Message ends prematurely in segment table.");
  // One segment of 0xFFFFFFFF words announced by a table that is itself complete.
  std::string ones = Bytes({SegmentTable(0, 0xffffffffu)}) + std::string(56, '\xff');
  ExpectMalformed(Reply(ones), "Message ends prematurely in first segment.");
  // A well-sized segment of 0xFF words: the root pointer is of kind 3 (capability).
  ExpectMalformed(Reply(Bytes({SegmentTable(0, 7)}) + std::string(56, '\xff')),
                  "Message contains non-struct pointer where struct pointer was expected.");
  // A root far pointer into a segment that does not exist.
  ExpectMalformed(Reply(OneSegment({0x0000'0007'0000'0002ull, 0})),
                  "Message contains far pointer to unknown segment.");
}

TEST(DecodeResponseTest, SegmentTableClaimingHugeSizesIsRejected) {
  // First segment: 2^32-1 words announced, one present.
  ExpectMalformed(Reply(Bytes({SegmentTable(0, 0xffffffffu), 0})),
                  "Message ends prematurely in first segment.");
  // 2^32-1 segments announced: the table alone would be 16 GiB.
  ExpectMalformed(Reply(Bytes({SegmentTable(0xfffffffeu, 1), 0})),
                  "Message ends prematurely in segment table.");
  // Two segments, the second claiming 2^32-1 words.
  ExpectMalformed(Reply(Bytes({SegmentTable(1, 1), 0xffffffffull, 0, 0})),
                  "Message ends prematurely.");
}

TEST(DecodeResponseTest, ListPointerPastSegmentIsRejected) {
  // Reply.body claims 1 MiB of bytes in a segment of 4 words.
  ExpectMalformed(
      Reply(OneSegment({StructPointer(0, 1, 2), 200, 0, ListPointer(0, kByteElements, 1u << 20)})),
      "Message contained out-of-bounds data pointer.");
  // Reply.headers claims 2^29-1 words of structs in a segment of 5 words.
  ExpectMalformed(Reply(OneSegment({StructPointer(0, 1, 2), 200,
                                    ListPointer(1, kCompositeElements, (1u << 29) - 1), 0,
                                    StructPointer(1, 0, 2)})),
                  "Message contains out-of-bounds list pointer.");
  // The composite tag claims more elements than its word count holds.
  ExpectMalformed(Reply(OneSegment({StructPointer(0, 1, 2), 200,
                                    ListPointer(1, kCompositeElements, 2), 0,
                                    StructPointer(1000, 0, 2), 0, 0})),
                  "INLINE_COMPOSITE list's elements overrun its word count.");
}

TEST(DecodeResponseTest, ZeroSizedHeaderListAmplificationIsRejected) {
  // 2^29-1 headers of zero words each: no bytes sent, but a walk over 2^29-1 elements. Cap'n
  // Proto charges the element count to the traversal limit ("amplified list pointer").
  ExpectMalformed(Reply(OneSegment({StructPointer(0, 1, 2), 200,
                                    ListPointer(1, kCompositeElements, 0), 0,
                                    StructPointer((1 << 29) - 1, 0, 0)})),
                  "Exceeded message traversal limit.");
}

TEST(DecodeResponseTest, AliasedPointerTraversalBombIsRejected) {
  // The same layout with a single header is a valid reply: what fails below is only the
  // aliasing, not the encoding.
  auto one = Reply(AliasedHeadersReply(1, 4000));
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(one->status, 200);
  EXPECT_EQ(one->headers, (Headers{{"x", std::string(4000, 'v')}}));

  // 64 headers × 4000 bytes = 256 KB of text to walk, from a frame of about 5 KB.
  const std::string bomb = AliasedHeadersReply(64, 4000);
  ASSERT_LT(bomb.size(), 6000u);
  ExpectMalformed(Reply(bomb), "Exceeded message traversal limit.");
}

TEST(DecodeResponseTest, ReplyReadAsErrorIsRejected) {
  // Error.message (pointer 0) lands on Reply.headers, a struct list.
  ExpectMalformed(DecodeResponse(shm::FrameKind::kError, ReplyFrame(200, {{"X-A", "1"}})),
                  "Message contains list pointer of non-bytes where text was expected.");
}

// ---- HTTP validity ----

class StatusTest : public ::testing::TestWithParam<uint16_t> {};

TEST_P(StatusTest, Accepted) {
  auto r = Reply(ReplyFrame(GetParam()));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, GetParam());
}
INSTANTIATE_TEST_SUITE_P(AnyUInt16, StatusTest, ::testing::Values(0, 100, 200, 599, 65535));

// HTTP rules are not the decoder's: it hands status and headers over as the module gave them,
// and ApplyReplyRules (reply_rules_test.cc) decides whether they may go out.
TEST(DecodeResponseTest, StatusAndHeadersArriveAsTheModuleGaveThem) {
  const Headers headers{{"Bad Name", "v"}, {"X-Value", std::string("a\r\nb\0c", 6)},
                        {"Content-Length", "7"}};
  auto r = Reply(ReplyFrame(101, headers));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 101);
  EXPECT_EQ(r->headers, headers);
}

}  // namespace
}  // namespace mp::host
