#include "host/child_reaper.h"

#include <signal.h>

#include "host/log.h"

namespace mp::host {

struct ChildReaper::Adopted {
  ChildProcess child;
  std::string what;
  kj::Own<kj::UnixEventPort::FdObserver> observer;
};

ChildReaper::ChildReaper(kj::UnixEventPort& events)
    : events_(events),
      tasks_(kj::heap<kj::TaskSet>(static_cast<kj::TaskSet::ErrorHandler&>(*this))) {}

ChildReaper::~ChildReaper() { ReapAll(2000); }

void ChildReaper::Adopt(ChildProcess child, std::string what, bool kill) {
  if (!child.pidfd) return;
  if (kill) SignalChild(child.pidfd.get(), SIGKILL);
  auto a = std::make_unique<Adopted>();
  a->observer = kj::heap<kj::UnixEventPort::FdObserver>(
      events_, child.pidfd.get(), kj::UnixEventPort::FdObserver::OBSERVE_READ);
  a->child = std::move(child);
  a->what = std::move(what);
  const uint64_t id = next_++;
  Adopted& ref = *a;
  children_.emplace(id, std::move(a));
  tasks_->add(ref.observer->whenBecomesReadable().then([this, id]() {
    auto it = children_.find(id);
    if (it == children_.end()) return;
    TryReap(it->second->child.pidfd.get());
    // Destroy on a later turn: this callback belongs to the observer.
    tasks_->add(kj::evalLater([this, id]() { children_.erase(id); }));
  }));
}

void ChildReaper::ReapAll(int timeout_ms) {
  for (auto& [id, a] : children_) {
    if (a->child.pidfd) ReapWithin(a->child.pidfd.get(), timeout_ms);
  }
  tasks_ = kj::heap<kj::TaskSet>(static_cast<kj::TaskSet::ErrorHandler&>(*this));  // cancels the waits, before their observers go
  children_.clear();
}

void ChildReaper::taskFailed(kj::Exception&& e) {
  LogEvent(LogLevel::kError, "internal_error", {{"what", e.getDescription().cStr()}});
}

}  // namespace mp::host
