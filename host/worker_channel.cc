#include "host/worker_channel.h"

#include <capnp/message.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <signal.h>
#include <sys/time.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "host/call_codec.h"
#include "host/log.h"
#include "host/response_decoder.h"

namespace mp::host {
namespace {

int64_t NowUnixMs() {
  timeval tv;
  gettimeofday(&tv, nullptr);
  return int64_t{tv.tv_sec} * 1000 + tv.tv_usec / 1000;
}

}  // namespace

absl::StatusOr<std::unique_ptr<WorkerChannel>> WorkerChannel::Create(uint64_t id,
                                                                     const WorkerConfig& config,
                                                                     kj::UnixEventPort& events,
                                                                     kj::Timer& timer,
                                                                     Owner& owner) {
  auto ring = shm::RingFile::Create(absl::StrCat("mp-ring.", config.module, ".w", id),
                                    config.ring_bytes, config.ring_bytes,
                                    config.max_message_bytes);
  if (!ring.ok()) return ring.status();
  auto bell = shm::Doorbell::Create();
  if (!bell.ok()) return bell.status();
  return std::unique_ptr<WorkerChannel>(new WorkerChannel(
      id, config, events, timer, owner, std::make_unique<shm::RingFile>(*std::move(ring)),
      std::make_unique<shm::Doorbell>(*std::move(bell))));
}

WorkerChannel::WorkerChannel(uint64_t id, const WorkerConfig& config, kj::UnixEventPort& events,
                             kj::Timer& timer, Owner& owner, std::unique_ptr<shm::RingFile> ring,
                             std::unique_ptr<shm::Doorbell> doorbell)
    : id_(id),
      config_(config),
      events_(events),
      timer_(timer),
      owner_(owner),
      ring_(std::move(ring)),
      doorbell_(std::move(doorbell)),
      tasks_(*this) {
  // The host sleeps in its event loop: the worker must ring until the host says otherwise.
  ring_->header()->response.consumer_sleeping.store(1, std::memory_order_relaxed);
  requests_ = ring_->RequestWriter();
  responses_ = ring_->ResponseReader();
  started_unix_ms_ = NowUnixMs();
  last_active_ms_ = MonotonicMs();
}

int64_t WorkerChannel::MonotonicMs() const {
  return (timer_.now() - kj::origin<kj::TimePoint>()) / kj::MILLISECONDS;
}

WorkerChannel::~WorkerChannel() noexcept {
  // Observers unregister from epoll on destruction: before their fds close.
  watches_ = nullptr;
  bell_observer_ = nullptr;
}

void WorkerChannel::Started(pid_t pid, pid_t helper_pid, UniqueFd pidfd,
                            kj::Promise<ExitInfo> exited) {
  pid_ = pid;
  helper_pid_ = helper_pid;
  pidfd_ = std::move(pidfd);
  started_unix_ms_ = NowUnixMs();
  last_active_ms_ = MonotonicMs();
  bell_observer_ = kj::heap<kj::UnixEventPort::FdObserver>(
      events_, doorbell_->fd(), kj::UnixEventPort::FdObserver::OBSERVE_READ);
  watches_ = WatchDoorbell()
                 .exclusiveJoin(exited.then([this](ExitInfo exit) { OnExit(exit); }))
                 .eagerlyEvaluate(nullptr);
  if (kill_cause_) {
    SignalChild(pidfd_.get(), SIGKILL);  // ended while it started: its exit cleans up
  } else if (phase_ == WorkerPhase::kStarting) {
    phase_ = WorkerPhase::kIdle;
  }
}

bool WorkerChannel::landlock_claimed() const {
  return ring_->header()->worker.landlock.load(std::memory_order_acquire) == 1;
}

void WorkerChannel::taskFailed(kj::Exception&& exception) {
  LogEvent(LogLevel::kError, "internal_error",
           {{"module", config_.module}, {"what", exception.getDescription().cStr()}});
}

void WorkerChannel::WakeWorker() { shm::WakeFutexConsumer(&ring_->header()->request); }

kj::Promise<void> WorkerChannel::WatchDoorbell() {
  return bell_observer_->whenBecomesReadable().then([this]() -> kj::Promise<void> {
    doorbell_->Drain();
    DrainResponses();
    PumpOutgoing();
    if (kill_cause_) return kj::NEVER_DONE;
    return WatchDoorbell();
  });
}

void WorkerChannel::Deliver(PendingCall p) {
  const size_t bytes = CallBytes(p.request);  // ≤ maxMessageKb: the module checked
  call_id_ = next_call_id_++;
  std::byte* frame = bytes <= shm::MaxFramePayload(requests_.capacity())
                         ? requests_.Reserve(bytes)
                         : nullptr;
  bool wake = false;
  // In place where the worker will read it when it fits now; else chunks, as it makes room.
  outgoing_ = microproc::BuildMessage(
      requests_, shm::FrameKind::kCall, call_id_, bytes, frame,
      [&](capnp::MessageBuilder& m) { FillCall(m.initRoot<call::Call>(), p.request); }, &wake);
  if (wake) WakeWorker();
  fulfiller_ = std::move(p.fulfiller);
  received_ = p.received;
  phase_ = WorkerPhase::kBusy;
  const uint32_t timeout_ms = p.request.timeout_ms ? p.request.timeout_ms : config_.call_timeout_ms;
  // The expiry runs on a turn of its own: it resets `deadline_`, which must not happen inside
  // the deadline's own callback.
  deadline_ = timer_.afterDelay(timeout_ms * kj::MILLISECONDS)
                  .then([this, call_id = call_id_, timeout_ms]() {
                    tasks_.add(kj::evalLater([this, call_id, timeout_ms]() { OnDeadline(call_id, timeout_ms); }));
                  })
                  .eagerlyEvaluate(nullptr);
  PumpOutgoing();
}

void WorkerChannel::PumpOutgoing() {
  if (kill_cause_) return;
  if (cancel_unsent_) {
    bool wake = false;
    if (requests_.TryWrite(shm::FrameKind::kCancel, call_id_, {}, &wake)) {
      cancel_unsent_ = false;
      if (wake) WakeWorker();
    }
  }
  if (!outgoing_) return;
  bool wake = false;
  const bool done = outgoing_->Pump(requests_, &wake);
  if (wake) WakeWorker();
  if (done) {
    outgoing_.reset();
  } else if (requests_.PeerCorrupt()) {
    Kill(ExitCause::kProtocol, "broke the ring protocol (request ring head out of range)");
  }
}

void WorkerChannel::OnDeadline(uint64_t call_id, uint32_t timeout_ms) {
  if (call_id != call_id_ || phase_ != WorkerPhase::kBusy) return;
  ++errors_;
  // Still computing: not dispatchable until its late answer arrives (and is dropped) or the
  // grace period ends it.
  phase_ = WorkerPhase::kCancelling;
  Finish(HostError(504, config_.module,
                   absl::StrCat("worker ", pid_, " of module '", config_.module,
                                "' missed its deadline of ", timeout_ms, " ms")));
  outgoing_.reset();  // a call still arriving: the worker drops it on the cancel frame
  if (replies_) replies_->Reset();
  ring_->header()->host.cancel_call_id.store(call_id, std::memory_order_release);
  bool wake = false;
  if (!requests_.TryWrite(shm::FrameKind::kCancel, call_id, {}, &wake)) {
    cancel_unsent_ = true;  // sent when the worker makes room (its doorbell)
  } else if (wake) {
    WakeWorker();
  }
  const uint32_t grace = config_.cancel_grace_ms;
  grace_ = timer_.afterDelay(grace * kj::MILLISECONDS)
               .then([this, call_id]() {
                 tasks_.add(kj::evalLater([this, call_id]() { OnGraceOver(call_id); }));
               })
               .eagerlyEvaluate(nullptr);
}

void WorkerChannel::OnGraceOver(uint64_t call_id) {
  if (call_id != call_id_ || phase_ != WorkerPhase::kCancelling) return;
  Kill(ExitCause::kDeadline,
       absl::StrCat("did not stop within ", config_.cancel_grace_ms,
                    " ms of its call being cancelled"),
       504);
}

void WorkerChannel::Finish(CallResult result) {
  result.worker_pid = pid_;
  double seconds = 0;
  if (fulfiller_) {
    seconds = (timer_.now() - received_) / kj::NANOSECONDS / 1e9;
    fulfiller_->fulfill(CallResult(result));
    fulfiller_ = nullptr;
  }
  deadline_ = nullptr;
  last_active_ms_ = MonotonicMs();
  // The phase is settled before the owner hears of it: the pool may hand out the next call.
  if (phase_ == WorkerPhase::kBusy) phase_ = WorkerPhase::kIdle;
  if (retiring_ && phase_ == WorkerPhase::kIdle) Retire("");
  owner_.OnCallDone(*this, &result, seconds);
}

void WorkerChannel::DrainResponses() {
  bool released_chunks = false;
  responses_.ClearSleeping();
  for (;;) {
    if (kill_cause_) return;
    shm::FrameView frame;
    const shm::ReadStatus st = responses_.Peek(&frame);
    if (st == shm::ReadStatus::kEmpty) {
      responses_.AnnounceSleep();
      if (!responses_.Empty()) {
        responses_.ClearSleeping();
        continue;
      }
      break;
    }
    if (st == shm::ReadStatus::kViolation) {
      Kill(ExitCause::kProtocol, absl::StrCat("broke the ring protocol (",
                                              shm::RingViolationName(responses_.violation()),
                                              ")"));
      return;
    }
    const uint64_t call_id = frame.call_id;
    const shm::FrameKind kind = frame.kind;
    const bool late = phase_ == WorkerPhase::kCancelling && call_id == call_id_;
    if (!late && (call_id == 0 || call_id != call_id_ || phase_ != WorkerPhase::kBusy)) {
      Kill(ExitCause::kProtocol, absl::StrCat("broke the ring protocol (answer for call ", call_id,
                                              ", which it was not given)"));
      return;
    }
    if (kind == shm::FrameKind::kChunk) {
      // A piece of a reply too large for one frame: copied into private memory, released at
      // once so that the worker can write the next one. A late answer's pieces are dropped.
      absl::Status added = absl::OkStatus();
      if (!late) {
        if (!replies_) {
          replies_ = std::make_unique<microproc::MessageAssembler>(config_.max_message_bytes);
        }
        added = replies_->AddChunk(call_id, frame.payload);
      }
      responses_.Pop();
      released_chunks = true;
      if (!added.ok()) {
        Kill(ExitCause::kProtocol, absl::StrCat("broke the ring protocol (reply ", added.message(),
                                                " of maxMessageKb)"));
        return;
      }
      continue;
    }
    if (late) {
      // The late answer to a call already answered with 504: drop it; the worker is free.
      responses_.Pop();
      if (replies_) replies_->Reset();
      cancel_unsent_ = false;
      grace_ = nullptr;
      phase_ = WorkerPhase::kIdle;
      if (retiring_) Retire("");
      owner_.OnCallDone(*this, nullptr, 0);
      continue;
    }
    // Copy out before validating: the worker can rewrite shared memory at any time.
    absl::StatusOr<DecodedReply> decoded;
    if (replies_ && replies_->active()) {
      auto whole = replies_->Complete(call_id, frame.payload);
      responses_.Pop();
      released_chunks = true;
      decoded = whole.ok() ? DecodeResponseWords(kind, *whole) : whole.status();
      replies_->Reset();
    } else if (frame.payload.size() % sizeof(capnp::word) != 0) {
      decoded = absl::InvalidArgumentError("payload not a whole number of words");
    } else {
      auto words = kj::heapArray<capnp::word>(frame.payload.size() / sizeof(capnp::word));
      std::memcpy(words.begin(), frame.payload.data(), frame.payload.size());
      responses_.Pop();
      decoded = DecodeResponseWords(kind, words);
    }
    if (!decoded.ok()) {
      Kill(ExitCause::kProtocol,
           absl::StrCat("broke the ring protocol (", decoded.status().message(), ")"));
      return;
    }
    CallResult result = ResultOfReply(*std::move(decoded), config_.module, pid_);
    if (result.from_host) ++errors_;
    ++calls_;
    Finish(std::move(result));
  }
  // The worker may be waiting for room to write its next chunk.
  if (released_chunks) shm::WakeFutexConsumerIfSleeping(&ring_->header()->request);
}

void WorkerChannel::Retire(absl::string_view) {
  retiring_ = true;
  if (kill_cause_ || phase_ == WorkerPhase::kStopping) return;
  if (phase_ == WorkerPhase::kBusy || phase_ == WorkerPhase::kCancelling) return;  // after it
  // Idle, or still starting (it reads the frame once it serves): a stop frame.
  bool wake = false;
  if (!requests_.TryWrite(shm::FrameKind::kStop, 0, {}, &wake)) {
    Kill(ExitCause::kProtocol, "could not be told to stop (request ring full)");
    return;
  }
  if (wake) WakeWorker();
  if (phase_ == WorkerPhase::kIdle) phase_ = WorkerPhase::kStopping;
}

void WorkerChannel::Kill(ExitCause cause, std::string why, uint16_t status) {
  if (kill_cause_) return;
  kill_cause_ = cause;
  kill_why_ = std::move(why);
  phase_ = WorkerPhase::kKilled;
  outgoing_.reset();
  replies_.reset();
  grace_ = nullptr;
  if (pidfd_) SignalChild(pidfd_.get(), SIGKILL);
  if (fulfiller_) {
    ++errors_;
    Finish(HostError(status, config_.module,
                     absl::StrCat("worker ", pid_, " of module '", config_.module, "' ", kill_why_)));
  }
}

void WorkerChannel::OnExit(const ExitInfo& exit) {
  ExitReading reading = ReadExit(exit, *ring_->header());
  const bool killed = kill_cause_.has_value();
  phase_ = WorkerPhase::kKilled;
  if (killed) {
    reading.description = absl::StrCat(kill_why_, "; ", reading.description);
    reading.cause = *kill_cause_;
  } else if (retiring_ && exit.signal == 0 && exit.exit_code == 0) {
    reading.cause = ExitCause::kRetired;
    reading.description = "retired";
  } else if (fulfiller_) {
    ++errors_;
    Finish(HostError(
        502, config_.module,
        reading.syscall.empty()
            ? absl::StrCat("worker ", pid_, " of module '", config_.module,
                           "' died during the call: ", reading.description)
            : absl::StrCat("module '", config_.module, "' called forbidden syscall ",
                           reading.syscall, "; its worker ", pid_, " was killed")));
  }
  if (!killed) kill_cause_ = reading.cause;
  outgoing_.reset();
  owner_.OnWorkerExit(*this, reading);
}

void WorkerChannel::TrimIdleRings() {
  // Ring positions only grow, so over time a worker touches every page of its rings. While it
  // is idle both rings are empty: release their data pages (the header page, with the
  // positions, stays), so that a worker costs its rings only while it carries a message.
  if (phase_ != WorkerPhase::kIdle || calls_ == calls_at_trim_) return;
  calls_at_trim_ = calls_;
  ::fallocate(ring_->segment().fd(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
              static_cast<off_t>(shm::kRingHeaderBytes),
              static_cast<off_t>(ring_->request_capacity() + ring_->response_capacity()));
}

void WorkerChannel::SendStop() {
  bool wake = false;
  if (requests_.TryWrite(shm::FrameKind::kStop, 0, {}, &wake) && wake) WakeWorker();
}

void WorkerChannel::AbandonCall(CallResult result) {
  if (!fulfiller_) return;
  fulfiller_->fulfill(std::move(result));
  fulfiller_ = nullptr;
}

}  // namespace mp::host
