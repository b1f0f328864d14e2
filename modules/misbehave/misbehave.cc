// misbehave: a module that misbehaves on request, to test that the host survives anything a
// module does. Not for production.
//
// Build-time misbehaviour (option "build"): "ok" (default), "crash" (SIGSEGV), "throw",
// "spin" (never returns), "oversize" (allocates past any heap limit), "fork" (tries to create
// a process, which the builder's sandbox forbids). Option "heap_mb": add N MiB of filler.
//
// Call-time misbehaviour, by path: /ok, /segv, /abort, /exit (exits cleanly mid-call),
// /spin, /spin-cooperative (until the host cancels), /alloc (allocates without end), /stack (overflows its stack), /open, /socket,
// /connect, /execve, /fork, /ptrace, /kill-host, /write-heap, /mprotect-exec,
// /garbage-ring, /frame-too-large, /answer-unasked, /answer-twice, /chunk-flood, /die-mid-reply
// (a compromised worker writing its ring), /big?kb=N (a large reply), /sleep?ms=N, /grow?mb=N (keeps private memory), /fail (handler returns an error), /status/<n>.
#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <time.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "mp/module.hpp"

namespace {

volatile int sink;

// ---- A compromised worker's view of its ring ----
// What an attacker with code execution in a worker can do: find the ring it shares with the
// supervisor and write anything into it. The layout below is shm/ring_layout.h as an attacker
// would reverse-engineer it (deliberately not included: modules build against mp/ alone).
constexpr uint64_t kRingMagic = 0x31474E4952504D00ull;
constexpr size_t kRequestHeadOffset = 64;     // RingFileHeader.request.head
constexpr size_t kResponseTailOffset = 320;   // RingFileHeader.response.tail
constexpr size_t kRingDataOffset = 4096;
constexpr int kDoorbellFd = 3;                // where the worker keeps its eventfd

struct Ring {
  unsigned char* base = nullptr;
  uint64_t request_capacity = 0, response_capacity = 0;
  std::atomic<uint64_t>& Word(size_t offset) const {
    return *reinterpret_cast<std::atomic<uint64_t>*>(base + offset);
  }
};

// Probes pages around `near` with futex(FUTEX_WAKE), which fails with EFAULT on an unmapped
// page and is allowed by the sandbox, looking for the ring's magic.
Ring FindOwnRing(const void* near) {
  const uintptr_t start = reinterpret_cast<uintptr_t>(near) & ~uintptr_t{4095};
  for (uintptr_t d = 0; d < (uintptr_t{1} << 20); ++d) {
    for (int sign : {-1, 1}) {
      const uintptr_t page = start + sign * static_cast<intptr_t>(d * 4096);
      if (::syscall(SYS_futex, page, FUTEX_WAKE, 0, nullptr, nullptr, 0) < 0) continue;
      uint64_t magic;
      std::memcpy(&magic, reinterpret_cast<const void*>(page), sizeof magic);
      if (magic == kRingMagic) {
        Ring r;
        r.base = reinterpret_cast<unsigned char*>(page);
        std::memcpy(&r.request_capacity, r.base + 8, 8);
        std::memcpy(&r.response_capacity, r.base + 16, 8);
        return r;
      }
    }
  }
  return {};
}

constexpr size_t kResponseHeadOffset = 256;   // RingFileHeader.response.head

void RingDoorbell() {
  uint64_t one = 1;
  sink = static_cast<int>(::write(kDoorbellFd, &one, sizeof one));
}

std::atomic<uint64_t>& DataWord(unsigned char* at) {
  return *reinterpret_cast<std::atomic<uint64_t>*>(at);
}

// Publishes a frame of our own making in the response ring, as the ring protocol does it (a
// pad frame first if it would cross the ring's end; payload and call id, then the next slot
// cleared, then the publication word), waiting up to 5 s for the host to make room, and
// rings the doorbell. `length` is what the header claims, `len` what is copied.
void PublishFrame(const Ring& r, uint32_t kind, uint64_t call_id, const void* payload, uint32_t len,
                  uint32_t length) {
  const uint64_t cap = r.response_capacity;
  const uint64_t need = 16 + ((uint64_t{len} + 15) & ~uint64_t{15});
  uint64_t tail = r.Word(kResponseTailOffset).load();
  const uint64_t to_end = cap - (tail & (cap - 1));
  const uint64_t total = (need > to_end ? to_end + need : need) + 16;
  for (int i = 0; i < 50000 && cap - (tail - r.Word(kResponseHeadOffset).load()) < total; ++i) {
    timespec ts{0, 100000};
    ::nanosleep(&ts, nullptr);
  }
  unsigned char* data = r.base + kRingDataOffset + r.request_capacity;
  const uint64_t pad_at = tail & (cap - 1);
  const bool pad = need > to_end;
  if (pad) tail += to_end;
  unsigned char* at = data + (tail & (cap - 1));
  std::memcpy(at + 8, &call_id, 8);
  if (len > 0) std::memcpy(at + 16, payload, len);
  DataWord(data + ((tail + need) & (cap - 1))).store(0);
  DataWord(at).store(uint64_t{length} | uint64_t{kind} << 32);
  if (pad) DataWord(data + pad_at).store((to_end - 16) | uint64_t{7} << 32);  // kPad
  r.Word(kResponseTailOffset).store(tail + need);
  RingDoorbell();
}
void PublishFrame(const Ring& r, uint32_t kind, uint64_t call_id, const void* payload, uint32_t len) {
  PublishFrame(r, kind, call_id, payload, len, len);
}

void RingDoorbellAndHang() {
  RingDoorbell();
  for (;;) {
    timespec ts{1, 0};
    ::nanosleep(&ts, nullptr);  // the supervisor kills us
  }
}

// The current call's id, from the request frame not yet consumed.
uint64_t CurrentCallId(const Ring& r) {
  const uint64_t head = r.Word(kRequestHeadOffset).load();
  uint64_t id;
  std::memcpy(&id, r.base + kRingDataOffset + (head & (r.request_capacity - 1)) + 8, 8);
  return id;
}

// A well-formed Cap'n Proto Reply {status: 200}: segment table, root struct pointer (1 data
// word, 2 pointers), the data word, two null pointers.
constexpr uint64_t kReply200[5] = {0x0000000400000000ull, 0x0002000100000000ull, 200, 0, 0};

// Recurses until the stack overflows (the stop condition is never met in practice).
[[gnu::noinline]] int Recurse(int depth) {
  volatile char pad[4096];
  pad[0] = static_cast<char>(depth);
  if (sink == -12345) return pad[0];
  return Recurse(depth + 1) + pad[0];
}

struct Misbehave {
  static void Build(mp::HeapBuilder& heap) {
    std::string mode(heap.Option("build").value_or("ok"));
    // heap_mb=N: fill N MiB of heap with a pattern (for spawn and memory benchmarks).
    if (auto mb = heap.Option("heap_mb")) {
      const size_t bytes = static_cast<size_t>(std::atoll(std::string(*mb).c_str())) << 20;
      auto* filler = heap.Construct<mp::HeapVector<char>>("filler", heap.allocator());
      filler->reserve(bytes);
      for (size_t i = 0; i < bytes; ++i) filler->push_back(static_cast<char>(i * 131));
    }
    heap.Construct<mp::HeapString>("marker", "misbehave heap", heap.allocator());
    // The builder's parent is the supervisor: remember its pid for /kill-host.
    heap.Construct<int64_t>("host_pid", static_cast<int64_t>(::getppid()));
    if (mode == "ok") return;
    if (mode == "crash") {
      sink = *static_cast<volatile int*>(nullptr);
    } else if (mode == "throw") {
      throw std::runtime_error("misbehave: build threw on purpose");
    } else if (mode == "spin") {
      for (;;) sink = sink + 1;
    } else if (mode == "oversize") {
      auto* v = heap.Construct<mp::HeapVector<char>>("big", heap.allocator());
      for (;;) v->resize(v->size() + (64 << 20));
    } else if (mode == "fork") {
      if (::syscall(SYS_fork) == 0) _exit(0);
    } else {
      throw std::invalid_argument("misbehave: option build must be ok|crash|throw|spin|oversize|fork");
    }
  }

