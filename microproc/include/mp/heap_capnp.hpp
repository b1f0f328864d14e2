// Cap'n Proto messages stored in the module heap and read zero-copy in a microprocess.
// Optional: include it only if the module links Cap'n Proto (pkg-config capnp).
//
//   // Build:
//   capnp::MallocMessageBuilder m;
//   auto table = m.initRoot<RouteTable>();  ...
//   mp::StoreMessage(builder, "routes", m);
//   // Handle:
//   mp::HeapMessage<RouteTable> routes(heap, "routes");
//   if (routes) for (auto r : routes->getRoutes()) ...
#pragma once

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <optional>
#include <string>

#include "mp/module.hpp"

namespace mp {

// Serializes `message` into the heap as a flat array (word-aligned) under root `name`.
inline void StoreMessage(HeapBuilder& builder, const char* name, capnp::MessageBuilder& message) {
  kj::Array<capnp::word> words = capnp::messageToFlatArray(message);
  auto bytes = words.asBytes();
  builder.StoreBytes(name, std::string_view(reinterpret_cast<const char*>(bytes.begin()), bytes.size()),
                     sizeof(capnp::word));
}

// A message read in place from the sealed heap: no copy, no allocation of its data. Valid for
// the duration of Handle (the heap outlives it).
template <typename T>
class HeapMessage {
 public:
  HeapMessage(const Heap& heap, const char* name) {
    auto bytes = heap.FindBytes(name);
    if (!bytes || bytes->size() % sizeof(capnp::word) != 0 ||
        reinterpret_cast<uintptr_t>(bytes->data()) % alignof(capnp::word) != 0) {
      return;
    }
    capnp::ReaderOptions options;
    options.traversalLimitInWords = bytes->size() / sizeof(capnp::word) * 4 + 1024;
    reader_.emplace(kj::arrayPtr(reinterpret_cast<const capnp::word*>(bytes->data()),
                                 bytes->size() / sizeof(capnp::word)),
                    options);
  }
  explicit operator bool() const { return reader_.has_value(); }
  typename T::Reader Get() { return reader_->template getRoot<T>(); }

 private:
  std::optional<capnp::FlatArrayMessageReader> reader_;
};

}  // namespace mp
