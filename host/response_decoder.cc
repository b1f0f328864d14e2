#include "host/response_decoder.h"

#include <capnp/serialize.h>
#include <kj/array.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "schemas/call.capnp.h"

namespace mp::host {

absl::StatusOr<DecodedReply> DecodeResponse(shm::FrameKind kind, absl::string_view payload) {
  if (payload.size() % sizeof(capnp::word) != 0) {
    return absl::InvalidArgumentError("payload not a whole number of words");
  }
  // Aligned storage for the reader (the caller's copy may not be word-aligned).
  auto words = kj::heapArray<capnp::word>(payload.size() / sizeof(capnp::word));
  if (!payload.empty()) std::memcpy(words.begin(), payload.data(), payload.size());
  return DecodeResponseWords(kind, words);
}

absl::StatusOr<DecodedReply> DecodeResponseWords(shm::FrameKind kind,
                                                 kj::ArrayPtr<const capnp::word> words) {
  if (kind != shm::FrameKind::kReply && kind != shm::FrameKind::kError) {
    return absl::InvalidArgumentError("frame kind is neither reply nor error");
  }
  capnp::ReaderOptions limits;
  limits.traversalLimitInWords = words.size() * 2 + 64;
  limits.nestingLimit = 8;
  DecodedReply out;
  std::string violation;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
                capnp::FlatArrayMessageReader reader(words, limits);
                if (kind == shm::FrameKind::kReply) {
                  auto r = reader.getRoot<call::Reply>();
                  // Status and headers as the module gave them: whether they may go out
                  // over HTTP is for ApplyReplyRules (host/reply_rules.h) to say.
                  out.status = r.getStatus();
                  for (auto h : r.getHeaders()) {
                    out.headers.emplace_back(std::string(h.getName().cStr(), h.getName().size()),
                                             std::string(h.getValue().cStr(), h.getValue().size()));
                  }
                  auto body = r.getBody();
                  out.body.assign(reinterpret_cast<const char*>(body.begin()), body.size());
                } else {
                  auto err = reader.getRoot<call::Error>();
                  out.is_error = true;
                  out.error_message.assign(err.getMessage().cStr(),
                                           std::min<size_t>(err.getMessage().size(), 512));
                }
              })) {
    return absl::InvalidArgumentError(absl::StrCat("malformed reply: ", e->getDescription().cStr()));
  }
  if (!violation.empty()) return absl::InvalidArgumentError(violation);
  return out;
}

}  // namespace mp::host
