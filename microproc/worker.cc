#include "microproc/worker.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/io.h>

#include <algorithm>
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
  Sender out(ring, in, doorbell_fd, options.spin_iterations);
  MessageAssembler chunks(ring.max_message_bytes());
  shm::WorkerBlock& block = ring.header()->worker;
  ReplyState reply;
  reply.abi = mp_reply{&SetStatus, &AddHeader, &AppendBody, &Cancelled, &reply};
  reply.cancel_call_id = &ring.header()->host.cancel_call_id;
  std::vector<mp_header> headers;
  std::vector<HeaderSizes> header_sizes;
  shm::SpinBudget spin(shm::SpinNanos(options.spin_iterations));

  block.state.store(static_cast<uint32_t>(shm::WorkerState::kReady), std::memory_order_release);
  for (;;) {
    shm::FrameView frame;
    shm::ReadStatus st = in.Peek(&frame);
    if (st == shm::ReadStatus::kEmpty) {
      shm::WaitForFrame(in, spin, 0);
      continue;
    }
    if (st == shm::ReadStatus::kViolation) _exit(kExitHostBrokeRing);  // the host never does this
    if (frame.kind == shm::FrameKind::kStop) break;
    if (frame.kind == shm::FrameKind::kChunk) {
      // Copied out at once, so that the host can go on; it waits on our doorbell for room.
      if (!chunks.AddChunk(frame.call_id, frame.payload).ok()) _exit(kExitHostBrokeRing);  // the host checks sizes
      in.Pop();
      shm::RingDoorbell(doorbell_fd);
      continue;
    }
    if (frame.kind == shm::FrameKind::kCancel) {
      const uint64_t id = frame.call_id;
      in.Pop();
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
    // publishing it), or reassembled from chunks into private memory.
    const bool in_place = !chunks.active();
    kj::ArrayPtr<const capnp::word> words;
    bool whole = frame.payload.size() % sizeof(capnp::word) == 0;
    if (in_place) {
      words = kj::arrayPtr(reinterpret_cast<const capnp::word*>(frame.payload.data()),
                           frame.payload.size() / sizeof(capnp::word));
    } else {
      auto assembled = chunks.Complete(call_id, frame.payload);
      in.Pop();
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
        mp_call call{Str(c.getMethod()), Str(c.getPath()),   Str(c.getQuery()),
                     headers.data(),     headers.size(),     {reinterpret_cast<const char*>(body.begin()), body.size()}};
        decoded = true;
        rc = module.handle(&heap, &call, &reply.abi);
      } catch (const kj::Exception&) {
        decoded = false;
      }
    }
    if (in_place) {
      in.Pop();
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
