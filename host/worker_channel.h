// One microprocess as the host sees it: its rings, its doorbell, its process, and the call it
// is serving. Its phase (pool_member.h) changes here and only here:
//
//   kStarting ──Started──▶ kIdle ──Deliver──▶ kBusy ──answer──▶ kIdle
//                            │                  │
//                            │                  └──deadline──▶ kCancelling ──late answer──▶ kIdle
//                            │                                     └──grace over──▶ Kill
//                            └──Retire──▶ kStopping (a stop frame; retiring busy workers
//                                                    stop once their call is done)
//   any ──Kill(cause)──▶ kKilled;  any ──exit reported──▶ gone (Owner::OnWorkerExit)
//
// Everything the worker writes is hostile: frames are read through the ring's validating
// reader, copied out, decoded by response_decoder and checked by the reply rules; a violation
// kills the worker (Kill(kProtocol)) and answers its call with a 502 naming it.
//
// Not thread-safe; the supervisor's loop thread only.
#pragma once

#include <kj/async-unix.h>
#include <kj/timer.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "host/call.h"
#include "host/exit_cause.h"
#include "host/pool_member.h"
#include "host/process.h"
#include "microproc/ring_message.h"
#include "shm/doorbell.h"
#include "shm/ring.h"
#include "shm/unique_fd.h"

namespace mp::host {

struct WorkerConfig {
  std::string module;
  uint64_t generation = 0;
  uint64_t ring_bytes = 256 << 10;
  uint64_t max_message_bytes = 1 << 20;
  uint32_t call_timeout_ms = 10000;
  uint32_t cancel_grace_ms = 1000;
};

class WorkerChannel final : public PoolMember, private kj::TaskSet::ErrorHandler {
 public:
  // What the channel tells its module (host/module_runtime.h).
  class Owner {
   public:
    virtual ~Owner() = default;
    // The worker is done with a call. `result` is what the caller got (the module's answer, or
    // the host's when it gave up: deadline, death), `seconds` from receipt to answer; null when
    // only the worker is free again (the late answer to a call already answered 504).
    virtual void OnCallDone(WorkerChannel& w, const CallResult* result, double seconds) = 0;
    // It exited; `exit` says how. The channel may be destroyed on a later turn, not now.
    virtual void OnWorkerExit(WorkerChannel& w, const ExitReading& exit) = 0;
  };

  // Creates its rings and doorbell. The worker starts with Started() once its process exists.
  static absl::StatusOr<std::unique_ptr<WorkerChannel>> Create(uint64_t id,
                                                               const WorkerConfig& config,
                                                               kj::UnixEventPort& events,
                                                               kj::Timer& timer, Owner& owner);
  ~WorkerChannel() noexcept override;

  // Its process exists (a child of its generation's init): watch its doorbell, wait for
  // `exited` (from init's report), and serve. kStarting → kIdle (or kStopping if it was
  // retired meanwhile, or killed at once if it was killed meanwhile).
  void Started(pid_t pid, pid_t helper_pid, UniqueFd pidfd, kj::Promise<ExitInfo> exited);

  // ---- PoolMember ----
  uint64_t id() const override { return id_; }
  WorkerPhase phase() const override { return phase_; }
  bool retiring() const override { return retiring_; }
  uint64_t generation() const override { return config_.generation; }
  uint64_t calls() const override { return calls_; }
  int64_t last_active_ms() const override { return last_active_ms_; }
  void Deliver(PendingCall call) override;
  void Retire(absl::string_view why) override;

  // Ends it now: SIGKILL, and its call (if any) answered with `status` naming `why`.
  void Kill(ExitCause cause, std::string why, uint16_t status = 502);

  // ---- For snapshots and the host's own bookkeeping ----
  pid_t pid() const { return pid_; }
  pid_t helper_pid() const { return helper_pid_; }
  uint64_t errors() const { return errors_; }
  int64_t started_unix_ms() const { return started_unix_ms_; }
  uint64_t restarts_before() const { return restarts_before_; }
  void set_restarts_before(uint64_t n) { restarts_before_ = n; }
  bool landlock_claimed() const;
  const shm::RingFile& ring() const { return *ring_; }
  int ring_fd() const { return ring_->segment().fd(); }
  int doorbell_fd() const { return doorbell_->fd(); }
  // Releases the data pages of its rings if it is idle and has served since the last time.
  void TrimIdleRings();
  // For shutdown: a stop frame, whatever its phase.
  void SendStop();
  int pidfd() const { return pidfd_.get(); }
  // Answers its call, if any, with `result` (host stopping).
  void AbandonCall(CallResult result);

 private:
  WorkerChannel(uint64_t id, const WorkerConfig& config, kj::UnixEventPort& events,
                kj::Timer& timer, Owner& owner, std::unique_ptr<shm::RingFile> ring,
                std::unique_ptr<shm::Doorbell> doorbell);

  kj::Promise<void> WatchDoorbell();
  void DrainResponses();
  void PumpOutgoing();
  void Finish(CallResult result);
  void OnDeadline(uint64_t call_id, uint32_t timeout_ms);
  void OnGraceOver(uint64_t call_id);
  void OnExit(const ExitInfo& exit);
  void WakeWorker();
  // The event loop's clock, in ms: what the pool compares last_active_ms() with.
  int64_t MonotonicMs() const;
  void taskFailed(kj::Exception&& exception) override;

  const uint64_t id_;
  const WorkerConfig config_;
  kj::UnixEventPort& events_;
  kj::Timer& timer_;
  Owner& owner_;
  std::unique_ptr<shm::RingFile> ring_;
  std::unique_ptr<shm::Doorbell> doorbell_;
  shm::RingWriter requests_;
  shm::RingReader responses_;

  WorkerPhase phase_ = WorkerPhase::kStarting;
  bool retiring_ = false;
  std::optional<ExitCause> kill_cause_;  // set when the host decided to end it
  std::string kill_why_;
  pid_t pid_ = 0;
  pid_t helper_pid_ = 0;
  UniqueFd pidfd_;
  uint64_t calls_ = 0;
  uint64_t errors_ = 0;
  uint64_t calls_at_trim_ = 0;
  int64_t started_unix_ms_ = 0;
  int64_t last_active_ms_ = 0;
  uint64_t restarts_before_ = 0;

  // The call in flight (kBusy), or the one given up on (kCancelling).
  uint64_t next_call_id_ = 1;
  uint64_t call_id_ = 0;
  kj::Own<kj::PromiseFulfiller<CallResult>> fulfiller_;
  kj::TimePoint received_ = kj::origin<kj::TimePoint>();
  kj::Promise<void> deadline_ = nullptr;
  kj::Promise<void> grace_ = nullptr;
  // A call too large for one frame, still being written as the worker makes room.
  std::optional<microproc::ChunkedSend> outgoing_;
  bool cancel_unsent_ = false;  // the ring was full of its chunks: cancel once there is room
  std::unique_ptr<microproc::MessageAssembler> replies_;  // a reply arriving in chunks

  kj::Own<kj::UnixEventPort::FdObserver> bell_observer_;
  kj::Promise<void> watches_ = nullptr;
  // Deadline and grace expiries run here, on turns of their own: they reset `deadline_` and
  // `grace_`, which must not happen inside those promises' own callbacks.
  kj::TaskSet tasks_;
};

}  // namespace mp::host
