#include "host/worker_channel.h"

#include <capnp/message.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <signal.h>
#include <sys/time.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "host/call_codec.h"
#include "host/service_codec.h"
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
  const bool services = config.services != nullptr && config.services->HasServices(config.module);
  ring->header()->host.services.store(services ? 1 : 0, std::memory_order_release);
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

void WorkerChannel::CountDoorbellRings() {
  bell_edges_ = 0;
  owner_.CountWakeups(0, doorbell_->Drain());
}

void WorkerChannel::WakeWorker() {
  shm::WakeFutexConsumer(&ring_->header()->request);
  owner_.CountWakeups(1, 0);
}

// KJ watches the doorbell edge-triggered, and an eventfd signals an edge on every write, read
// or not: the counter needs no read() per wake-up. It is read every kBellEdgesPerRead edges
// and when the worker ends, so the wake-up metric is exact, published in batches.
kj::Promise<void> WorkerChannel::WatchDoorbell() {
  return bell_observer_->whenBecomesReadable().then([this]() -> kj::Promise<void> {
    static constexpr uint32_t kBellEdgesPerRead = 64;
    if (++bell_edges_ == kBellEdgesPerRead) CountDoorbellRings();
    DrainResponses();
    PumpOutgoing();
    if (kill_cause_) return kj::NEVER_DONE;
    return WatchDoorbell();
  });
}

bool WorkerChannel::Send(PendingCall& p, bool allow_chunks) {
  const size_t bytes = CallBytes(p.request);  // ≤ maxMessageKb: the module checked
  std::byte* frame = bytes <= shm::MaxFramePayload(requests_.capacity())
                         ? requests_.Reserve(bytes)
                         : nullptr;
  if (frame == nullptr && !allow_chunks) return false;
  const uint64_t id = next_call_id_++;
  bool wake = false;
  // In place where the worker will read it when it fits now; else chunks, as it makes room.
  outgoing_ = microproc::BuildMessage(
      requests_, shm::FrameKind::kCall, id, bytes, frame,
      [&](capnp::MessageBuilder& m) { FillCall(m.initRoot<call::Call>(), p.request); }, &wake);
  if (wake) WakeWorker();
  if (in_flight_.empty()) head_started_ = timer_.now();
  const uint32_t timeout_ms = p.request.timeout_ms ? p.request.timeout_ms : config_.call_timeout_ms;
  const bool waits = !in_flight_.empty();
  InFlight& call = in_flight_.emplace_back();
  call.id = id;
  call.fulfiller = std::move(p.fulfiller);
  call.received = p.received;
  call.depth = p.request.depth;
  call.deadline_at = timer_.now() + timeout_ms * kj::MILLISECONDS;
  if (waits) call.request = std::move(p.request);
  // The expiry runs on a turn of its own: it may drop this promise, which must not happen
  // inside its own callback.
  call.deadline = timer_.afterDelay(timeout_ms * kj::MILLISECONDS)
                      .then([this, id, timeout_ms]() {
                        tasks_.add(kj::evalLater([this, id, timeout_ms]() { OnDeadline(id, timeout_ms); }));
                      })
                      .eagerlyEvaluate(nullptr);
  phase_ = WorkerPhase::kBusy;
  PumpOutgoing();
  return true;
}

void WorkerChannel::Deliver(PendingCall p) { Send(p, /*allow_chunks=*/true); }

bool WorkerChannel::Pipeline(PendingCall& call, size_t max_waiting) {
  // Only behind calls that are quick, by this worker's record and by how long the one it runs
  // has taken so far: a call must never wait long in a ring while another worker could take it.
  static constexpr int64_t kFastNs = 1'000'000;
  static constexpr auto kMaxHeadAge = 2 * kj::MILLISECONDS;
  // Never behind a call that waits for a service: its answer must not queue behind new calls
  // (and a module calling itself would wait behind its own caller).
  if (phase_ != WorkerPhase::kBusy || retiring_ || kill_cause_ || outgoing_ || cancel_unsent_ ||
      service_pending_ || service_out_ ||
      in_flight_.empty() || calls_waiting() >= max_waiting || service_ns_ > kFastNs ||
      timer_.now() - head_started_ > kMaxHeadAge) {
    return false;
  }
  return Send(call, /*allow_chunks=*/false);
}

