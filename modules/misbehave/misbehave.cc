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
// /sleep?ms=N, /grow?mb=N (keeps private memory), /fail (handler returns an error), /status/<n>.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <time.h>

#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "mp/module.hpp"

namespace {

volatile int sink;

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
