// C++ helpers over the C ABI of <mp/module.h>. A module author writes one class:
//
//   struct Echo {
//     static void Build(mp::HeapBuilder& heap);                       // fill the heap
//     static void Handle(const mp::Heap&, const mp::Call&, mp::Reply&);  // answer one call
//   };
//   MP_MODULE(Echo, "echo", "1.0.0")
//
// Heap containers use Boost.Interprocess offset pointers, so the data reads correctly at any
// base address. Header-only; depends on Boost headers and the C ABI alone.
#pragma once

#include <boost/interprocess/allocators/allocator.hpp>
#include <boost/interprocess/containers/string.hpp>
#include <boost/interprocess/containers/map.hpp>
#include <boost/interprocess/containers/vector.hpp>
#include <boost/interprocess/managed_external_buffer.hpp>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mp/module.h"

namespace mp {

namespace bip = boost::interprocess;
using HeapSegment = bip::managed_external_buffer;
template <typename T>
using HeapAllocator = bip::allocator<T, HeapSegment::segment_manager>;
using HeapString = bip::basic_string<char, std::char_traits<char>, HeapAllocator<char>>;
template <typename T>
using HeapVector = bip::vector<T, HeapAllocator<T>>;

// An ordered map in the heap, e.g. HeapMap<uint64_t, HeapString>.
template <typename K, typename V, typename Compare = std::less<K>>
using HeapMap = bip::map<K, V, Compare, HeapAllocator<std::pair<const K, V>>>;

inline std::string_view View(mp_str s) { return {s.data, s.size}; }
inline std::string_view View(const HeapString& s) { return {s.data(), s.size()}; }

// A hash index from byte strings to 64-bit values, built once and then only read: open
// addressing with linear probing over a power-of-two table (load ≤ 1/2), keys copied into one
// heap blob. Find() takes a string_view and allocates nothing.
class HeapHashIndex {
 public:
  explicit HeapHashIndex(const HeapAllocator<char>& alloc)
      : keys_(alloc), slots_(HeapAllocator<Slot>(alloc.get_segment_manager())) {}

  // Replaces the contents with `entries`; a repeated key keeps its last value.
  template <typename Entries>  // a range of std::pair<std::string_view, uint64_t>
  void Build(const Entries& entries) {
    size_t n = 0, bytes = 0;
    for (const auto& e : entries) {
      ++n;
      bytes += e.first.size();
    }
    size_t capacity = 16;
    while (capacity < 2 * n) capacity *= 2;
    keys_.clear();
    keys_.reserve(bytes);
    slots_.assign(capacity, Slot{});
    count_ = 0;
    for (const auto& [key, value] : entries) {
      const uint64_t h = Hash(key);
      for (uint64_t i = h & (capacity - 1);; i = (i + 1) & (capacity - 1)) {
        Slot& s = slots_[i];
        if (s.used && s.hash == h && KeyAt(s) == key) {
          s.value = value;
          break;
        }
        if (!s.used) {
          s = Slot{h, keys_.size(), static_cast<uint32_t>(key.size()), 1, value};
          keys_.insert(keys_.end(), key.begin(), key.end());
          ++count_;
          break;
        }
      }
    }
  }

  std::optional<uint64_t> Find(std::string_view key) const {
    if (slots_.empty()) return std::nullopt;
    const uint64_t h = Hash(key);
    const uint64_t mask = slots_.size() - 1;
    for (uint64_t i = h & mask;; i = (i + 1) & mask) {
      const Slot& s = slots_[i];
      if (!s.used) return std::nullopt;
      if (s.hash == h && KeyAt(s) == key) return s.value;
    }
  }

  size_t size() const { return count_; }

  // FNV-1a, 64-bit: stable across processes and builds (the table outlives the builder).
  static uint64_t Hash(std::string_view s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
    return h;
  }

 private:
  struct Slot {
    uint64_t hash = 0;
    uint64_t key_offset = 0;
    uint32_t key_size = 0;
    uint32_t used = 0;
    uint64_t value = 0;
  };
  std::string_view KeyAt(const Slot& s) const { return {keys_.data() + s.key_offset, s.key_size}; }