void WorkerChannel::PumpOutgoing() {
  if (kill_cause_) return;
  if (cancel_unsent_) {
    bool wake = false;
    if (requests_.TryWrite(shm::FrameKind::kCancel, cancelled_id_, {}, &wake)) {
      cancel_unsent_ = false;
      if (wake) WakeWorker();
    }
  }
  for (auto* send : {&outgoing_, &service_out_}) {
    if (!*send) continue;
    bool wake = false;
    const bool done = (*send)->Pump(requests_, &wake);
    if (wake) WakeWorker();
    if (!done) {
      if (requests_.PeerCorrupt()) {
        Kill(ExitCause::kProtocol, "broke the ring protocol (request ring head out of range)");
      }
      return;  // the rest once the worker makes room; nothing may overtake it
    }
    send->reset();
  }
}

void WorkerChannel::OnDeadline(uint64_t call_id, uint32_t timeout_ms) {
  auto it = std::find_if(in_flight_.begin(), in_flight_.end(),
                         [call_id](const InFlight& c) { return c.id == call_id; });
  if (it == in_flight_.end() || !it->fulfiller || kill_cause_) return;
  ++errors_;
  if (it != in_flight_.begin()) {
    // Still waiting in the ring behind a slower call: answered now, its answer dropped later.
    CallResult result = HostError(
        504, config_.module,
        absl::StrCat("worker ", pid_, " of module '", config_.module, "' missed the deadline of ",
                     timeout_ms, " ms while the call waited behind another"));
    result.worker_pid = pid_;
    const double seconds = (timer_.now() - it->received) / kj::NANOSECONDS / 1e9;
    it->fulfiller->fulfill(CallResult(result));
    it->fulfiller = nullptr;
    owner_.OnCallDone(*this, &result, seconds);
    return;
  }
  // The call it runs. Still computing: not dispatchable until its late answer arrives (and is
  // dropped) or the grace period ends it.
  const double seconds = (timer_.now() - it->received) / kj::NANOSECONDS / 1e9;
  CallResult result = HostError(504, config_.module,
                                absl::StrCat("worker ", pid_, " of module '", config_.module,
                                             "' missed its deadline of ", timeout_ms, " ms"));
  result.worker_pid = pid_;
  it->fulfiller->fulfill(CallResult(result));
  it->fulfiller = nullptr;
  it->deadline = nullptr;
  CancelHead();
  owner_.OnCallDone(*this, &result, seconds);
}

void WorkerChannel::CancelService() {
  ++service_token_;
  service_pending_ = false;
  service_ = nullptr;
  service_out_.reset();
}

void WorkerChannel::CancelHead() {
  const uint64_t call_id = in_flight_.front().id;
  CancelService();
  phase_ = WorkerPhase::kCancelling;
  cancelled_id_ = call_id;
  if (outgoing_ && in_flight_.size() == 1) outgoing_.reset();  // the worker drops it on the cancel
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
  if (call_id != cancelled_id_ || phase_ != WorkerPhase::kCancelling) return;
  Kill(ExitCause::kDeadline,
       absl::StrCat("did not stop within ", config_.cancel_grace_ms,
                    " ms of its call being cancelled"),
       504);
}

