// Reaps the supervisor's direct children that nobody waits for any more (a retired
// generation's init, a build's init killed at its deadline) as they exit, on the event loop,
// so that none is left a zombie.
#pragma once

#include <kj/async-unix.h>

#include <map>
#include <memory>
#include <string>

#include "host/process.h"

namespace mp::host {

// Not thread-safe; the supervisor's loop thread only.
class ChildReaper final : private kj::TaskSet::ErrorHandler {
 public:
  explicit ChildReaper(kj::UnixEventPort& events);
  ~ChildReaper();

  // Takes `child` over; kills it first if `kill`. `what` names it in the log.
  void Adopt(ChildProcess child, std::string what, bool kill);

  // Waits (blocking, at most `timeout_ms` each) for every adopted child and reaps it; at
  // shutdown, when the loop no longer runs.
  void ReapAll(int timeout_ms);

 private:
  struct Adopted;
  void taskFailed(kj::Exception&& e) override;
  kj::UnixEventPort& events_;
  uint64_t next_ = 1;
  std::map<uint64_t, std::unique_ptr<Adopted>> children_;
  kj::Own<kj::TaskSet> tasks_;  // replaced to cancel every wait at once
};

}  // namespace mp::host