  HeapVector<char> keys_;
  HeapVector<Slot> slots_;
  uint64_t count_ = 0;
};

// Fills a heap during build. Lives in the builder process only.
class HeapBuilder {
 public:
  explicit HeapBuilder(mp_build_ctx* ctx)
      : ctx_(ctx), segment_(bip::create_only, ctx->data, ctx->capacity) {}

  // Constructs a T named `name` in the heap and records it as a root that Heap::Find<T> finds.
  // Throws bip::bad_alloc when the heap is full (the build then fails with that reason).
  template <typename T, typename... Args>
  T* Construct(const char* name, Args&&... args) {
    T* obj = segment_.construct<T>(name)(std::forward<Args>(args)...);
    const auto offset = static_cast<uint64_t>(reinterpret_cast<char*>(obj) -
                                              static_cast<char*>(ctx_->data));
    if (ctx_->set_root(ctx_, name, offset, sizeof(T)) != 0) {
      throw std::length_error(std::string("heap root table full or name too long: ") + name);
    }
    return obj;
  }

  // Copies `bytes` into the heap, `align`-aligned, and records them as root `name`. Use it for
  // Cap'n Proto flat arrays (see <mp/heap_capnp.hpp>) or any blob read in place.
  void StoreBytes(const char* name, std::string_view bytes, size_t align = 8) {
    void* p = segment_.allocate_aligned(bytes.size() ? bytes.size() : 1, align);
    if (!bytes.empty()) std::memcpy(p, bytes.data(), bytes.size());
    const auto offset = static_cast<uint64_t>(static_cast<char*>(p) - static_cast<char*>(ctx_->data));
    if (ctx_->set_root(ctx_, name, offset, bytes.size()) != 0) {
      throw std::length_error(std::string("heap root table full or name too long: ") + name);
    }
  }

  // An allocator for heap containers: HeapString(s, builder.allocator()).
  HeapAllocator<char> allocator() { return HeapAllocator<char>(segment_.get_segment_manager()); }
  HeapSegment& segment() { return segment_; }

  // The option `key` from the host config, if given.
  std::optional<std::string_view> Option(const char* key) const {
    const char* v = ctx_->option(ctx_, key);
    if (v == nullptr) return std::nullopt;
    return std::string_view(v);
  }

  // The contents of data file `name` (config "dataFiles"), read-only, valid during Build.
  std::optional<std::string_view> DataFile(const char* name) const {
    const void* data = nullptr;
    uint64_t size = 0;
    if (ctx_->data_file(ctx_, name, &data, &size) != 0) return std::nullopt;
    return std::string_view(static_cast<const char*>(data), size);
  }

  // Releases the unused end of the data region. Called by MP_MODULE after Build.
  void Finish() {
    segment_.get_segment_manager()->shrink_to_fit();
    ctx_->set_used(ctx_, segment_.get_size());
  }

 private:
  mp_build_ctx* ctx_;
  HeapSegment segment_;
};

// The sealed heap in a microprocess: read-only. Nothing reached from here may be written.
class Heap {
 public:
  explicit Heap(const mp_heap* heap) : heap_(heap) {}
  // The root `name` as a T, or nullptr if the build recorded none (or a smaller one).
  template <typename T>
  const T* Find(const char* name) const {
    uint64_t size = 0;
    const void* p = heap_->find_root(heap_, name, &size);
    return (p != nullptr && size >= sizeof(T)) ? static_cast<const T*>(p) : nullptr;
  }
  // The bytes of root `name` (as stored by StoreBytes or Construct), if any.
  std::optional<std::string_view> FindBytes(const char* name) const {
    uint64_t size = 0;
    const void* p = heap_->find_root(heap_, name, &size);
    if (p == nullptr) return std::nullopt;
    return std::string_view(static_cast<const char*>(p), size);
  }
  uint64_t size() const { return heap_->size; }

