// echo: answers with a greeting read from the sealed heap, then the request body. The request
// id the host gave the call comes back as X-Echo-Request-Id.
//
// The greeting is placed in the heap at build time (data file or option "greeting"), so every
// answer proves that the worker read the heap through its shared read-only mapping.
#include <string>

#include "mp/module.hpp"

namespace {

struct Echo {
  static void Build(mp::HeapBuilder& heap) {
    // The greeting: data file "greeting" (first line) if configured, else option "greeting".
    std::string greeting(heap.Option("greeting").value_or("hello from the echo heap"));
    if (auto file = heap.DataFile("greeting")) greeting = std::string(file->substr(0, file->find('\n')));
    heap.Construct<mp::HeapString>("greeting", greeting.c_str(), heap.allocator());
  }

  static void Handle(const mp::Heap& heap, const mp::Call& call, mp::Reply& reply) {
    const mp::HeapString* greeting = heap.Find<mp::HeapString>("greeting");
    if (greeting == nullptr) {
      reply.SetStatus(500);
      reply.Write("echo: heap has no greeting\n");
      return;
    }
    reply.AddHeader("Content-Type", "text/plain; charset=utf-8");
    if (auto id = call.Header("X-Request-Id")) reply.AddHeader("X-Echo-Request-Id", *id);
    reply.Write(std::string_view(greeting->data(), greeting->size()));
    reply.Write("\n");
    reply.Write(call.method());
    reply.Write(" ");
    reply.Write(call.path());
    reply.Write("\n");
    reply.Write(call.body());
  }
};

}  // namespace

MP_MODULE(Echo, "echo", "1.0.0")
