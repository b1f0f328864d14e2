#include "microproc/worker.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/io.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "schemas/call.capnp.h"
#include "microproc/exit_status.h"
#include "microproc/ring_message.h"
#include "shm/doorbell.h"
#include "shm/module_heap.h"

namespace mp::microproc {
namespace {

// The reply a handler builds through mp_reply's function pointers.
struct ReplyState {
  mp_reply abi;
  const std::atomic<uint64_t>* cancel_call_id = nullptr;  // host-written
  uint64_t call_id = 0;
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  void Reset() {
    status = 200;
    headers.clear();
    body.clear();
  }
  static ReplyState* From(mp_reply* r) { return static_cast<ReplyState*>(r->host); }
};

void SetStatus(mp_reply* r, int status) { ReplyState::From(r)->status = status; }
void AddHeader(mp_reply* r, mp_str name, mp_str value) {
  ReplyState::From(r)->headers.emplace_back(std::string(name.data, name.size),
                                            std::string(value.data, value.size));
}
void AppendBody(mp_reply* r, const void* data, size_t size) {
  ReplyState::From(r)->body.append(static_cast<const char*>(data), size);
}
int Cancelled(mp_reply* r) {
  const ReplyState* s = ReplyState::From(r);
  return s->cancel_call_id->load(std::memory_order_acquire) == s->call_id ? 1 : 0;
}

mp_str Str(capnp::Text::Reader t) { return {t.cStr(), t.size()}; }

// The worker's end of the rings: sends whole messages, in place or in chunks.
class Sender {
 public:
  Sender(shm::RingFile& ring, shm::RingReader& requests, int doorbell_fd, uint32_t spin)
      : out_(ring.ResponseWriter()),
        requests_(requests),
        doorbell_fd_(doorbell_fd),
        spin_(spin),
        max_message_(ring.max_message_bytes()) {}

  uint64_t max_message() const { return max_message_; }

  // Sends the message `fill` builds, whose exact size is `bytes`: built in place in one
  // frame when it fits, else built on the heap and sent as chunks.
  template <typename Fill>
  void Send(shm::FrameKind kind, uint64_t call_id, size_t bytes, Fill&& fill) {
    std::byte* frame = bytes <= shm::MaxFramePayload(out_.capacity()) ? Reserve(bytes) : nullptr;
    bool wake = false;
    auto chunked = BuildMessage(out_, kind, call_id, bytes, frame, fill, &wake);
    if (wake) shm::RingDoorbell(doorbell_fd_);
    if (chunked) SendChunked(*std::move(chunked));
  }

  // Sends an already serialized message, in one frame or as chunks.
  void SendWords(shm::FrameKind kind, uint64_t call_id, kj::Array<capnp::word> words) {
    SendChunked(ChunkedSend(kind, call_id, std::move(words)));
  }

  void SendError(uint64_t call_id, call::Error::Code code, const std::string& text) {
    Send(shm::FrameKind::kError, call_id, ErrorMessageBytes(text.size()),
         [&](capnp::MessageBuilder& m) {
           auto e = m.initRoot<call::Error>();
           e.setCode(code);
           e.setMessage(text);
         });
  }

 private:
  std::byte* Reserve(uint64_t bytes) {
    std::byte* p = shm::ReserveWaiting(out_, requests_, bytes, spin_);
    if (p == nullptr) _exit(kExitHostBrokeRing);  // the host never does
    return p;
  }

  void SendChunked(ChunkedSend send) {
    for (;;) {
      bool wake = false;
      const bool done = send.Pump(out_, &wake);
      if (wake) shm::RingDoorbell(doorbell_fd_);
      if (done) return;
      // Wait until the host has consumed a frame: room for the next one.
      const uint64_t rest = send.total_bytes() - send.sent_bytes();
      const uint64_t next = std::min<uint64_t>(rest, shm::MaxFramePayload(out_.capacity()));
      Reserve(next);  // reserving is idempotent until a Commit
    }
  }