 private:
  const mp_heap* heap_;
};

// The value of the first header named `name` (case-insensitive) among `count`, if any.
inline std::optional<std::string_view> FindHeader(const mp_header* headers, size_t count,
                                                  std::string_view name) {
  for (size_t i = 0; i < count; ++i) {
    std::string_view n = View(headers[i].name);
    if (n.size() == name.size() && strncasecmp(n.data(), name.data(), n.size()) == 0) {
      return View(headers[i].value);
    }
  }
  return std::nullopt;
}

// ---- Services (ABI 1.1) ----

// A Redis reply, read-only, valid until the next service request or the end of Handle.
class Value {
 public:
  explicit Value(const mp_value* v) : v_(v) {}
  mp_value_type type() const { return static_cast<mp_value_type>(v_->type); }
  bool nil() const { return v_->type == MP_VALUE_NIL; }
  bool is_error() const { return v_->type == MP_VALUE_ERROR; }
  int64_t integer() const { return v_->integer; }
  // The bytes of a STRING, the text of a STATUS or an ERROR; empty otherwise.
  std::string_view str() const { return View(v_->str); }
  // The elements of an ARRAY.
  size_t size() const { return v_->element_count; }
  Value operator[](size_t i) const { return Value(&v_->elements[i]); }

 private:
  const mp_value* v_;
};

// The outcome of a service request: the answer, or why the host refused it or could not
// perform it (error(): a message naming the rule or the failure).
template <typename T>
class ServiceResult {
 public:
  static ServiceResult Ok(T value) { return ServiceResult(std::move(value), {}); }
  static ServiceResult Failed(std::string_view error) { return ServiceResult(std::nullopt, error); }
  bool ok() const { return value_.has_value(); }
  explicit operator bool() const { return ok(); }
  const T& value() const { return *value_; }
  const T& operator*() const { return *value_; }
  const T* operator->() const { return &*value_; }
  std::string_view error() const { return error_; }

 private:
  ServiceResult(std::optional<T> value, std::string_view error)
      : value_(std::move(value)), error_(error) {}
  std::optional<T> value_;
  std::string_view error_;
};

// Another module's answer, valid as a Value is.
class Response {
 public:
  explicit Response(const mp_response* r) : r_(r) {}
  int status() const { return r_->status; }
  std::string_view body() const { return View(r_->body); }
  std::optional<std::string_view> Header(std::string_view name) const {
    return FindHeader(r_->headers, r_->header_count, name);
  }

 private:
  const mp_response* r_;
};

// What the host brokers for this module (its config's "services"). Each request waits for its
// answer; the time counts against the call's deadline.
class Services {
 public:
  explicit Services(const mp_services* s) : s_(s) {}
  // False under a host older than ABI 1.1.
  bool available() const { return s_ != nullptr; }

  // A Redis command: Redis("cache", {"GET", "spell:word"}).
  ServiceResult<Value> Redis(std::string_view service,
                             std::initializer_list<std::string_view> args) const {
    return Redis(service, args.begin(), args.size());
  }
  template <typename Range>  // of std::string_view, e.g. std::vector<std::string_view>
  ServiceResult<Value> RedisArgv(std::string_view service, const Range& args) const {
    std::vector<std::string_view> v(std::begin(args), std::end(args));
    return Redis(service, v.data(), v.size());
  }
  ServiceResult<Value> Redis(std::string_view service, const std::string_view* args,
                             size_t count) const {
    if (s_ == nullptr) return ServiceResult<Value>::Failed("the host brokers no services");
    std::vector<mp_str> argv;
    argv.reserve(count);
    for (size_t i = 0; i < count; ++i) argv.push_back({args[i].data(), args[i].size()});
    const mp_value* reply = nullptr;
    mp_str error{nullptr, 0};
    if (s_->redis(s_, {service.data(), service.size()}, argv.data(), argv.size(), &reply,
                  &error) != 0) {
      return ServiceResult<Value>::Failed(View(error));
    }
    return ServiceResult<Value>::Ok(Value(reply));
  }

  // A call to the module behind `service`: CallModule("words", "GET", "/suggest", "w=helo").
  ServiceResult<Response> CallModule(
      std::string_view service, std::string_view method, std::string_view path,
      std::string_view query = {}, std::string_view body = {},
      std::initializer_list<std::pair<std::string_view, std::string_view>> headers = {}) const {
    if (s_ == nullptr) return ServiceResult<Response>::Failed("the host brokers no services");
    std::vector<mp_header> hs;
    for (const auto& [n, v] : headers) hs.push_back({{n.data(), n.size()}, {v.data(), v.size()}});
    mp_call request{};
    request.method = {method.data(), method.size()};
    request.path = {path.data(), path.size()};
    request.query = {query.data(), query.size()};
    request.headers = hs.data();
    request.header_count = hs.size();
    request.body = {body.data(), body.size()};
    const mp_response* response = nullptr;
    mp_str error{nullptr, 0};
    if (s_->call(s_, {service.data(), service.size()}, &request, &response, &error) != 0) {
      return ServiceResult<Response>::Failed(View(error));
    }
    return ServiceResult<Response>::Ok(Response(response));
  }

