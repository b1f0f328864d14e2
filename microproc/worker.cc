#include "microproc/worker.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/io.h>

#include <string>
#include <utility>
#include <vector>

#include "schemas/call.capnp.h"
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

// Writes `message` as one frame; waits (spinning, then yielding) while the host drains.
void WriteFrame(shm::RingWriter& out, int doorbell_fd, shm::FrameKind kind, uint64_t call_id,
                capnp::MessageBuilder& message) {
  const size_t bytes = capnp::computeSerializedSizeInWords(message) * sizeof(capnp::word);
  std::byte* p = nullptr;
  for (int tries = 0; (p = out.Reserve(bytes)) == nullptr; ++tries) {
    if (out.PeerCorrupt()) _exit(3);
    if (tries > 1000) sched_yield();
  }
  kj::ArrayOutputStream stream(kj::arrayPtr(reinterpret_cast<kj::byte*>(p), bytes));
  capnp::writeMessage(stream, message);
  if (out.Commit(kind, call_id, bytes)) shm::RingDoorbell(doorbell_fd);
}

void SendError(shm::RingWriter& out, int doorbell_fd, uint64_t call_id, call::Error::Code code,
               const char* message) {
  capnp::MallocMessageBuilder builder(256);
  auto e = builder.initRoot<call::Error>();
  e.setCode(code);
  e.setMessage(message);
  WriteFrame(out, doorbell_fd, shm::FrameKind::kError, call_id, builder);
}

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
  shm::RingWriter out = ring.ResponseWriter();
  shm::WorkerBlock& block = ring.header()->worker;
  ReplyState reply;
  reply.abi = mp_reply{&SetStatus, &AddHeader, &AppendBody, &Cancelled, &reply};
  reply.cancel_call_id = &ring.header()->host.cancel_call_id;
  std::vector<mp_header> headers;
  capnp::ReaderOptions limits;
  limits.traversalLimitInWords = ring.request_capacity() / sizeof(capnp::word);
  limits.nestingLimit = 16;

  block.state.store(static_cast<uint32_t>(shm::WorkerState::kReady), std::memory_order_release);
  for (;;) {
    shm::FrameView frame;
    shm::ReadStatus st = in.Peek(&frame);
    if (st == shm::ReadStatus::kEmpty) {
      shm::WaitForFrame(in, options.spin_iterations, 0);
      continue;
    }
    if (st == shm::ReadStatus::kViolation) _exit(3);  // the host never does this
    if (frame.kind == shm::FrameKind::kStop) break;
    if (frame.kind != shm::FrameKind::kCall) {
      in.Pop();  // a cancel for a call already answered
      continue;
    }
    block.state.store(static_cast<uint32_t>(shm::WorkerState::kBusy), std::memory_order_relaxed);
    const uint64_t call_id = frame.call_id;
    reply.Reset();
    reply.call_id = call_id;
    bool decoded = false;
    int rc = 0;
    if (frame.payload.size() % sizeof(capnp::word) == 0) {
      try {
        // Zero-copy: the call is read in place in the ring; the host does not touch a frame
        // after publishing it.
        capnp::FlatArrayMessageReader msg(
            kj::arrayPtr(reinterpret_cast<const capnp::word*>(frame.payload.data()),
                         frame.payload.size() / sizeof(capnp::word)),
            limits);
        auto c = msg.getRoot<call::Call>();
        headers.clear();
        for (auto h : c.getHeaders()) headers.push_back({Str(h.getName()), Str(h.getValue())});
        auto body = c.getBody();
        mp_call call{Str(c.getMethod()), Str(c.getPath()),   Str(c.getQuery()),
                     headers.data(),     headers.size(),     {reinterpret_cast<const char*>(body.begin()), body.size()}};
        decoded = true;
        rc = module.handle(&heap, &call, &reply.abi);
      } catch (const kj::Exception&) {
        decoded = false;
      }
    }
    in.Pop();
    if (decoded && rc == MP_HANDLE_OUT_OF_MEMORY) _exit(kOutOfMemoryExit);  // the host answers
    if (!decoded) {
      SendError(out, doorbell_fd, call_id, call::Error::Code::BAD_CALL, "malformed call frame");
    } else if (rc != 0) {
      SendError(out, doorbell_fd, call_id, call::Error::Code::HANDLER_FAILED,
                "the module's handler failed");
    } else {
      capnp::MallocMessageBuilder builder(1024 + reply.body.size() / 8);
      auto r = builder.initRoot<call::Reply>();
      r.setStatus(static_cast<uint16_t>(reply.status));
      auto hs = r.initHeaders(reply.headers.size());
      for (size_t i = 0; i < reply.headers.size(); ++i) {
        hs[i].setName(reply.headers[i].first);
        hs[i].setValue(reply.headers[i].second);
      }
      r.setBody(kj::arrayPtr(reinterpret_cast<const kj::byte*>(reply.body.data()), reply.body.size()));
      if (capnp::computeSerializedSizeInWords(builder) * sizeof(capnp::word) >
          shm::MaxFramePayload(out.capacity())) {
        SendError(out, doorbell_fd, call_id, call::Error::Code::REPLY_TOO_LARGE,
                  "the reply does not fit in the response ring");
      } else {
        WriteFrame(out, doorbell_fd, shm::FrameKind::kReply, call_id, builder);
      }
    }
    block.state.store(static_cast<uint32_t>(shm::WorkerState::kReady), std::memory_order_release);
  }
  block.state.store(static_cast<uint32_t>(shm::WorkerState::kStopped), std::memory_order_release);
}

}  // namespace mp::microproc