void WorkerChannel::FinishHead(CallResult* result) {
  // Answered while its request was pending or its answer still going out: a hostile worker's
  // doing; nothing of that request may reach the next call.
  if (service_pending_ || service_out_) CancelService();
  InFlight head = std::move(in_flight_.front());
  in_flight_.pop_front();
  const kj::TimePoint now = timer_.now();
  service_ns_ += ((now - head_started_) / kj::NANOSECONDS - service_ns_) / 8;
  head_started_ = now;
  double seconds = 0;
  const bool answered_here = result != nullptr && head.fulfiller;
  if (answered_here) {
    result->worker_pid = pid_;
    seconds = (timer_.now() - head.received) / kj::NANOSECONDS / 1e9;
    head.fulfiller->fulfill(CallResult(*result));
  }
  last_active_ms_ = MonotonicMs();
  // The phase is settled before the owner hears of it: the pool may hand out the next call.
  if (phase_ == WorkerPhase::kBusy || phase_ == WorkerPhase::kCancelling) {
    phase_ = in_flight_.empty() ? WorkerPhase::kIdle : WorkerPhase::kBusy;
    // The next one already missed its deadline while it waited (answered 504): it must not run
    // unbounded, so it starts cancelled, with its grace period.
    if (!in_flight_.empty() && !in_flight_.front().fulfiller) CancelHead();
  }
  if (retiring_ && phase_ == WorkerPhase::kIdle) Retire("");
  // A late answer (or one to a call answered 504 while it waited) only frees the worker.
  owner_.OnCallDone(*this, answered_here ? result : nullptr, seconds);
}

void WorkerChannel::FailAll(uint16_t status, const std::string& why) {
  std::deque<InFlight> calls = std::move(in_flight_);
  in_flight_.clear();
  last_active_ms_ = MonotonicMs();
  // Those it never began, to another worker, in their order.
  for (size_t i = calls.size(); i > 1; --i) {
    InFlight& c = calls[i - 1];
    if (!c.fulfiller) continue;
    owner_.Requeue(PendingCall{std::move(c.request), std::move(c.fulfiller), c.received});
  }
  for (InFlight& c : calls) {
    if (!c.fulfiller) continue;
    ++errors_;
    CallResult r = HostError(status, config_.module, why);
    r.worker_pid = pid_;
    const double seconds = (timer_.now() - c.received) / kj::NANOSECONDS / 1e9;
    c.fulfiller->fulfill(CallResult(r));
    owner_.OnCallDone(*this, &r, seconds);
  }
}

