// Writes the seed corpus of response_fuzzer (input format: response_fuzzer.cc) into the
// directory given as argv[1]. The checked-in tests/fuzz/corpus/ is its output; rerun it after
// changing the schema or the frame format:
//   build-fuzz/fuzz-bin/response_fuzzer_seeds tests/fuzz/corpus
#include <capnp/message.h>
#include <capnp/serialize.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "schemas/call.capnp.h"
#include "shm/ring.h"
#include "shm/ring_layout.h"

namespace {

using mp::shm::FrameKind;

std::string Flatten(capnp::MessageBuilder& message) {
  kj::Array<capnp::word> words = capnp::messageToFlatArray(message);
  auto bytes = words.asBytes();
  return std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
}

void FillReply(mp::call::Reply::Builder reply) {
  reply.setStatus(200);
  auto headers = reply.initHeaders(2);
  headers[0].setName("Content-Type");
  headers[0].setValue("text/plain");
  headers[1].setName("X-Seed");
  headers[1].setValue("1");
  const char body[] = "hello from the worker";
  reply.setBody(capnp::Data::Reader(reinterpret_cast<const capnp::byte*>(body), sizeof body - 1));
}

std::string Reply() {
  capnp::MallocMessageBuilder message;
  FillReply(message.initRoot<mp::call::Reply>());
  return Flatten(message);
}

// Every object in its own segment, reached through far pointers.
std::string MultiSegmentReply() {
  capnp::MallocMessageBuilder message(1, capnp::AllocationStrategy::FIXED_SIZE);
  FillReply(message.initRoot<mp::call::Reply>());
  return Flatten(message);
}

std::string Error() {
  capnp::MallocMessageBuilder message;
  auto error = message.initRoot<mp::call::Error>();
  error.setCode(mp::call::Error::Code::HANDLER_FAILED);
  error.setMessage("handler failed: no such word");
  return Flatten(message);
}

// A ring frame: header, payload, zero padding to the frame alignment.
std::string Frame(FrameKind kind, uint64_t call_id, const std::string& payload) {
  mp::shm::FrameHeader h{static_cast<uint32_t>(payload.size()), static_cast<uint32_t>(kind),
                         call_id};
  std::string out(reinterpret_cast<const char*>(&h), sizeof h);
  out += payload;
  out.resize(mp::shm::RingWriter::FrameBytes(payload.size()), '\0');
  return out;
}

// Ring mode input: the shared tail (which the reader ignores) is head + delta, then `more`
// deltas one by one.
std::string RingInput(uint64_t head, uint16_t delta, const std::vector<uint16_t>& more,
                      const std::string& ring_bytes) {
  std::string out(1, '\x80');
  out.append(reinterpret_cast<const char*>(&head), sizeof head);
  out.append(reinterpret_cast<const char*>(&delta), sizeof delta);
  out.push_back(static_cast<char>(more.size()));
  for (uint16_t m : more) out.append(reinterpret_cast<const char*>(&m), sizeof m);
  return out + ring_bytes;
}

bool Write(const std::string& dir, const char* name, const std::string& bytes) {
  std::ofstream f(dir + "/" + name, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return static_cast<bool>(f);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  const std::string reply = Frame(FrameKind::kReply, 7, Reply());
  const std::string error = Frame(FrameKind::kError, 8, Error());

  // A pad frame at the end of the ring, then a reply at offset 0.
  constexpr uint64_t kCapacity = 4096;
  const uint64_t wrap_head = 3 * kCapacity - 32;
  mp::shm::FrameHeader pad{16, static_cast<uint32_t>(FrameKind::kPad), 0};
  std::string padded(reinterpret_cast<const char*>(&pad), sizeof pad);
  padded.resize(32, '\0');
  padded += reply;

  bool ok = true;
  ok &= Write(dir, "decode_reply", std::string(1, '\x02') + Reply());
  ok &= Write(dir, "decode_reply_multisegment", std::string(1, '\x02') + MultiSegmentReply());
  ok &= Write(dir, "decode_error", std::string(1, '\x03') + Error());
  ok &= Write(dir, "ring_reply_error",
              RingInput(0, static_cast<uint16_t>(reply.size() + error.size()), {}, reply + error));
  ok &= Write(dir, "ring_pad_then_reply",
              RingInput(wrap_head, static_cast<uint16_t>(padded.size()), {}, padded));
  // The same reply split in two chunk frames and a last reply frame.
  const std::string whole = Reply();
  const size_t third = (whole.size() / 3) & ~size_t{7};
  const std::string chunked = Frame(FrameKind::kChunk, 7, whole.substr(0, third)) +
                              Frame(FrameKind::kChunk, 7, whole.substr(third, third)) +
                              Frame(FrameKind::kReply, 7, whole.substr(2 * third));
  ok &= Write(dir, "ring_chunks_then_reply",
              RingInput(1 << 20, static_cast<uint16_t>(chunked.size()), {}, chunked));
  if (!ok) {
    std::fprintf(stderr, "%s: cannot write into %s\n", argv[0], dir.c_str());
    return 1;
  }
  return 0;
}
