// A client connection as the HTTP server reads and writes it. It
//   - answers 408 to a client that starts a request but does not finish its head in time (KJ's
//     HTTP server would only close the connection);
//   - knows the client's address, and whether the connection is idle between requests (the
//     listener sheds the oldest idle one when connections run out, see listener.h);
//   - lets the front door write an interim response (100 Continue) around KJ.
// The listener wraps every accepted socket in one; the front door's per-connection service
// finds it again. Event loop thread only.
#pragma once

#include <kj/async-io.h>
#include <kj/timer.h>

#include <functional>
#include <string>

namespace mp::host {

class ClientStream final : public kj::AsyncIoStream {
 public:
  // The clock starts at the first byte of each request and stops once its head has arrived
  // (an empty line: CRLF CRLF, or bare LF line ends as RFC 9112 §2.2 allows); the next request
  // starts once a response is being written. `on_timeout` runs when a 408 is sent.
  ClientStream(kj::Own<kj::AsyncIoStream> inner, std::string peer, kj::Timer& timer,
               kj::Duration timeout, std::function<void()> on_timeout = nullptr)
      : inner_(kj::mv(inner)),
        peer_(std::move(peer)),
        timer_(timer),
        timeout_(timeout),
        on_timeout_(std::move(on_timeout)),
        last_active_(timer.now()) {}

  // Between requests, with no byte of the next one read: the connection can be closed without
  // losing anything.
  bool idle() const { return state_ == State::kBetweenRequests && requests_ == 0; }
  // The front door brackets each request it handles, so that a connection whose response is
  // still being written never counts as idle.
  void BeginRequest() { ++requests_; }
  void EndRequest() { --requests_; }
  // The client's address ("203.0.113.9"); empty if it is not an IP socket.
  const std::string& peer() const { return peer_; }
  // When a byte was last read or written.
  kj::TimePoint last_active() const { return last_active_; }

  // Writes `bytes` to the client without ending the current request's head-to-response phase:
  // for "HTTP/1.1 100 Continue\r\n\r\n" while KJ waits to read the body.
  kj::Promise<void> WriteInterim(kj::StringPtr bytes);

  // The next response has a body that will be written right after its head (the front door
  // knows; KJ writes the two apart): the head is held back and goes out with the body in one
  // writev, one TCP segment instead of two. Held no longer than the current event loop turn.
  void ExpectResponseBody() { expect_body_ = true; }

  kj::Promise<size_t> tryRead(void* buffer, size_t min_bytes, size_t max_bytes) override;
  kj::Promise<void> write(const void* buffer, size_t size) override;
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override;
  kj::Promise<void> whenWriteDisconnected() override { return inner_->whenWriteDisconnected(); }
  void shutdownWrite() override { inner_->shutdownWrite(); }
  void abortRead() override { inner_->abortRead(); }
  void getsockopt(int level, int option, void* value, kj::uint* length) override {
    inner_->getsockopt(level, option, value, length);
  }
  void setsockopt(int level, int option, const void* value, kj::uint length) override {
    inner_->setsockopt(level, option, value, length);
  }
  void getsockname(struct sockaddr* addr, kj::uint* length) override { inner_->getsockname(addr, length); }
  void getpeername(struct sockaddr* addr, kj::uint* length) override { inner_->getpeername(addr, length); }
  kj::Maybe<int> getFd() const override { return inner_->getFd(); }

 private:
  enum class State { kBetweenRequests, kInHead, kAfterHead, kTimedOut };
  void Scan(const kj::byte* bytes, size_t n);
  void StartResponse();
  kj::Promise<void> FlushHeldHead();
  kj::Promise<void> WriteAfterFlush(kj::Function<kj::Promise<void>()> write);

  kj::Own<kj::AsyncIoStream> inner_;
  std::string peer_;
  int requests_ = 0;
  kj::Timer& timer_;
  kj::Duration timeout_;
  std::function<void()> on_timeout_;
  State state_ = State::kBetweenRequests;
  kj::TimePoint deadline_ = kj::origin<kj::TimePoint>();
  kj::TimePoint last_active_;
  // The last two bytes read, whatever the state: a head's end can straddle two reads, and a
  // pipelined request's head can begin in a read that ended the previous one.
  char prev_ = 0, prev2_ = 0;
  kj::String timeout_response_;  // the 408, while it is written
  bool expect_body_ = false;
  kj::Array<kj::byte> held_head_;  // a response head waiting for its body
  kj::Promise<void> head_timer_ = nullptr;  // sends a held head at the end of the turn
  kj::Maybe<kj::ForkedPromise<void>> flushing_;  // that send, while it is under way
};

// The value of a Date header for now: "Sun, 06 Nov 1994 08:49:37 GMT" (RFC 9110 §5.6.7).
std::string HttpDate();

}  // namespace mp::host
