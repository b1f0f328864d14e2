// The module SDK's heap containers: built through HeapBuilder into a buffer, then read through
// mp::Heap after the bytes have moved to another address (as in every microprocess).
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "mp/heap_capnp.hpp"
#include "mp/module.hpp"
#include "schemas/call.capnp.h"

namespace mp {
namespace {

constexpr size_t kCapacity = 8 << 20;

// A hand-made build context over an aligned buffer, and a reader over a copy of it.
class SdkHeap {
 public:
  SdkHeap() : build_(static_cast<char*>(std::aligned_alloc(4096, kCapacity))) {
    ctx_.data = build_;
    ctx_.capacity = kCapacity;
    ctx_.set_root = [](mp_build_ctx* c, const char* name, uint64_t offset, uint64_t size) {
      static_cast<SdkHeap*>(c->host)->roots_[name] = {offset, size};
      return 0;
    };
    ctx_.set_used = [](mp_build_ctx* c, uint64_t bytes) { static_cast<SdkHeap*>(c->host)->used_ = bytes; };
    ctx_.option = [](mp_build_ctx*, const char*) -> const char* { return nullptr; };
    ctx_.fail = [](mp_build_ctx*, const char*) {};
    ctx_.data_file = [](mp_build_ctx*, const char*, const void**, uint64_t*) { return -1; };
    ctx_.host = this;
  }
  ~SdkHeap() {
    std::free(build_);
    std::free(moved_);
  }

  mp_build_ctx* ctx() { return &ctx_; }

  // Copies the used bytes to a new address, wipes the original, and returns a reader.
  const mp_heap* Move() {
    moved_ = static_cast<char*>(std::aligned_alloc(4096, kCapacity));
    std::memcpy(moved_, build_, used_);
    std::memset(build_, 0xAB, kCapacity);
    heap_.data = moved_;
    heap_.size = used_;
    heap_.find_root = [](const mp_heap* h, const char* name, uint64_t* size) -> const void* {
      auto* self = static_cast<const SdkHeap*>(h->host);
      auto it = self->roots_.find(name);
      if (it == self->roots_.end()) return nullptr;
      *size = it->second.second;
      return self->moved_ + it->second.first;
    };
    heap_.host = this;
    return &heap_;
  }
  uint64_t used() const { return used_; }

 private:
  char* build_;
  char* moved_ = nullptr;
  mp_build_ctx ctx_{};
  mp_heap heap_{};
  std::map<std::string, std::pair<uint64_t, uint64_t>> roots_;
  uint64_t used_ = 0;
};

TEST(HeapSdkTest, ContainersReadCorrectlyAtAnotherAddress) {
  SdkHeap sdk;
  {
    HeapBuilder b(sdk.ctx());
    auto* words = b.Construct<HeapVector<HeapString>>("words", b.allocator());
    auto* lengths = b.Construct<HeapMap<uint64_t, HeapString>>("by_length", b.allocator());
    auto* index = b.Construct<HeapHashIndex>("index", b.allocator());
    std::vector<std::string> keys;
    for (int i = 0; i < 5000; ++i) keys.push_back("key-" + std::to_string(i * 7919));
    std::vector<std::pair<std::string_view, uint64_t>> entries;
    for (size_t i = 0; i < keys.size(); ++i) {
      words->emplace_back(keys[i].c_str(), b.allocator());
      entries.emplace_back(keys[i], i);
      lengths->emplace(keys[i].size(), HeapString(keys[i].c_str(), b.allocator()));
    }
    index->Build(entries);
    b.Finish();
  }
  ASSERT_GT(sdk.used(), 0u);
  ASSERT_LT(sdk.used(), kCapacity);  // Finish released the unused end
  Heap heap(sdk.Move());
  const auto* words = heap.Find<HeapVector<HeapString>>("words");
  const auto* lengths = heap.Find<HeapMap<uint64_t, HeapString>>("by_length");
  const auto* index = heap.Find<HeapHashIndex>("index");
  ASSERT_NE(words, nullptr);
  ASSERT_NE(lengths, nullptr);
  ASSERT_NE(index, nullptr);
  ASSERT_EQ(words->size(), 5000u);
  EXPECT_EQ(View((*words)[4999]), "key-" + std::to_string(4999 * 7919));
  EXPECT_EQ(index->size(), 5000u);
  for (size_t i = 0; i < 5000; i += 7) {
    auto v = index->Find("key-" + std::to_string(i * 7919));
    ASSERT_TRUE(v.has_value()) << i;
    EXPECT_EQ(*v, i);
  }
  EXPECT_FALSE(index->Find("key-1").has_value());
  EXPECT_FALSE(index->Find("").has_value());
  ASSERT_EQ(lengths->count(5), 1u);  // "key-0"
  EXPECT_EQ(View(lengths->at(5)), "key-0");
  EXPECT_EQ(heap.Find<HeapHashIndex>("absent"), nullptr);
}

TEST(HeapSdkTest, HashIndexKeepsTheLastValueOfARepeatedKey) {
  SdkHeap sdk;
  {
    HeapBuilder b(sdk.ctx());
    auto* index = b.Construct<HeapHashIndex>("index", b.allocator());
    std::vector<std::pair<std::string_view, uint64_t>> entries = {{"a", 1}, {"b", 2}, {"a", 3}};
    index->Build(entries);
    b.Finish();
  }
  Heap heap(sdk.Move());
  const auto* index = heap.Find<HeapHashIndex>("index");
  ASSERT_NE(index, nullptr);
  EXPECT_EQ(index->size(), 2u);
  EXPECT_EQ(index->Find("a"), std::optional<uint64_t>(3));
  EXPECT_EQ(index->Find("b"), std::optional<uint64_t>(2));
}

TEST(HeapSdkTest, CapnpMessageIsReadInPlace) {
  SdkHeap sdk;
  {
    HeapBuilder b(sdk.ctx());
    capnp::MallocMessageBuilder m;
    auto reply = m.initRoot<call::Reply>();
    reply.setStatus(201);
    auto headers = reply.initHeaders(2);
    headers[0].setName("a");
    headers[0].setValue("1");
    headers[1].setName("b");
    headers[1].setValue("2");
    StoreMessage(b, "reply", m);
    b.StoreBytes("blob", "unaligned?", 1);
    b.Finish();
  }
  Heap heap(sdk.Move());
  auto bytes = heap.FindBytes("reply");
  ASSERT_TRUE(bytes.has_value());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(bytes->data()) % 8, 0u);
  HeapMessage<call::Reply> reply(heap, "reply");
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply.Get().getStatus(), 201);
  ASSERT_EQ(reply.Get().getHeaders().size(), 2u);
  EXPECT_EQ(std::string(reply.Get().getHeaders()[1].getValue().cStr()), "2");
  // Zero-copy: the reader's text points into the heap itself.
  const char* text = reply.Get().getHeaders()[1].getValue().cStr();
  EXPECT_GE(text, bytes->data());
  EXPECT_LT(text, bytes->data() + bytes->size());
  EXPECT_EQ(heap.FindBytes("blob"), std::optional<std::string_view>("unaligned?"));
  EXPECT_FALSE(HeapMessage<call::Reply>(heap, "missing"));
}

}  // namespace
}  // namespace mp
