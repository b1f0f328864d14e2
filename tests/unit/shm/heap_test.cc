// The module heap end to end in one process: fill it the way mp-builder does (a hand-made
// mp_build_ctx over a shared mapping, Boost containers through <mp/module.hpp>), finish and
// seal it, then open it read-only at other addresses. Plus the corrupt inputs FinishHeap and
// OpenHeap must refuse.
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "mp/module.hpp"
#include "shm/heap_layout.h"
#include "shm/module_heap.h"
#include "shm/segment.h"

namespace mp::shm {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kCapacity = 1 << 20;
// Longer than any short-string buffer, so the string's bytes live behind an offset pointer.
const char kGreeting[] =
    "hello from a sealed heap, long enough to live outside the string object itself";

// What builder_main.cc keeps for one build: the header it writes roots into.
struct TestBuild {
  mp_build_ctx ctx{};
  HeapHeader* header = nullptr;
  std::map<std::string, std::string> options;
  std::string failure;

  static TestBuild* From(mp_build_ctx* ctx) { return static_cast<TestBuild*>(ctx->host); }
};

int SetRoot(mp_build_ctx* ctx, const char* name, uint64_t offset, uint64_t size) {
  HeapHeader* h = TestBuild::From(ctx)->header;
  if (h->root_count >= kMaxHeapRoots || std::strlen(name) >= kHeapRootNameBytes) return -1;
  HeapRoot& r = h->roots[h->root_count++];
  std::memset(r.name, 0, sizeof r.name);
  std::memcpy(r.name, name, std::strlen(name));
  r.offset = offset;
  r.size = size;
  return 0;
}

void SetUsed(mp_build_ctx* ctx, uint64_t bytes) {
  TestBuild::From(ctx)->header->data_bytes = bytes;
}

const char* Option(mp_build_ctx* ctx, const char* key) {
  auto& opts = TestBuild::From(ctx)->options;
  auto it = opts.find(key);
  return it == opts.end() ? nullptr : it->second.c_str();
}

void Fail(mp_build_ctx* ctx, const char* message) { TestBuild::From(ctx)->failure = message; }

int NoDataFile(mp_build_ctx*, const char*, const void**, uint64_t*) { return -1; }

// A test module: one long string and a vector of numbers.
struct GreetingModule {
  static void Build(HeapBuilder& heap) {
    std::string greeting(heap.Option("greeting").value_or(kGreeting));
    heap.Construct<HeapString>("greeting", greeting.c_str(), heap.allocator());
    auto* numbers = heap.Construct<HeapVector<uint64_t>>("numbers", heap.allocator());
    for (uint64_t i = 0; i < 1000; ++i) numbers->push_back(i * i);
  }
};

// Runs GreetingModule's build over `segment` the way mp-builder does.
void BuildInto(Segment& segment, std::map<std::string, std::string> options = {}) {
  auto map = segment.MapShared(PROT_READ | PROT_WRITE);
  ASSERT_TRUE(map.ok()) << map.status();
  TestBuild b;
  b.header = static_cast<HeapHeader*>(map->data());
  std::memset(b.header, 0, sizeof(HeapHeader));
  b.options = std::move(options);
  b.ctx.data = map->bytes() + kHeapHeaderBytes;
  b.ctx.capacity = map->size() - kHeapHeaderBytes;
  b.ctx.set_root = &SetRoot;
  b.ctx.set_used = &SetUsed;
  b.ctx.option = &Option;
  b.ctx.fail = &Fail;
  b.ctx.data_file = &NoDataFile;
  b.ctx.host = &b;
  ASSERT_EQ(internal::Build<GreetingModule>(&b.ctx), 0) << b.failure;
  EXPECT_EQ(b.header->root_count, 2u);
  EXPECT_GT(b.header->data_bytes, 0u);
  EXPECT_LT(b.header->data_bytes, kCapacity);  // Finish() shrank the managed buffer
}

// Writes the builder's part of the header by hand: data_bytes and one root.
void WriteBuilderHeader(Segment& segment, uint64_t data_bytes, uint64_t root_offset,
                        uint64_t root_size, uint32_t root_count = 1) {
  auto map = segment.MapShared(PROT_READ | PROT_WRITE);
  ASSERT_TRUE(map.ok());
  auto* h = static_cast<HeapHeader*>(map->data());
  std::memset(h, 0, sizeof *h);
  h->data_bytes = data_bytes;
  h->root_count = root_count;
  std::strcpy(h->roots[0].name, "root");
  h->roots[0].offset = root_offset;
  h->roots[0].size = root_size;
}

std::string_view ReadGreeting(const HeapView& view) {
  auto root = view.FindRoot("greeting");
  if (!root || root->size() < sizeof(HeapString)) return "(no greeting root)";
  const auto* s = reinterpret_cast<const HeapString*>(root->data());
  return std::string_view(s->data(), s->size());
}

class HeapTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto seg = CreateHeapSegment("greeter", 7, kCapacity);
    ASSERT_TRUE(seg.ok()) << seg.status();
    segment_.emplace(*std::move(seg));
  }
  // Builds and finishes the heap; leaves the result in info_.
  void BuildAndFinish() {
    ASSERT_NO_FATAL_FAILURE(BuildInto(*segment_));
    auto info = FinishHeap(*segment_, "greeter", "2.1.0", MP_MODULE_ABI_VERSION, 7);
    ASSERT_TRUE(info.ok()) << info.status();
    info_ = *info;
  }
  std::optional<Segment> segment_;
  HeapInfo info_;
};

