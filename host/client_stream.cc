#include "host/client_stream.h"

#include <time.h>

#include <cstring>
#include <ctime>

namespace mp::host {
namespace {

constexpr char k408Body[] = "{\"error\":\"request head not received in time (headerTimeoutMs)\"}";

}  // namespace

std::string HttpDate() {
  thread_local time_t cached_second = -1;
  thread_local char cached[40];
  const time_t now = ::time(nullptr);
  if (now != cached_second) {
    tm utc;
    ::gmtime_r(&now, &utc);
    ::strftime(cached, sizeof cached, "%a, %d %b %Y %H:%M:%S GMT", &utc);
    cached_second = now;
  }
  return cached;
}

void ClientStream::Scan(const kj::byte* bytes, size_t n) {
  if (n == 0) return;
  last_active_ = timer_.now();
  if (state_ == State::kBetweenRequests) {
    state_ = State::kInHead;
    deadline_ = timer_.now() + timeout_;
  }
  for (size_t i = 0; i < n; ++i) {
    const char c = static_cast<char>(bytes[i]);
    // An empty line ends a head: "\n\n" or "\n\r\n" (which covers "\r\n\r\n").
    const bool end = c == '\n' && (prev_ == '\n' || (prev_ == '\r' && prev2_ == '\n'));
    prev2_ = prev_;
    prev_ = c;
    if (end && state_ == State::kInHead) state_ = State::kAfterHead;
  }
}

void ClientStream::StartResponse() {
  last_active_ = timer_.now();
  // A response is being written, so the server has the whole head of the request it answers;
  // whatever is read next belongs to the next request (a head already buffered in full was
  // seen by Scan, and KJ will not read for it).
  if (state_ == State::kAfterHead || state_ == State::kInHead) state_ = State::kBetweenRequests;
}

kj::Promise<void> ClientStream::WriteInterim(kj::StringPtr bytes) {
  last_active_ = timer_.now();
  return inner_->write(bytes.begin(), bytes.size());
}

kj::Promise<size_t> ClientStream::tryRead(void* buffer, size_t min_bytes, size_t max_bytes) {
  if (state_ == State::kTimedOut) return size_t{0};
  auto read = inner_->tryRead(buffer, min_bytes, max_bytes).then([this, buffer](size_t n) {
    Scan(static_cast<const kj::byte*>(buffer), n);
    return n;
  });
  if (state_ != State::kInHead) return read;
  return read.exclusiveJoin(timer_.atTime(deadline_).then([this]() -> kj::Promise<size_t> {
    state_ = State::kTimedOut;
    if (on_timeout_) on_timeout_();
    timeout_response_ = kj::str("HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nDate: ",
                                HttpDate().c_str(),
                                "\r\nContent-Type: application/json\r\nContent-Length: ",
                                sizeof k408Body - 1, "\r\n\r\n", k408Body);
    return inner_->write(timeout_response_.begin(), timeout_response_.size()).then([this]() -> size_t {
      inner_->shutdownWrite();
      throw kj::Exception(kj::Exception::Type::DISCONNECTED, __FILE__, __LINE__,
                          kj::str("request head timeout"));
    });
  }));
}

kj::Promise<void> ClientStream::FlushHeldHead() {
  if (held_head_.size() == 0) return kj::READY_NOW;
  auto head = kj::mv(held_head_);
  // Kept (resolved, it costs nothing) until the next flush replaces it: clearing it from its
  // own continuation would destroy the fork while it fires.
  flushing_ = inner_->write(head.begin(), head.size()).attach(kj::mv(head)).fork();
  KJ_IF_MAYBE(f, flushing_) { return f->addBranch(); }
  return kj::READY_NOW;
}

kj::Promise<void> ClientStream::WriteAfterFlush(kj::Function<kj::Promise<void>()> write) {
  KJ_IF_MAYBE(f, flushing_) {
    return f->addBranch().then([write = kj::mv(write)]() mutable { return write(); });
  }
  return write();
}

kj::Promise<void> ClientStream::write(const void* buffer, size_t size) {
  StartResponse();
  const auto* bytes = static_cast<const kj::byte*>(buffer);
  if (expect_body_ && held_head_.size() == 0 && size > 5 && std::memcmp(bytes, "HTTP/", 5) == 0) {
    expect_body_ = false;
    held_head_ = kj::heapArray<kj::byte>(bytes, size);
    // Should the body not follow within this turn, the head goes alone.
    head_timer_ = kj::evalLast([this]() { return FlushHeldHead(); }).eagerlyEvaluate(nullptr);
    return kj::READY_NOW;
  }
  if (held_head_.size() > 0) {
    auto head = kj::mv(held_head_);
    auto pieces = kj::heapArray<kj::ArrayPtr<const kj::byte>>(2);
    pieces[0] = head.asPtr();
    pieces[1] = kj::arrayPtr(bytes, size);
    auto both = inner_->write(pieces);
    head_timer_ = nullptr;
    return both.attach(kj::mv(head), kj::mv(pieces));
  }
  return WriteAfterFlush([this, buffer, size]() { return inner_->write(buffer, size); });
}

kj::Promise<void> ClientStream::write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) {
  StartResponse();
  if (held_head_.size() > 0) {
    auto head = kj::mv(held_head_);
    auto all = kj::heapArray<kj::ArrayPtr<const kj::byte>>(pieces.size() + 1);
    all[0] = head.asPtr();
    for (size_t i = 0; i < pieces.size(); ++i) all[i + 1] = pieces[i];
    auto write = inner_->write(all);
    head_timer_ = nullptr;
    return write.attach(kj::mv(head), kj::mv(all));
  }
  return WriteAfterFlush([this, pieces]() { return inner_->write(pieces); });
}

}  // namespace mp::host