  shm::RingWriter out_;
  shm::RingReader& requests_;
  int doorbell_fd_;
  uint32_t spin_;
  uint64_t max_message_;
};

// The request ring, plus the frames a handler's service request set aside: while it waits for
// the host's answer, frames for later calls (pipelined behind it) are copied out and read
// here afterwards, in their order.
class Inbox {
 public:
  Inbox(shm::RingReader& ring, int doorbell_fd) : ring_(ring), doorbell_fd_(doorbell_fd) {}

  shm::RingReader& ring() { return ring_; }

  shm::ReadStatus Peek(shm::FrameView* frame) {
    if (backlog_.empty()) return ring_.Peek(frame);
    const Stashed& f = backlog_.front();
    *frame = {f.kind, f.call_id, {reinterpret_cast<const std::byte*>(f.words.data()), f.bytes}};
    return shm::ReadStatus::kFrame;
  }
  void Pop() {
    if (backlog_.empty()) {
      ring_.Pop();
    } else {
      backlog_.pop_front();
    }
  }
  // Copies the ring's current frame aside, and consumes it.
  void Stash(const shm::FrameView& frame) {
    Stashed& f = backlog_.emplace_back();
    f.kind = frame.kind;
    f.call_id = frame.call_id;
    f.bytes = frame.payload.size();
    f.words.resize((f.bytes + 7) / 8);
    if (f.bytes != 0) std::memcpy(f.words.data(), frame.payload.data(), f.bytes);
    ring_.Pop();
    shm::RingDoorbell(doorbell_fd_);  // the host may wait for room to write our answer
  }

 private:
  struct Stashed {
    shm::FrameKind kind;
    uint64_t call_id;
    size_t bytes;
    std::vector<uint64_t> words;  // 8-aligned, for Cap'n Proto readers
  };
  shm::RingReader& ring_;
  int doorbell_fd_;
  std::deque<Stashed> backlog_;
};

// A handler's services (mp_services): each request goes to the host on the response ring and
// waits for its answer on the request ring. What the answers point into lives here until the
// next request or the end of the call.
class ServiceClient {
 public:
  ServiceClient(Inbox& inbox, Sender& out, int doorbell_fd, shm::SpinBudget& spin,
                uint64_t max_message, bool granted)
      : inbox_(inbox),
        out_(out),
        doorbell_fd_(doorbell_fd),
        spin_(spin),
        granted_(granted),
        chunks_(max_message) {
    abi_.struct_size = sizeof(mp_services);
    abi_.redis = &ServiceClient::RedisAbi;
    abi_.call = &ServiceClient::CallAbi;
    abi_.host = this;
  }

  const mp_services* abi() const { return &abi_; }

  void Begin(uint64_t call_id) {
    call_id_ = call_id;
    cancelled_ = false;
    Clear();
  }
  void End() { Clear(); }

 private:
  static ServiceClient* From(const mp_services* s) {
    return static_cast<ServiceClient*>(const_cast<void*>(s->host));
  }
  static std::string Copy(mp_str s) { return std::string(s.data ? s.data : "", s.size); }
  static kj::ArrayPtr<const kj::byte> Bytes(mp_str s) {
    return {reinterpret_cast<const kj::byte*>(s.data), s.data ? s.size : 0};
  }

  static int RedisAbi(const mp_services* s, mp_str service, const mp_str* argv, size_t argc,
                      const mp_value** reply, mp_str* error) {
    return From(s)->Redis(service, argv, argc, reply, error);
  }
  static int CallAbi(const mp_services* s, mp_str service, const mp_call* request,
                     const mp_response** response, mp_str* error) {
    return From(s)->CallModule(service, request, response, error);
  }

  int Fail(std::string message, mp_str* error) {
    error_ = std::move(message);
    if (error != nullptr) *error = {error_.data(), error_.size()};
    return -1;
  }