TEST_F(HeapTest, CreateHeapSegmentSizesHeaderPlusPages) {
  EXPECT_EQ(segment_->size(), kHeapHeaderBytes + kCapacity);
  EXPECT_EQ(segment_->name(), "mp-heap.greeter.gen7");
  auto odd = CreateHeapSegment("odd", 1, 100);
  ASSERT_TRUE(odd.ok());
  EXPECT_EQ(odd->size(), kHeapHeaderBytes + static_cast<uint64_t>(::sysconf(_SC_PAGESIZE)));
}

TEST_F(HeapTest, FinishSealsTrimsAndRecordsIdentity) {
  ASSERT_NO_FATAL_FAILURE(BuildAndFinish());
  EXPECT_TRUE(segment_->IsSealed());
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  EXPECT_EQ(info_.segment_bytes, kHeapHeaderBytes + (info_.data_bytes + page - 1) / page * page);
  EXPECT_LT(info_.segment_bytes, kHeapHeaderBytes + kCapacity);
  EXPECT_EQ(segment_->size(), info_.segment_bytes);
  struct stat st;
  ASSERT_EQ(::fstat(segment_->fd(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), info_.segment_bytes);
  EXPECT_EQ(info_.module_name, "greeter");
  EXPECT_EQ(info_.module_version, "2.1.0");
  EXPECT_EQ(info_.generation, 7u);
  EXPECT_EQ(info_.root_count, 2u);
}

TEST_F(HeapTest, OpenOnPrivateReadOnlyMappingFindsRoots) {
  ASSERT_NO_FATAL_FAILURE(BuildAndFinish());
  auto map = segment_->MapPrivate(PROT_READ);
  ASSERT_TRUE(map.ok()) << map.status();
  auto view = OpenHeap(map->data(), map->size(), /*verify_checksum=*/true);
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_EQ(view->header().magic, kHeapMagic);
  EXPECT_EQ(view->header().abi_version, MP_MODULE_ABI_VERSION);
  EXPECT_EQ(view->header().checksum, info_.checksum);
  EXPECT_EQ(view->data_bytes(), info_.data_bytes);
  EXPECT_EQ(view->data(), map->bytes() + kHeapHeaderBytes);
  EXPECT_EQ(ReadGreeting(*view), kGreeting);

  auto numbers_root = view->FindRoot("numbers");
  ASSERT_TRUE(numbers_root.has_value());
  ASSERT_GE(numbers_root->size(), sizeof(HeapVector<uint64_t>));
  const auto* numbers = reinterpret_cast<const HeapVector<uint64_t>*>(numbers_root->data());
  ASSERT_EQ(numbers->size(), 1000u);
  EXPECT_EQ((*numbers)[999], 999u * 999u);
  EXPECT_FALSE(view->FindRoot("absent").has_value());
  EXPECT_FALSE(view->FindRoot("greet").has_value());  // a prefix is not a match
}

TEST_F(HeapTest, ModuleViewThroughTheCApi) {
  ASSERT_NO_FATAL_FAILURE(BuildAndFinish());
  auto map = segment_->MapPrivate(PROT_READ);
  ASSERT_TRUE(map.ok());
  auto view = OpenHeap(map->data(), map->size(), true);
  ASSERT_TRUE(view.ok());
  mp_heap abi{};
  abi.data = view->data();
  abi.size = view->data_bytes();
  abi.host = &*view;
  abi.find_root = [](const mp_heap* h, const char* name, uint64_t* size) -> const void* {
    auto r = static_cast<const HeapView*>(h->host)->FindRoot(name);
    if (!r) return nullptr;
    *size = r->size();
    return r->data();
  };
  Heap heap(&abi);
  const HeapString* s = heap.Find<HeapString>("greeting");
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(std::string_view(s->data(), s->size()), kGreeting);
  // A root smaller than the requested type is refused.
  EXPECT_EQ((heap.Find<std::array<char, 4096>>("greeting")), nullptr);
  EXPECT_EQ(heap.Find<HeapString>("missing"), nullptr);
}

TEST_F(HeapTest, ReadsTheSameAtTwoAddressesInOneProcess) {
  ASSERT_NO_FATAL_FAILURE(BuildAndFinish());
  auto a = segment_->MapPrivate(PROT_READ);
  auto b = segment_->MapPrivate(PROT_READ);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_NE(a->data(), b->data());
  auto va = OpenHeap(a->data(), a->size(), true);
  auto vb = OpenHeap(b->data(), b->size(), true);
  ASSERT_TRUE(va.ok() && vb.ok());
  EXPECT_EQ(ReadGreeting(*va), kGreeting);
  EXPECT_EQ(ReadGreeting(*vb), kGreeting);
  // The string bytes are in each mapping's own range: offsets, not pointers.
  const char* in_b = reinterpret_cast<const HeapString*>(vb->FindRoot("greeting")->data())->data();
  EXPECT_GE(in_b, reinterpret_cast<const char*>(b->data()));
  EXPECT_LT(in_b, reinterpret_cast<const char*>(b->data()) + b->size());
}

TEST_F(HeapTest, ReadsTheSameInAForkedChildAtAnotherAddress) {
  ASSERT_NO_FATAL_FAILURE(BuildAndFinish());
  const int fd = segment_->fd();
  const uint64_t bytes = segment_->size();
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // Shift the address space so the heap lands elsewhere than in any parent mapping.
    void* shift = ::mmap(nullptr, 16 << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (shift == MAP_FAILED) _exit(10);
    void* base = ::mmap(nullptr, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
    if (base == MAP_FAILED) _exit(11);
    auto view = OpenHeap(base, bytes, true);
    if (!view.ok()) _exit(12);
    _exit(ReadGreeting(*view) == kGreeting ? 0 : 13);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "child died with signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST_F(HeapTest, OptionReachesTheBuild) {
  ASSERT_NO_FATAL_FAILURE(BuildInto(*segment_, {{"greeting", "configured"}}));
  ASSERT_TRUE(FinishHeap(*segment_, "greeter", "1", 1, 7).ok());
  auto map = segment_->MapPrivate(PROT_READ);
  ASSERT_TRUE(map.ok());
  auto view = OpenHeap(map->data(), map->size(), true);
  ASSERT_TRUE(view.ok());
  EXPECT_EQ(ReadGreeting(*view), "configured");
}

TEST_F(HeapTest, FinishRefusesRootOutsideDataRegion) {
  ASSERT_NO_FATAL_FAILURE(WriteBuilderHeader(*segment_, 8192, 8000, 500));
  auto info = FinishHeap(*segment_, "greeter", "1", 1, 7);
  EXPECT_EQ(info.status().code(), absl::StatusCode::kDataLoss) << info.status();
  EXPECT_THAT(std::string(info.status().message()), HasSubstr("outside the data region"));
  EXPECT_THAT(std::string(info.status().message()), HasSubstr("'greeter'"));
  EXPECT_FALSE(segment_->IsSealed());
}

TEST_F(HeapTest, FinishRefusesRootStartingPastDataRegion) {
  ASSERT_NO_FATAL_FAILURE(WriteBuilderHeader(*segment_, 8192, 10000, 8));
  auto info = FinishHeap(*segment_, "greeter", "1", 1, 7);
  EXPECT_THAT(std::string(info.status().message()), HasSubstr("outside the data region"));
  EXPECT_FALSE(segment_->IsSealed());
}

TEST_F(HeapTest, FinishRefusesRootWhoseEndWrapsAround) {
  ASSERT_NO_FATAL_FAILURE(WriteBuilderHeader(*segment_, 8192, 16, ~uint64_t{0} - 8));
  EXPECT_FALSE(FinishHeap(*segment_, "greeter", "1", 1, 7).ok());
  EXPECT_FALSE(segment_->IsSealed());
}

TEST_F(HeapTest, FinishRefusesTooManyRoots) {
  ASSERT_NO_FATAL_FAILURE(WriteBuilderHeader(*segment_, 8192, 0, 8, kMaxHeapRoots + 1));
  auto info = FinishHeap(*segment_, "greeter", "1", 1, 7);
  EXPECT_EQ(info.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(info.status().message()), HasSubstr("claims 49 entries"));
  EXPECT_FALSE(segment_->IsSealed());
}

TEST_F(HeapTest, FinishRefusesDataBytesBeyondCapacity) {
  ASSERT_NO_FATAL_FAILURE(WriteBuilderHeader(*segment_, kCapacity + 1, 0, 8));
  auto info = FinishHeap(*segment_, "greeter", "1", 1, 7);
  EXPECT_EQ(info.status().code(), absl::StatusCode::kResourceExhausted) << info.status();
  EXPECT_FALSE(segment_->IsSealed());
}

TEST_F(HeapTest, FinishRefusesBuilderThatGrewTheMemfd) {
  // The builder holds the unsealed memfd: it may grow it and claim the growth as used. The
  // limit is what the supervisor allocated, not what the memfd says now.
  ASSERT_NO_FATAL_FAILURE(WriteBuilderHeader(*segment_, 2 * kCapacity, 0, 8));
  ASSERT_EQ(::ftruncate(segment_->fd(), kHeapHeaderBytes + 4 * kCapacity), 0);
  auto info = FinishHeap(*segment_, "greeter", "1", 1, 7);
  EXPECT_EQ(info.status().code(), absl::StatusCode::kResourceExhausted) << info.status();
  EXPECT_FALSE(segment_->IsSealed());
}

TEST_F(HeapTest, FinishRefusesBuilderThatShrankTheMemfd) {
  ASSERT_NO_FATAL_FAILURE(WriteBuilderHeader(*segment_, kCapacity, 0, 8));
  ASSERT_EQ(::ftruncate(segment_->fd(), kHeapHeaderBytes + 4096), 0);
  auto info = FinishHeap(*segment_, "greeter", "1", 1, 7);
  EXPECT_EQ(info.status().code(), absl::StatusCode::kResourceExhausted) << info.status();
  ASSERT_EQ(::ftruncate(segment_->fd(), 100), 0);  // smaller than the header
  EXPECT_EQ(FinishHeap(*segment_, "greeter", "1", 1, 7).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_FALSE(segment_->IsSealed());
}

TEST_F(HeapTest, FinishRefusesUnterminatedRootName) {
  ASSERT_NO_FATAL_FAILURE(WriteBuilderHeader(*segment_, 8192, 0, 8));
  {
    auto map = segment_->MapShared(PROT_READ | PROT_WRITE);
    ASSERT_TRUE(map.ok());
    std::memset(static_cast<HeapHeader*>(map->data())->roots[0].name, 'x', kHeapRootNameBytes);
  }
  auto info = FinishHeap(*segment_, "greeter", "1", 1, 7);
  EXPECT_THAT(std::string(info.status().message()), HasSubstr("unterminated"));
}

TEST_F(HeapTest, OpenDetectsFlippedDataByte) {
  ASSERT_NO_FATAL_FAILURE(BuildAndFinish());
  auto map = segment_->MapPrivate(PROT_READ | PROT_WRITE);
  ASSERT_TRUE(map.ok());
  map->bytes()[kHeapHeaderBytes + info_.data_bytes / 2] ^= std::byte{0x01};
  auto view = OpenHeap(map->data(), map->size(), /*verify_checksum=*/true);
  EXPECT_EQ(view.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(view.status().message()), HasSubstr("checksum"));
  EXPECT_THAT(std::string(view.status().message()), HasSubstr("greeter"));
  // Without verification the (structurally valid) heap still opens.
  EXPECT_TRUE(OpenHeap(map->data(), map->size(), /*verify_checksum=*/false).ok());
}

TEST_F(HeapTest, OpenRefusesBadMagic) {
  ASSERT_NO_FATAL_FAILURE(BuildAndFinish());
  auto map = segment_->MapPrivate(PROT_READ | PROT_WRITE);
  ASSERT_TRUE(map.ok());
  static_cast<HeapHeader*>(map->data())->magic ^= 1;
  auto view = OpenHeap(map->data(), map->size(), false);
  EXPECT_EQ(view.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(view.status().message()), HasSubstr("magic"));
}

TEST_F(HeapTest, OpenRefusesUnfinishedHeap) {
  ASSERT_NO_FATAL_FAILURE(BuildInto(*segment_));
  auto map = segment_->MapPrivate(PROT_READ);
  ASSERT_TRUE(map.ok());
  EXPECT_THAT(std::string(OpenHeap(map->data(), map->size(), false).status().message()),
              HasSubstr("magic"));
}

TEST_F(HeapTest, OpenRefusesSizeMismatchAndBadLayout) {
  ASSERT_NO_FATAL_FAILURE(BuildAndFinish());
  auto map = segment_->MapPrivate(PROT_READ | PROT_WRITE);
  ASSERT_TRUE(map.ok());
  EXPECT_FALSE(OpenHeap(map->data(), map->size() - 4096, false).ok());
  EXPECT_FALSE(OpenHeap(map->data(), map->size() + 4096, false).ok());
  EXPECT_FALSE(OpenHeap(map->data(), kHeapHeaderBytes - 1, false).ok());
  auto* h = static_cast<HeapHeader*>(map->data());
  h->layout_version = kHeapLayoutVersion + 1;
  EXPECT_THAT(std::string(OpenHeap(map->data(), map->size(), false).status().message()),
              HasSubstr("layout version"));
  h->layout_version = kHeapLayoutVersion;
  h->roots[0].offset = h->data_bytes;  // the root now runs past the data region
  EXPECT_THAT(std::string(OpenHeap(map->data(), map->size(), false).status().message()),
              HasSubstr("outside the data region"));
}

TEST(HeapChecksumTest, StableAndSensitive) {
  std::vector<std::byte> data(1000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::byte>(i * 31 + 7);
  const uint64_t base = HeapChecksum(data);
  EXPECT_EQ(HeapChecksum(data), base);
  std::vector<std::byte> copy = data;
  EXPECT_EQ(HeapChecksum(copy), base);  // depends on the bytes, not where they are
  // Any single flipped bit, in the 32-byte lanes or the tail, changes the sum.
  for (size_t pos : {size_t{0}, size_t{7}, size_t{31}, size_t{500}, size_t{991}, size_t{999}}) {
    for (int bit : {0, 7}) {
      copy = data;
      copy[pos] ^= static_cast<std::byte>(1 << bit);
      EXPECT_NE(HeapChecksum(copy), base) << "pos " << pos << " bit " << bit;
    }
  }
  // Truncation and zero-extension change it too.
  EXPECT_NE(HeapChecksum(std::span(data).first(999)), base);
  copy = data;
  copy.push_back(std::byte{0});
  EXPECT_NE(HeapChecksum(copy), base);
  EXPECT_NE(HeapChecksum({}), HeapChecksum(std::span(data).first(1)));
  // Swapping two 8-byte words between lanes changes it.
  copy = data;
  std::swap_ranges(copy.begin(), copy.begin() + 8, copy.begin() + 8);
  EXPECT_NE(HeapChecksum(copy), base);
}

}  // namespace
}  // namespace mp::shm
