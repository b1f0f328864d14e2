// An out-of-tree module, as docs/module-guide.md builds it: compiled against the installed
// <mp/module.hpp> alone (plus Boost headers), loaded by mphost from a config.
#include <string>

#include "mp/module.hpp"

namespace {

struct Hello {
  // Runs once per heap generation, in the sandboxed builder.
  static void Build(mp::HeapBuilder& heap) {
    std::string name(heap.Option("name").value_or("world"));
    heap.Construct<mp::HeapString>("name", name.c_str(), heap.allocator());
    auto* counts = heap.Construct<mp::HeapMap<mp::HeapString, uint64_t>>("counts", heap.allocator());
    if (auto words = heap.DataFile("words")) {
      std::string_view rest = *words;
      while (!rest.empty()) {
        std::string_view line = rest.substr(0, rest.find('\n'));
        rest.remove_prefix(std::min(rest.size(), line.size() + 1));
        if (line.empty()) continue;
        mp::HeapString key(line.data(), line.size(), heap.allocator());
        (*counts)[key] += 1;
      }
    }
  }

  // Runs per call, in a sandboxed microprocess; the heap is read-only.
  static void Handle(const mp::Heap& heap, const mp::Call& call, mp::Reply& reply) {
    const auto* name = heap.Find<mp::HeapString>("name");
    const auto* counts = heap.Find<mp::HeapMap<mp::HeapString, uint64_t>>("counts");
    reply.AddHeader("Content-Type", "text/plain");
    if (call.path() == "/count") {
      auto w = call.QueryParam("w").value_or("");
      uint64_t n = 0;
      for (const auto& [key, value] : *counts) {
        if (mp::View(key) == w) n = value;
      }
      reply.Write(std::to_string(n));
      return;
    }
    reply.Write("hello, ");
    reply.Write(mp::View(*name));
  }
};

}  // namespace

MP_MODULE(Hello, "hello", "0.1.0")