void WorkerChannel::DrainResponses() {
  // At most this many frames per pass, then the loop's other work: a worker writing frames as
  // fast as the host reads them must not hold the event loop.
  static constexpr int kFramesPerPass = 1024;
  bool released_chunks = false;
  responses_.ClearSleeping();
  for (int frames = 0;; ++frames) {
    if (kill_cause_) return;
    if (frames == kFramesPerPass) {
      doorbell_->Ring();  // another pass on a later turn
      break;
    }
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
    // Answers come in the order the calls were given: only the oldest may be answered.
    if (call_id == 0 || in_flight_.empty() || call_id != in_flight_.front().id) {
      Kill(ExitCause::kProtocol, absl::StrCat("broke the ring protocol (answer for call ", call_id,
                                              ", which it was not given or not next)"));
      return;
    }
    const bool late = !in_flight_.front().fulfiller;
    if (kind == shm::FrameKind::kChunk) {
      // A piece of a reply too large for one frame: copied into private memory, released at
      // once so that the worker can write the next one. A late answer's pieces are dropped.
      absl::Status added = absl::OkStatus();
      if (!late) {
        if (!replies_) {
          replies_ = std::make_unique<microproc::MessageAssembler>(config_.max_message_bytes);
        }
        added = replies_->AddChunk(call_id, frame.payload);
      } else if ((late_chunk_bytes_ += frame.payload.size()) > config_.max_message_bytes) {
        added = absl::ResourceExhaustedError(absl::StrCat(
            "(a late one) of more than ", config_.max_message_bytes, " bytes, past the limit"));
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
    if (late && kind == shm::FrameKind::kServiceRequest) {
      // A request of a call already given up on: dropped; the worker has its cancel.
      late_chunk_bytes_ = 0;
      responses_.Pop();
      if (replies_) replies_->Reset();
      continue;
    }
    if (late) {
      // The late answer to a call already answered with 504: dropped.
      late_chunk_bytes_ = 0;
      responses_.Pop();
      if (replies_) replies_->Reset();
      if (call_id == cancelled_id_) {
        cancel_unsent_ = false;
        grace_ = nullptr;
        cancelled_id_ = 0;
      }
      ++calls_;
      FinishHead(nullptr);
      continue;
    }
    if (kind == shm::FrameKind::kServiceRequest) {
      // Copied out (or reassembled) before it is read, like a reply.
      kj::Array<capnp::word> words;
      if (replies_ && replies_->active()) {
        auto whole = replies_->Complete(call_id, frame.payload);
        if (whole.ok()) {
          words = kj::heapArray<capnp::word>(whole->size());
          std::memcpy(words.begin(), whole->begin(), whole->size() * sizeof(capnp::word));
        }
        replies_->Reset();
        released_chunks = true;
      } else if (frame.payload.size() % sizeof(capnp::word) == 0) {
        words = kj::heapArray<capnp::word>(frame.payload.size() / sizeof(capnp::word));
        std::memcpy(words.begin(), frame.payload.data(), frame.payload.size());
      }
      // One frame: the worker waits for the answer, not for room; waking it now would only
      // send it back to sleep.
      responses_.Pop();
      if (words.size() == 0) {
        Kill(ExitCause::kProtocol, "broke the ring protocol (a malformed service request frame)");
        return;
      }
      OnServiceRequest(call_id, words);
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
    FinishHead(&result);
  }
  // The worker may be waiting for room to write its next chunk.
  if (released_chunks) shm::WakeFutexConsumerIfSleeping(&ring_->header()->request);
}

void WorkerChannel::OnServiceRequest(uint64_t call_id, kj::ArrayPtr<const capnp::word> words) {
  // Read from the ring of a worker that has exited (OnExit drains it): its calls fail, and
  // nothing it asked for is performed.
  if (phase_ == WorkerPhase::kKilled) return;
  if (service_pending_) {
    Kill(ExitCause::kProtocol,
         "broke the ring protocol (a service request while its previous one was unanswered)");
    return;
  }
  auto request = DecodeServiceRequest(words);
  if (!request.ok()) {
    Kill(ExitCause::kProtocol,
         absl::StrCat("broke the ring protocol (", request.status().message(), ")"));
    return;
  }
  ++service_requests_;
  InFlight& head = in_flight_.front();
  const kj::TimePoint now = timer_.now();
  ServiceCaller caller{config_.module, head.depth, head.deadline_at - now};
  if (config_.services == nullptr) {
    SendServiceAnswer(call_id, FailedAnswer(ServiceAnswer::Outcome::kRefused,
                                            "unknown_service: this module has no services"));
    return;
  }
  ServiceBroker& broker = *config_.services;
  ServiceBroker::Admission admission = broker.Admit(caller, *request, head.services);
  if (admission.refusal) {
    ServiceAnswer answer = FailedAnswer(
        ServiceAnswer::Outcome::kRefused,
        absl::StrCat(ServiceRuleName(admission.refusal->rule), ": ", admission.refusal->message));
    broker.Record(config_.module, request->service, answer, 0);
    SendServiceAnswer(call_id, answer);
    return;
  }
  service_pending_ = true;
  const uint64_t token = ++service_token_;
  std::string service = request->service;
  // Past the module's rate, the request waits for its token first (the worker sleeps).
  kj::Promise<ServiceAnswer> performed = nullptr;
  if (admission.wait > 0 * kj::NANOSECONDS) {
    caller.time_left -= admission.wait;
    performed = timer_.afterDelay(admission.wait)
                    .then([&broker, caller = std::move(caller),
                           request = *std::move(request)]() mutable {
                      return broker.Perform(caller, std::move(request),
                                            /*grant_checked_this_turn=*/false);
                    });
  } else {
    performed = broker.Perform(caller, *std::move(request), /*grant_checked_this_turn=*/true);
  }
  // The answer is handled on a turn of its own: handling it may drop `service_`, which must
  // not happen inside its own callback.
  service_ = kj::mv(performed)
                 .catch_([](kj::Exception&& e) {
                   return FailedAnswer(ServiceAnswer::Outcome::kFailed,
                                       absl::StrCat("failed: ", e.getDescription().cStr()));
                 })
                 .then([this, token, service = std::move(service), now](ServiceAnswer answer) mutable {
                   tasks_.add(kj::evalLater(
                       [this, token, service = std::move(service), now,
                        answer = std::move(answer)]() mutable {
                         OnServiceAnswer(token, std::move(service), std::move(answer), now);
                       }));
                 })
                 .eagerlyEvaluate([this](kj::Exception&& e) { taskFailed(kj::mv(e)); });
}

void WorkerChannel::OnServiceAnswer(uint64_t token, std::string service, ServiceAnswer answer,
                                    kj::TimePoint started) {
  if (token != service_token_ || !service_pending_ || kill_cause_ || in_flight_.empty()) return;
  service_pending_ = false;
  InFlight& head = in_flight_.front();
  if (!head.fulfiller) return;  // given up on meanwhile
  ServiceBroker& broker = *config_.services;
  ServiceCaller caller{config_.module, head.depth, head.deadline_at - timer_.now()};
  broker.AdmitAnswer(caller, service, head.services, answer);
  broker.Record(config_.module, service, answer,
                (timer_.now() - started) / kj::NANOSECONDS / 1e9);
  SendServiceAnswer(head.id, answer);
}

void WorkerChannel::SendServiceAnswer(uint64_t call_id, const ServiceAnswer& answer) {
  if (service_out_) {
    Kill(ExitCause::kProtocol, "broke the ring protocol (a service request while an answer was being sent)");
    return;
  }
  kj::Array<capnp::word> words = EncodeServiceReply(answer);
  if (words.size() * sizeof(capnp::word) > config_.max_message_bytes) {
    // The worker would refuse it: an error it can read instead.
    words = EncodeServiceReply(FailedAnswer(
        ServiceAnswer::Outcome::kRefused,
        absl::StrCat("max_message: the answer of ", words.size() * sizeof(capnp::word),
                     " bytes exceeds the module's maxMessageKb (", config_.max_message_bytes,
                     " bytes)")));
  }
  service_out_.emplace(shm::FrameKind::kServiceReply, call_id, std::move(words));
  PumpOutgoing();
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
  CancelService();
  if (pidfd_) SignalChild(pidfd_.get(), SIGKILL);
  FailAll(status, absl::StrCat("worker ", pid_, " of module '", config_.module, "' ", kill_why_));
}

void WorkerChannel::OnExit(const ExitInfo& exit) {
  // Answers it wrote before it ended are answers: read them first (its exit report may come
  // before its doorbell), so that only calls really left unanswered fail, and a call it did
  // finish is not taken for one it never began.
  // Killed first, so that the pool, hearing of those answers, gives it nothing more.
  phase_ = WorkerPhase::kKilled;
  if (!kill_cause_) DrainResponses();
  CountDoorbellRings();
  ExitReading reading = ReadExit(exit, *ring_->header());
  const bool killed = kill_cause_.has_value();
  if (killed) {
    reading.description = absl::StrCat(kill_why_, "; ", reading.description);
    reading.cause = *kill_cause_;
  } else if (retiring_ && exit.signal == 0 && exit.exit_code == 0 && in_flight_.empty()) {
    reading.cause = ExitCause::kRetired;
    reading.description = "retired";
  } else if (!in_flight_.empty()) {
    FailAll(502, reading.syscall.empty()
                     ? absl::StrCat("worker ", pid_, " of module '", config_.module,
                                    "' died during the call: ", reading.description)
                     : absl::StrCat("module '", config_.module, "' called forbidden syscall ",
                                    reading.syscall, "; its worker ", pid_, " was killed"));
  }
  if (!killed) kill_cause_ = reading.cause;
  outgoing_.reset();
  CancelService();
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
  CancelService();  // a worker waiting for an answer reads its stop frame as a cancel
  for (InFlight& c : in_flight_) {
    if (!c.fulfiller) continue;
    c.fulfiller->fulfill(CallResult(result));
    c.fulfiller = nullptr;
  }
}

}  // namespace mp::host