  int Redis(mp_str service, const mp_str* argv, size_t argc, const mp_value** reply,
            mp_str* error) {
    Clear();
    if (argc == 0 || (argv == nullptr)) return Fail("a Redis command needs at least its name", error);
    capnp::MallocMessageBuilder m;
    auto r = m.initRoot<call::ServiceRequest>();
    const std::string name = Copy(service);
    r.setService(name);
    auto args = r.initRedis(static_cast<unsigned>(argc));
    for (size_t i = 0; i < argc; ++i) args.set(static_cast<unsigned>(i), Bytes(argv[i]));
    auto answer = Exchange(m, error);
    if (!answer) return -1;
    if (answer->which() != call::ServiceReply::REDIS) return Fail("the host answered with something else than a Redis reply", error);
    value_ = Convert(answer->getRedis(), 0);
    if (reply != nullptr) *reply = &value_;
    return 0;
  }

  int CallModule(mp_str service, const mp_call* request, const mp_response** response,
                 mp_str* error) {
    Clear();
    if (request == nullptr) return Fail("no request given", error);
    capnp::MallocMessageBuilder m;
    auto r = m.initRoot<call::ServiceRequest>();
    const std::string name = Copy(service);
    r.setService(name);
    auto c = r.initCall();
    c.setMethod(Copy(request->method));
    c.setPath(Copy(request->path));
    c.setQuery(Copy(request->query));
    auto hs = c.initHeaders(static_cast<unsigned>(request->headers ? request->header_count : 0));
    for (unsigned i = 0; i < hs.size(); ++i) {
      hs[i].setName(Copy(request->headers[i].name));
      hs[i].setValue(Copy(request->headers[i].value));
    }
    c.setBody(Bytes(request->body));
    auto answer = Exchange(m, error);
    if (!answer) return -1;
    if (answer->which() != call::ServiceReply::CALL) return Fail("the host answered with something else than a module's reply", error);
    auto reply = answer->getCall();
    for (auto h : reply.getHeaders()) {
      headers_.push_back({Str(h.getName()), Str(h.getValue())});
    }
    auto body = reply.getBody();
    response_.status = reply.getStatus();
    response_.headers = headers_.data();
    response_.header_count = headers_.size();
    response_.body = {reinterpret_cast<const char*>(body.begin()), body.size()};
    if (response != nullptr) *response = &response_;
    return 0;
  }

  // Sends the request and waits for its answer; a failed answer becomes *error.
  std::optional<call::ServiceReply::Reader> Exchange(capnp::MallocMessageBuilder& m,
                                                     mp_str* error) {
    if (!granted_) {
      Fail("this module was granted no services (its config names none)", error);
      return std::nullopt;
    }
    if (cancelled_) {
      Fail("cancelled: the host gave up on the call", error);
      return std::nullopt;
    }
    auto words = capnp::messageToFlatArray(m);
    if (words.size() * sizeof(capnp::word) > chunks_.max_bytes()) {
      Fail("the request of " + std::to_string(words.size() * sizeof(capnp::word)) +
               " bytes exceeds the module's maxMessageKb (" +
               std::to_string(chunks_.max_bytes()) + " bytes)",
           error);
      return std::nullopt;
    }
    out_.SendWords(shm::FrameKind::kServiceRequest, call_id_, std::move(words));
    if (!AwaitAnswer()) {
      Fail(cancelled_ ? "cancelled: the host gave up on the call" : "no answer", error);
      return std::nullopt;
    }
    try {
      capnp::ReaderOptions limits;
      limits.traversalLimitInWords = answer_.size() * 2 + 64;
      limits.nestingLimit = 64;
      reader_.emplace(kj::arrayPtr(reinterpret_cast<const capnp::word*>(answer_.data()),
                                   answer_.size()),
                      limits);
      auto reply = reader_->getRoot<call::ServiceReply>();
      if (reply.which() == call::ServiceReply::FAILED) {
        Fail(reply.getFailed().cStr(), error);
        return std::nullopt;
      }
      return reply;
    } catch (const kj::Exception&) {
      _exit(kExitHostBrokeRing);  // the host sends well-formed answers
    }
  }

