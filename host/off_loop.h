// Runs pure CPU work (sealing and checksumming a heap of gigabytes) on a thread of its own,
// so that the event loop keeps serving. The work may touch nothing the loop owns.
#pragma once

#include <kj/async.h>

#include <utility>
#include <memory>
#include <thread>

namespace mp::host {

namespace off_loop_internal {
// Joins the thread when the promise is done with (or cancelled: then it waits for the work).
struct Joiner {
  std::thread thread;
  ~Joiner() {
    if (thread.joinable()) thread.join();
  }
};
}  // namespace off_loop_internal

// Runs `work` (a callable, moved to the thread) on a new thread; resolves on the calling loop
// with its result.
template <typename F, typename T = decltype(std::declval<F&>()())>
kj::Promise<T> RunOffLoop(F work) {
  auto paf = kj::newPromiseAndCrossThreadFulfiller<T>();
  // std::thread needs a callable with a noexcept destructor; kj::Own's is not.
  struct Box {
    kj::Own<kj::CrossThreadPromiseFulfiller<T>> fulfiller;
    ~Box() noexcept {}
  };
  auto box = std::make_shared<Box>();
  box->fulfiller = kj::mv(paf.fulfiller);
  auto joiner = kj::heap<off_loop_internal::Joiner>();
  joiner->thread =
      std::thread([box, work = std::move(work)]() mutable { box->fulfiller->fulfill(work()); });
  return paf.promise.attach(kj::mv(joiner));
}

}  // namespace mp::host
