#include "host/head_timeout.h"

namespace mp::host {
namespace {

constexpr char k408[] =
    "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: application/json\r\n"
    "Content-Length: 63\r\n\r\n{\"error\":\"request head not received in time (headerTimeoutMs)\"}";
static_assert(sizeof("{\"error\":\"request head not received in time (headerTimeoutMs)\"}") - 1 == 63);

}  // namespace

void HeadTimeoutStream::Scan(const kj::byte* bytes, size_t n) {
  if (n == 0) return;
  if (state_ == State::kBetweenRequests) {
    state_ = State::kInHead;
    deadline_ = timer_.now() + timeout_;
    matched_ = 0;
  }
  if (state_ != State::kInHead) return;
  static constexpr char kEnd[] = "\r\n\r\n";
  for (size_t i = 0; i < n; ++i) {
    const char c = static_cast<char>(bytes[i]);
    matched_ = c == kEnd[matched_] ? matched_ + 1 : (c == '\r' ? 1 : 0);
    if (matched_ == 4) {
      state_ = State::kAfterHead;
      return;
    }
  }
}

kj::Promise<size_t> HeadTimeoutStream::tryRead(void* buffer, size_t min_bytes, size_t max_bytes) {
  if (state_ == State::kTimedOut) return size_t{0};
  auto read = inner_->tryRead(buffer, min_bytes, max_bytes).then([this, buffer](size_t n) {
    Scan(static_cast<const kj::byte*>(buffer), n);
    return n;
  });
  if (state_ != State::kInHead) return read;
  return read.exclusiveJoin(timer_.atTime(deadline_).then([this]() -> kj::Promise<size_t> {
    state_ = State::kTimedOut;
    return inner_->write(k408, sizeof k408 - 1).then([this]() -> size_t {
      inner_->shutdownWrite();
      throw kj::Exception(kj::Exception::Type::DISCONNECTED, __FILE__, __LINE__,
                          kj::str("request head timeout"));
    });
  }));
}

kj::Promise<void> HeadTimeoutStream::write(const void* buffer, size_t size) {
  if (state_ == State::kAfterHead) state_ = State::kBetweenRequests;
  return inner_->write(buffer, size);
}

kj::Promise<void> HeadTimeoutStream::write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) {
  if (state_ == State::kAfterHead) state_ = State::kBetweenRequests;
  return inner_->write(pieces);
}

}  // namespace mp::host
