// Decoding a worker's answer: the one place where worker-written bytes become host data.
// Pure functions over a private copy of the frame; no shared memory, no I/O, so they can be
// unit-tested and fuzzed (tests/fuzz/response_fuzzer.cc).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <capnp/common.h>
#include <kj/common.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "shm/ring_layout.h"

namespace mp::host {

// A reply as the module gave it: well-formed Cap'n Proto, within the limits. Whether its
// status and headers may go out over HTTP is ApplyReplyRules' question (host/reply_rules.h).
struct DecodedReply {
  bool is_error = false;  // the worker sent an Error frame (`error_message` says what)
  uint16_t status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string error_message;  // at most 512 bytes
};

// Decodes `payload` (a private copy: the caller copied it out of the ring) of a frame of `kind`
// (kReply or kError) with Cap'n Proto ReaderOptions limits (traversal ≤ 2× the frame, nesting
// ≤ 8). Fails with a message naming the violation: not a whole number of words, malformed
// Cap'n Proto, the wrong frame kind.
absl::StatusOr<DecodedReply> DecodeResponse(shm::FrameKind kind,
                                            absl::string_view payload);

// The same over a private, word-aligned copy (a frame copied out, or a reassembled message).
absl::StatusOr<DecodedReply> DecodeResponseWords(shm::FrameKind kind,
                                                 kj::ArrayPtr<const capnp::word> words);

}  // namespace mp::host