  static void Handle(const mp::Heap& heap, const mp::Call& call, mp::Reply& reply) {
    const std::string_view path = call.path();
    const mp::HeapString* marker = heap.Find<mp::HeapString>("marker");
    if (path == "/ok") {
      reply.Write(marker ? std::string_view(marker->data(), marker->size()) : "no marker");
    } else if (path == "/segv") {
      sink = *static_cast<volatile int*>(nullptr);
    } else if (path == "/abort") {
      std::abort();
    } else if (path == "/exit") {
      _exit(0);
    } else if (path == "/spin") {
      for (;;) sink = sink + 1;
    } else if (path == "/spin-cooperative") {  // spins until the host cancels the call
      while (!reply.Cancelled()) sink = sink + 1;
      reply.Write("cancelled");
    } else if (path == "/alloc") {
      std::vector<char*> blocks;
      for (;;) {
        char* p = static_cast<char*>(std::malloc(16 << 20));
        if (p == nullptr) throw std::bad_alloc();
        std::memset(p, 1, 16 << 20);
        blocks.push_back(p);
      }
    } else if (path == "/stack") {
      sink = Recurse(0);
    } else if (path == "/open") {
      sink = ::open("/etc/passwd", O_RDONLY);
    } else if (path == "/socket") {
      sink = ::socket(AF_INET, SOCK_STREAM, 0);
    } else if (path == "/connect") {
      sink = ::connect(3, nullptr, 0);
    } else if (path == "/execve") {
      char* argv[] = {const_cast<char*>("/bin/true"), nullptr};
      sink = ::execve("/bin/true", argv, nullptr);
    } else if (path == "/fork") {
      sink = static_cast<int>(::syscall(SYS_fork));
    } else if (path == "/ptrace") {
      sink = static_cast<int>(::ptrace(PTRACE_TRACEME, 0, nullptr, nullptr));
    } else if (path == "/kill-host") {
      const int64_t* host = heap.Find<int64_t>("host_pid");
      sink = ::kill(host ? static_cast<pid_t>(*host) : 1, SIGKILL);
    } else if (path == "/write-heap") {
      // The heap is mapped read-only: this faults (SIGSEGV). In copy-on-write mode it would
      // only change this process's private copy.
      if (marker != nullptr) const_cast<char*>(marker->data())[0] = 'X';
      reply.Write("wrote the heap");
    } else if (path == "/mprotect-exec") {
      void* page = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      sink = ::mprotect(page, 4096, PROT_READ | PROT_EXEC);
    } else if (path == "/sleep") {  // ?ms=N: a slow but well-behaved handler
      const int ms = std::atoi(std::string(call.QueryParam("ms").value_or("100")).c_str());
      timespec ts{ms / 1000, (ms % 1000) * 1000000L};
      ::nanosleep(&ts, nullptr);
      reply.Write("slept");
    } else if (path == "/grow") {  // ?mb=N: keeps N MiB of private memory for good
      static std::vector<std::vector<char>> kept;
      const int mb = std::atoi(std::string(call.QueryParam("mb").value_or("16")).c_str());
      kept.emplace_back(static_cast<size_t>(mb) << 20, 'x');
      reply.Write("grew");
    } else if (path == "/big") {  // ?kb=N: a reply body of N KiB
      const size_t kb = static_cast<size_t>(std::atoll(std::string(call.QueryParam("kb").value_or("1")).c_str()));
      std::string body(kb << 10, '\0');
      for (size_t i = 0; i < body.size(); ++i) body[i] = static_cast<char>('a' + i % 26);
      reply.Write(body);
    } else if (path == "/chunk-flood" || path == "/die-mid-reply") {
      // A reply in chunk frames that never ends (the host must stop it at maxMessageKb), or
      // whose sender dies after two of them.
      Ring ring = FindOwnRing(heap.FindBytes("marker")->data());
      if (ring.base == nullptr) throw std::runtime_error("misbehave: ring not found");
      const uint64_t id = CurrentCallId(ring);
      std::vector<unsigned char> piece(ring.response_capacity / 4, 0x5a);
      constexpr uint32_t kChunk = 6;
      for (int i = 0; i < 100000; ++i) {
        if (path == "/die-mid-reply" && i == 2) _exit(1);
        PublishFrame(ring, kChunk, id, piece.data(), static_cast<uint32_t>(piece.size()));
      }
      RingDoorbellAndHang();
    } else if (path == "/garbage-ring" || path == "/frame-too-large" || path == "/answer-unasked" ||
               path == "/answer-twice") {
      Ring ring = FindOwnRing(heap.FindBytes("marker")->data());
      if (ring.base == nullptr) throw std::runtime_error("misbehave: ring not found");
      if (path == "/garbage-ring") {
        unsigned char* data = ring.base + kRingDataOffset + ring.request_capacity;
        for (uint64_t i = 0; i < 4096; ++i) data[i] = static_cast<unsigned char>(i * 7 + 3);
        ring.Word(kResponseTailOffset).store(ring.Word(kResponseTailOffset).load() + 48);
      } else if (path == "/frame-too-large") {  // claims more than half the ring
        PublishFrame(ring, 2, CurrentCallId(ring), kReply200, sizeof kReply200,
                     static_cast<uint32_t>(ring.response_capacity));
      } else if (path == "/answer-unasked") {
        PublishFrame(ring, 2, 0xdeadbeef, kReply200, sizeof kReply200);
      } else {  // answer twice: the first answer is served, the second breaks the protocol
        const uint64_t id = CurrentCallId(ring);
        PublishFrame(ring, 2, id, kReply200, sizeof kReply200);
        PublishFrame(ring, 2, id, kReply200, sizeof kReply200);
      }
      RingDoorbellAndHang();
    } else if (path == "/fail") {
      throw std::runtime_error("misbehave: handler failed on purpose");
    } else if (path.rfind("/status/", 0) == 0) {
      reply.SetStatus(std::atoi(std::string(path.substr(8)).c_str()));
      reply.Write("status on request");
    } else {
      reply.SetStatus(404);
      reply.Write("misbehave: unknown behaviour");
    }
  }
};

}  // namespace

MP_MODULE(Misbehave, "misbehave", "1.0.0")
