// A connection wrapper that answers 408 to a client that starts a request but does not finish
// its head in time (KJ's HTTP server would only close the connection). Event loop thread only.
#pragma once

#include <kj/async-io.h>
#include <kj/timer.h>

namespace mp::host {

class HeadTimeoutStream final : public kj::AsyncIoStream {
 public:
  // The clock starts at the first byte of each request and stops once its head ("\r\n\r\n")
  // has arrived; the next request starts once a response is being written.
  HeadTimeoutStream(kj::Own<kj::AsyncIoStream> inner, kj::Timer& timer, kj::Duration timeout)
      : inner_(kj::mv(inner)), timer_(timer), timeout_(timeout) {}

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

  kj::Own<kj::AsyncIoStream> inner_;
  kj::Timer& timer_;
  kj::Duration timeout_;
  State state_ = State::kBetweenRequests;
  kj::TimePoint deadline_ = kj::origin<kj::TimePoint>();
  int matched_ = 0;  // how much of "\r\n\r\n" the last bytes matched
};

}  // namespace mp::host