  // Reads the request ring until the answer to this call's request (or its cancel) arrives;
  // frames of later calls are set aside. False when the call was cancelled.
  bool AwaitAnswer() {
    shm::RingReader& ring = inbox_.ring();
    for (;;) {
      shm::FrameView frame;
      const shm::ReadStatus st = ring.Peek(&frame);
      if (st == shm::ReadStatus::kEmpty) {
        shm::WaitForFrame(ring, spin_, 0);
        continue;
      }
      if (st == shm::ReadStatus::kViolation) _exit(kExitHostBrokeRing);
      if (frame.kind == shm::FrameKind::kStop) {  // the host is stopping: left for the loop
        cancelled_ = true;
        return false;
      }
      if (frame.call_id != call_id_) {
        inbox_.Stash(frame);
        continue;
      }
      switch (frame.kind) {
        case shm::FrameKind::kChunk:
          if (!chunks_.AddChunk(call_id_, frame.payload).ok()) _exit(kExitHostBrokeRing);
          ring.Pop();
          shm::RingDoorbell(doorbell_fd_);  // the host waits for room for the next piece
          continue;
        case shm::FrameKind::kServiceReply: {
          if (chunks_.active()) {
            auto whole = chunks_.Complete(call_id_, frame.payload);
            if (!whole.ok()) _exit(kExitHostBrokeRing);
            answer_.resize(whole->size());
            std::memcpy(answer_.data(), whole->begin(), whole->size() * sizeof(capnp::word));
            chunks_.Reset();
          } else {
            if (frame.payload.size() % sizeof(capnp::word) != 0) _exit(kExitHostBrokeRing);
            answer_.resize(frame.payload.size() / sizeof(uint64_t));
            std::memcpy(answer_.data(), frame.payload.data(), frame.payload.size());
          }
          ring.Pop();
          return true;
        }
        case shm::FrameKind::kCancel:
          ring.Pop();
          chunks_.Reset();
          cancelled_ = true;
          return false;
        default:
          inbox_.Stash(frame);
          continue;
      }
    }
  }

  mp_value Convert(call::RedisValue::Reader v, int depth) {
    mp_value out{};
    switch (v.which()) {
      case call::RedisValue::NIL:
        out.type = MP_VALUE_NIL;
        break;
      case call::RedisValue::INTEGER:
        out.type = MP_VALUE_INTEGER;
        out.integer = v.getInteger();
        break;
      case call::RedisValue::STRING: {
        auto d = v.getString();
        out.type = MP_VALUE_STRING;
        out.str = {reinterpret_cast<const char*>(d.begin()), d.size()};
        break;
      }
      case call::RedisValue::STATUS:
        out.type = MP_VALUE_STATUS;
        out.str = Str(v.getStatus());
        break;
      case call::RedisValue::ERROR:
        out.type = MP_VALUE_ERROR;
        out.str = Str(v.getError());
        break;
      case call::RedisValue::ARRAY: {
        out.type = MP_VALUE_ARRAY;
        if (depth >= 32) break;  // the host flattens nothing deeper; empty here
        std::vector<mp_value> elements;
        for (auto e : v.getArray()) elements.push_back(Convert(e, depth + 1));
        arrays_.push_back(std::move(elements));  // a deque: earlier arrays stay put
        out.elements = arrays_.back().data();
        out.element_count = arrays_.back().size();
        break;
      }
    }
    return out;
  }

  void Clear() {
    reader_.reset();
    arrays_.clear();
    headers_.clear();
    value_ = mp_value{};
    response_ = mp_response{};
  }

