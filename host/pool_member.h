// A worker as its pool sees it: one phase, with every transition in WorkerChannel
// (host/worker_channel.h), and the two questions the pool asks, answered here once.
#pragma once

#include <cstdint>

#include "absl/strings/string_view.h"
#include "host/call.h"

namespace mp::host {

enum class WorkerPhase {
  kStarting,    // spawn requested; not serving yet
  kIdle,        // ready for a call
  kBusy,        // computing a call
  kCancelling,  // its call missed the deadline (answered 504); it may still answer, late
  kStopping,    // told to stop; it will exit
  kKilled,      // SIGKILL sent; its exit will be reported
};

const char* WorkerPhaseName(WorkerPhase phase);

class PoolMember {
 public:
  virtual ~PoolMember() = default;

  virtual uint64_t id() const = 0;
  virtual WorkerPhase phase() const = 0;
  // Told to stop once its call is done (reload, scale down, recycling).
  virtual bool retiring() const = 0;
  virtual uint64_t generation() const = 0;
  // Calls it answered (the module's reply or error): one is proof that it works.
  virtual uint64_t calls() const = 0;
  // When it last finished a call, or started, on the owner's NowMs clock.
  virtual int64_t last_active_ms() const = 0;

  // Hands it a call. Only when CanTakeCall().
  virtual void Deliver(PendingCall call) = 0;
  // A busy worker: gives it `call` to run after those it has (it waits in its ring), if fewer
  // than `max_waiting` wait there, the call it runs began recently (a slow call holds nothing),
  // and `call` fits its ring now. True if it took the call (then moved from).
  virtual bool Pipeline(PendingCall& call, size_t max_waiting) = 0;
  // Calls given to it and waiting behind the one it runs.
  virtual size_t calls_waiting() const = 0;
  // Stops it now if it is idle or starting, else once its call is done. Idempotent.
  virtual void Retire(absl::string_view why) = 0;

  bool CanTakeCall() const { return phase() == WorkerPhase::kIdle && !retiring(); }
  // Counted against the pool's size: it is, or soon will be, able to serve.
  bool CountsAsLive() const {
    const WorkerPhase p = phase();
    return !retiring() && (p == WorkerPhase::kStarting || p == WorkerPhase::kIdle ||
                           p == WorkerPhase::kBusy || p == WorkerPhase::kCancelling);
  }
};

}  // namespace mp::host
