// One microprocess as the host sees it: its rings, its doorbell, its process, and the calls it
// is serving. Its phase (pool_member.h) changes here and only here:
//
//   kStarting ──Started──▶ kIdle ──Deliver──▶ kBusy ──last answer──▶ kIdle
//                            │                  │ ▲
//                            │                  │ └─ answer, more calls in its ring
//                            │                  └──deadline of the call it runs──▶ kCancelling
//                            │                        ──late answer──▶ kBusy or kIdle
//                            │                        └──grace over──▶ Kill
//                            └──Retire──▶ kStopping (a stop frame; retiring busy workers
//                                                    stop once their calls are done)
//   any ──Kill(cause)──▶ kKilled;  any ──exit reported──▶ gone (Owner::OnWorkerExit)
//
// A busy worker may be given more calls (Pipeline): they wait in its request ring, and it takes
// them one after the other without sleeping, so under load a call costs no wake-up of the
// worker. Calls are answered in the order given; each keeps its own deadline (one that passes
// while the call waits behind another is answered 504 at once, and its late answer dropped)
// and gets its own error if the worker dies.
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
#include <deque>
#include <memory>
#include <optional>
#include <string>

#include "host/call.h"
#include "host/exit_cause.h"
#include "host/pool_member.h"
#include "host/process.h"
#include "host/service_broker.h"
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
  // The services its module was granted (none: null). Must outlive the channel.
  ServiceBroker* services = nullptr;
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
    // Wake-ups, for metrics: `to_worker` futex wakes the host made, `to_host` doorbell rings
    // the worker made.
    virtual void CountWakeups(uint64_t to_worker, uint64_t to_host) = 0;
    // A call that waited in the ring of a worker that died before it began: to run elsewhere.
    // (Module code has no effect outside its worker, so a call it never began is safe to give
    // to another; the call it ran is never retried, lest one call kill every worker.)
    virtual void Requeue(PendingCall call) = 0;
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
  bool Pipeline(PendingCall& call, size_t max_waiting) override;
  size_t calls_waiting() const override { return in_flight_.empty() ? 0 : in_flight_.size() - 1; }
  void Retire(absl::string_view why) override;

  // Ends it now: SIGKILL, and its call (if any) answered with `status` naming `why`.
  void Kill(ExitCause cause, std::string why, uint16_t status = 502);

  // ---- For snapshots and the host's own bookkeeping ----
  pid_t pid() const { return pid_; }
  pid_t helper_pid() const { return helper_pid_; }
  uint64_t errors() const { return errors_; }
  uint64_t service_requests() const { return service_requests_; }
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
  // Writes `call` into the request ring (in place, or as chunks when `allow_chunks`) and tracks
  // it; false if it does not fit now (only without `allow_chunks`).
  bool Send(PendingCall& call, bool allow_chunks);
  // The call it runs (the oldest it was given) is over: answers it with `result` unless it
  // was answered already, and settles the phase.
  void FinishHead(CallResult* result);
  // It died or was killed: the call it ran is answered with `status` and `why`; those waiting
  // behind it go back to the pool.
  void FailAll(uint16_t status, const std::string& why);
  void OnDeadline(uint64_t call_id, uint32_t timeout_ms);
  // The call it runs was answered already (504): a cancel frame and word, and the grace period.
  void CancelHead();
  void OnGraceOver(uint64_t call_id);
  void OnExit(const ExitInfo& exit);
  // A service request of the call it runs (the final frame of its message, copied out).
  void OnServiceRequest(uint64_t call_id, kj::ArrayPtr<const capnp::word> words);
  void OnServiceAnswer(uint64_t token, std::string service, ServiceAnswer answer,
                       kj::TimePoint started);
  void SendServiceAnswer(uint64_t call_id, const ServiceAnswer& answer);
  // Drops the service request in progress, if any (its call is over, cancelled or dead).
  void CancelService();
  void WakeWorker();
  void CountDoorbellRings();  // reads the doorbell's counter into the wake-up metric
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

  // The calls it holds, oldest (the one it runs) first. A call whose deadline passed has been
  // answered already (no fulfiller); its answer, when it comes, is dropped.
  struct InFlight {
    uint64_t id = 0;
    kj::Own<kj::PromiseFulfiller<CallResult>> fulfiller;
    CallRequest request;  // kept while it waits behind another, to run elsewhere if need be
    kj::TimePoint received = kj::origin<kj::TimePoint>();
    kj::Promise<void> deadline = nullptr;
    kj::TimePoint deadline_at = kj::origin<kj::TimePoint>();
    uint32_t depth = 0;  // module calls it is nested in
    ServiceUsage services;
  };
  std::deque<InFlight> in_flight_;
  kj::TimePoint head_started_ = kj::origin<kj::TimePoint>();  // when it began the one it runs
  // How long its calls take (exponential average, 1/8 per call): only a worker whose calls
  // are fast is given calls to wait in its ring. Starts high: a worker proves itself first.
  int64_t service_ns_ = 1'000'000'000;
  uint64_t next_call_id_ = 1;
  uint64_t cancelled_id_ = 0;  // the call it runs, given up on (kCancelling)
  uint64_t late_chunk_bytes_ = 0;  // of a late answer arriving in chunks (dropped, but bounded)
  kj::Promise<void> grace_ = nullptr;
  // A call too large for one frame, still being written as the worker makes room.
  std::optional<microproc::ChunkedSend> outgoing_;
  bool cancel_unsent_ = false;  // the ring was full of its chunks: cancel once there is room
  std::unique_ptr<microproc::MessageAssembler> replies_;  // a reply arriving in chunks

  // The service request of the call it runs, while the host performs it: one at a time (the
  // handler waits). `service_token_` changes whenever it is dropped, so that an answer that
  // comes anyway is recognized as stale.
  kj::Promise<void> service_ = nullptr;
  bool service_pending_ = false;
  uint64_t service_token_ = 0;
  uint64_t service_requests_ = 0;
  // A service answer waiting to be written behind `outgoing_`, or written as the worker makes
  // room.
  std::optional<microproc::ChunkedSend> service_out_;

  kj::Own<kj::UnixEventPort::FdObserver> bell_observer_;
  // Doorbell edges seen since its counter was last read (see WatchDoorbell).
  uint32_t bell_edges_ = 0;
  kj::Promise<void> watches_ = nullptr;
  // Deadline and grace expiries run here, on turns of their own: they reset `deadline_` and
  // `grace_`, which must not happen inside those promises' own callbacks.
  kj::TaskSet tasks_;
};

}  // namespace mp::host