  Inbox& inbox_;
  Sender& out_;
  int doorbell_fd_;
  shm::SpinBudget& spin_;
  bool granted_;
  mp_services abi_{};
  uint64_t call_id_ = 0;
  bool cancelled_ = false;
  MessageAssembler chunks_;
  std::vector<uint64_t> answer_;  // 8-aligned
  std::optional<capnp::FlatArrayMessageReader> reader_;
  std::deque<std::vector<mp_value>> arrays_;
  std::vector<mp_header> headers_;
  mp_value value_{};
  mp_response response_{};
  std::string error_;
};

}  // namespace

mp_heap MakeModuleHeap(const shm::HeapView& view) {
  mp_heap h{};
  h.data = view.data();
  h.size = view.data_bytes();
  h.find_root = [](const mp_heap* heap, const char* name, uint64_t* size) -> const void* {
    auto root = static_cast<const shm::HeapView*>(heap->host)->FindRoot(name);
    if (!root) return nullptr;
    if (size != nullptr) *size = root->size();
    return root->data();
  };
  h.host = &view;
  return h;
}

void ServeCalls(shm::RingFile& ring, int doorbell_fd, const mp_module& module, const mp_heap& heap,
                const WorkerLoopOptions& options) {
  shm::RingReader in = ring.RequestReader();
  Inbox inbox(in, doorbell_fd);
  Sender out(ring, in, doorbell_fd, options.spin_iterations);
  MessageAssembler chunks(ring.max_message_bytes());
  shm::WorkerBlock& block = ring.header()->worker;
  ReplyState reply;
  reply.abi = mp_reply{&SetStatus, &AddHeader, &AppendBody, &Cancelled, &reply};
  reply.cancel_call_id = &ring.header()->host.cancel_call_id;
  std::vector<mp_header> headers;
  std::vector<HeaderSizes> header_sizes;
  shm::SpinBudget spin(shm::SpinNanos(options.spin_iterations));
  // With services, the handler's requests are answered behind its call in the request ring:
  // the call is read from a private copy, so that the ring can move on while it runs.
  const bool services = ring.header()->host.services.load(std::memory_order_acquire) == 1;
  ServiceClient service_client(inbox, out, doorbell_fd, spin, ring.max_message_bytes(), services);
  std::vector<uint64_t> call_copy;

  block.state.store(static_cast<uint32_t>(shm::WorkerState::kReady), std::memory_order_release);
  for (;;) {
    shm::FrameView frame;
    shm::ReadStatus st = inbox.Peek(&frame);
    if (st == shm::ReadStatus::kEmpty) {
      shm::WaitForFrame(in, spin, 0);
      continue;
    }
    if (st == shm::ReadStatus::kViolation) _exit(kExitHostBrokeRing);  // the host never does this
    if (frame.kind == shm::FrameKind::kStop) break;
    if (frame.kind == shm::FrameKind::kServiceReply) {  // for a call already over: none is due
      inbox.Pop();
      continue;
    }
    if (frame.kind == shm::FrameKind::kChunk) {
      // Copied out at once, so that the host can go on; it waits on our doorbell for room.
      if (!chunks.AddChunk(frame.call_id, frame.payload).ok()) _exit(kExitHostBrokeRing);  // the host checks sizes
      inbox.Pop();
      shm::RingDoorbell(doorbell_fd);
      continue;
    }
    if (frame.kind == shm::FrameKind::kCancel) {
      const uint64_t id = frame.call_id;
      inbox.Pop();
      if (chunks.active() && chunks.call_id() == id) {
        // Cancelled while its call was still arriving: answer, so the host frees us.
        chunks.Reset();
        out.SendError(id, call::Error::Code::CANCELLED, "cancelled before the call arrived");
      }
      continue;  // otherwise a cancel for a call already answered
    }
    block.state.store(static_cast<uint32_t>(shm::WorkerState::kBusy), std::memory_order_relaxed);
    const uint64_t call_id = frame.call_id;
    reply.Reset();
    reply.call_id = call_id;
    // The call: in place in the ring (zero-copy; the host does not touch a frame after
    // publishing it), or reassembled from chunks into private memory, or copied out when
    // the handler may use services.
    bool in_place = !chunks.active();
    kj::ArrayPtr<const capnp::word> words;
    bool whole = frame.payload.size() % sizeof(capnp::word) == 0;
    if (in_place && services) {
      call_copy.resize(frame.payload.size() / sizeof(uint64_t));
      std::memcpy(call_copy.data(), frame.payload.data(), call_copy.size() * sizeof(uint64_t));
      inbox.Pop();
      in_place = false;
      words = kj::arrayPtr(reinterpret_cast<const capnp::word*>(call_copy.data()), call_copy.size());
    } else if (in_place) {
      words = kj::arrayPtr(reinterpret_cast<const capnp::word*>(frame.payload.data()),
                           frame.payload.size() / sizeof(capnp::word));
    } else {
      auto assembled = chunks.Complete(call_id, frame.payload);
      inbox.Pop();
      if (!assembled.ok()) _exit(kExitHostBrokeRing);  // the host sends whole messages
      words = *assembled;
      whole = true;
    }
    bool decoded = false;
    int rc = 0;
    if (whole) {
      try {
        capnp::ReaderOptions limits;
        limits.traversalLimitInWords = words.size() * 2 + 64;
        limits.nestingLimit = 16;
        capnp::FlatArrayMessageReader msg(words, limits);
        auto c = msg.getRoot<call::Call>();
        headers.clear();
        for (auto h : c.getHeaders()) headers.push_back({Str(h.getName()), Str(h.getValue())});
        auto body = c.getBody();
        mp_call call{};
        call.method = Str(c.getMethod());
        call.path = Str(c.getPath());
        call.query = Str(c.getQuery());
        call.headers = headers.data();
        call.header_count = headers.size();
        call.body = {reinterpret_cast<const char*>(body.begin()), body.size()};
        call.services = service_client.abi();
        decoded = true;
        service_client.Begin(call_id);
        rc = module.handle(&heap, &call, &reply.abi);
        service_client.End();
      } catch (const kj::Exception&) {
        decoded = false;
      }
    }
    if (in_place) {
      inbox.Pop();
    } else {
      chunks.Reset();
    }
    if (decoded && rc == MP_HANDLE_OUT_OF_MEMORY) _exit(kExitOutOfMemory);  // the host answers
    if (!decoded) {
      out.SendError(call_id, call::Error::Code::BAD_CALL, "malformed call frame");
    } else if (rc != 0) {
      out.SendError(call_id, call::Error::Code::HANDLER_FAILED, "the module's handler failed");
    } else {
      header_sizes.clear();
      for (const auto& [name, value] : reply.headers) header_sizes.push_back({name.size(), value.size()});
      const size_t bytes = ReplyMessageBytes(header_sizes, reply.body.size());
      if (bytes > out.max_message()) {
        out.SendError(call_id, call::Error::Code::REPLY_TOO_LARGE,
                      "the reply of " + std::to_string(bytes) +
                          " bytes exceeds the module's maxMessageKb (" +
                          std::to_string(out.max_message()) + " bytes)");
      } else {
        out.Send(shm::FrameKind::kReply, call_id, bytes, [&](capnp::MessageBuilder& m) {
          auto r = m.initRoot<call::Reply>();
          r.setStatus(static_cast<uint16_t>(reply.status));
          auto hs = r.initHeaders(static_cast<unsigned>(reply.headers.size()));
          for (size_t i = 0; i < reply.headers.size(); ++i) {
            hs[i].setName(reply.headers[i].first);
            hs[i].setValue(reply.headers[i].second);
          }
          r.setBody(kj::arrayPtr(reinterpret_cast<const kj::byte*>(reply.body.data()),
                                 reply.body.size()));
        });
      }
    }
    block.state.store(static_cast<uint32_t>(shm::WorkerState::kReady), std::memory_order_release);
  }
  block.state.store(static_cast<uint32_t>(shm::WorkerState::kStopped), std::memory_order_release);
}

}  // namespace mp::microproc