 private:
  const mp_services* s_;
};

// One call, read-only, valid during Handle.
class Call {
 public:
  explicit Call(const mp_call* call) : call_(call) {}
  std::string_view method() const { return View(call_->method); }
  std::string_view path() const { return View(call_->path); }
  std::string_view query() const { return View(call_->query); }
  std::string_view body() const { return View(call_->body); }
  // The services the host brokers for this module (ABI 1.1).
  Services services() const { return Services(call_->services); }
  // The first header named `name` (case-insensitive), if any.
  std::optional<std::string_view> Header(std::string_view name) const {
    return FindHeader(call_->headers, call_->header_count, name);
  }
  // The value of `key` in the query string (no percent-decoding), if present.
  std::optional<std::string_view> QueryParam(std::string_view key) const {
    std::string_view q = query();
    while (!q.empty()) {
      size_t amp = q.find('&');
      std::string_view pair = q.substr(0, amp);
      size_t eq = pair.find('=');
      if (pair.substr(0, eq) == key) {
        return eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
      }
      if (amp == std::string_view::npos) break;
      q.remove_prefix(amp + 1);
    }
    return std::nullopt;
  }

 private:
  const mp_call* call_;
};

class Reply {
 public:
  explicit Reply(mp_reply* reply) : reply_(reply) {}
  void SetStatus(int status) { reply_->set_status(reply_, status); }
  void AddHeader(std::string_view name, std::string_view value) {
    reply_->add_header(reply_, {name.data(), name.size()}, {value.data(), value.size()});
  }
  void Write(std::string_view bytes) { reply_->append_body(reply_, bytes.data(), bytes.size()); }
  // True once the host gave up on this call (deadline): stop and return; the reply is dropped.
  bool Cancelled() const { return reply_->cancelled(reply_) != 0; }

 private:
  mp_reply* reply_;
};

namespace internal {

template <typename M>
int Build(mp_build_ctx* ctx) {
  std::optional<HeapBuilder> builder;
  // Whatever the module threw, say so plainly when the real cause is a full heap.
  auto heap_full = [&] {
    return builder && builder->segment().get_free_memory() < ctx->capacity / 16 + 4096;
  };
  auto full_hint = [&] {
    return " (the heap is full: the build needs more than its " +
           std::to_string(ctx->capacity >> 20) + " MiB; raise maxHeapMb)";
  };
  try {
    builder.emplace(ctx);
    M::Build(*builder);
    builder->Finish();
    return 0;
  } catch (const bip::bad_alloc&) {
    ctx->fail(ctx, ("out of heap memory" + full_hint()).c_str());
  } catch (const std::length_error& e) {  // a heap container asked for more than the heap holds
    ctx->fail(ctx, (std::string(e.what()) + full_hint()).c_str());
  } catch (const std::exception& e) {
    ctx->fail(ctx, (std::string(e.what()) + (heap_full() ? full_hint() : "")).c_str());
  } catch (...) {
    ctx->fail(ctx, "build threw a non-standard exception");
  }
  return 1;
}

template <typename M>
int Handle(const mp_heap* heap, const mp_call* call, mp_reply* reply) {
  try {
    Heap h(heap);
    Call c(call);
    Reply r(reply);
    M::Handle(h, c, r);
    return MP_HANDLE_OK;
  } catch (const std::bad_alloc&) {
    return MP_HANDLE_OUT_OF_MEMORY;
  } catch (...) {
    return MP_HANDLE_FAILED;
  }
}

}  // namespace internal
}  // namespace mp

// Defines the module's entry point from class `M` with static Build and Handle.
#define MP_MODULE(M, module_name, module_version)                                       \
  extern "C" __attribute__((visibility("default"))) const mp_module* mp_module_entry() { \
    static const mp_module kModule = {MP_MODULE_ABI_VERSION,                          \
                                      sizeof(mp_module),                              \
                                      module_name,                                    \
                                      module_version,                                 \
                                      &::mp::internal::Build<M>,                      \
                                      &::mp::internal::Handle<M>};                    \
    return &kModule;                                                                  \
  }
