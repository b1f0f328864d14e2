// Segments and seals: what the kernel refuses once a segment is sealed, and what it still
// allows (private copy-on-write mappings). These are the guarantees the module heap rests on.
#include "shm/segment.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <thread>
#include <utility>

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mp::shm {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kSize = 3 * 4096;

// True if [p, p + size) is mapped in this process (msync fails with ENOMEM on a hole).
bool IsMapped(void* p, size_t size) { return ::msync(p, size, MS_ASYNC) == 0; }

// A segment holding "sealed bytes" at offset 0, unmapped and sealed.
Segment MakeSealedSegment() {
  auto seg = Segment::Create("segment_test", kSize);
  EXPECT_TRUE(seg.ok()) << seg.status();
  {
    auto map = seg->MapShared(PROT_READ | PROT_WRITE);
    EXPECT_TRUE(map.ok()) << map.status();
    std::memcpy(map->data(), "sealed bytes", 13);
  }
  EXPECT_TRUE(seg->Seal().ok());
  return *std::move(seg);
}

TEST(SegmentTest, CreateSizesAndNamesTheMemfd) {
  auto seg = Segment::Create("segment_test.name", kSize);
  ASSERT_TRUE(seg.ok()) << seg.status();
  EXPECT_EQ(seg->size(), kSize);
  EXPECT_EQ(seg->name(), "segment_test.name");
  struct stat st;
  ASSERT_EQ(::fstat(seg->fd(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), kSize);
  char link[256] = {};
  std::string path = "/proc/self/fd/" + std::to_string(seg->fd());
  ASSERT_GT(::readlink(path.c_str(), link, sizeof link - 1), 0);
  EXPECT_THAT(link, HasSubstr("memfd:segment_test.name"));
  EXPECT_FALSE(seg->IsSealed());
  EXPECT_TRUE(::fcntl(seg->fd(), F_GETFD) & FD_CLOEXEC);
}

TEST(SegmentTest, ResizeChangesSizeBeforeSealing) {
  auto seg = Segment::Create("segment_test", 4096);
  ASSERT_TRUE(seg.ok());
  ASSERT_TRUE(seg->Resize(kSize).ok());
  EXPECT_EQ(seg->size(), kSize);
  auto adopted = Segment::Adopt(UniqueFd(::dup(seg->fd())), "adopted");
  ASSERT_TRUE(adopted.ok()) << adopted.status();
  EXPECT_EQ(adopted->size(), kSize);
  EXPECT_EQ(adopted->name(), "adopted");
}

TEST(SegmentTest, SealSetsAllFourSeals) {
  Segment seg = MakeSealedSegment();
  EXPECT_TRUE(seg.IsSealed());
  auto seals = seg.Seals();
  ASSERT_TRUE(seals.ok());
  EXPECT_EQ(*seals & kAllSeals, kAllSeals);
  EXPECT_EQ(kAllSeals, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE);
}

TEST(SegmentTest, SealedSegmentRefusesWrite) {
  Segment seg = MakeSealedSegment();
  errno = 0;
  EXPECT_EQ(::pwrite(seg.fd(), "x", 1, 0), -1);
  EXPECT_EQ(errno, EPERM);
  errno = 0;
  EXPECT_EQ(::write(seg.fd(), "x", 1), -1);
  EXPECT_EQ(errno, EPERM);
}

TEST(SegmentTest, SealedSegmentRefusesShrinkAndGrow) {
  Segment seg = MakeSealedSegment();
  errno = 0;
  EXPECT_EQ(::ftruncate(seg.fd(), kSize / 2), -1);
  EXPECT_EQ(errno, EPERM);
  errno = 0;
  EXPECT_EQ(::ftruncate(seg.fd(), kSize * 2), -1);
  EXPECT_EQ(errno, EPERM);
  absl::Status s = seg.Resize(kSize * 2);
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("EPERM"));
  EXPECT_EQ(seg.size(), kSize);  // a failed resize leaves the recorded size alone
}

TEST(SegmentTest, SealedSegmentRefusesWritableSharedMapping) {
  Segment seg = MakeSealedSegment();
  errno = 0;
  void* p = ::mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_SHARED, seg.fd(), 0);
  EXPECT_EQ(p, MAP_FAILED);
  EXPECT_EQ(errno, EPERM);
  if (p != MAP_FAILED) ::munmap(p, kSize);
  auto map = seg.MapShared(PROT_READ | PROT_WRITE);
  EXPECT_FALSE(map.ok());
  EXPECT_THAT(std::string(map.status().message()), HasSubstr("EPERM"));
  // Read-only shared mappings still work and see the bytes written before sealing.
  auto ro = seg.MapShared(PROT_READ);
  ASSERT_TRUE(ro.ok()) << ro.status();
  EXPECT_STREQ(static_cast<const char*>(ro->data()), "sealed bytes");
}

TEST(SegmentTest, SealedSegmentRefusesMoreSeals) {
  Segment seg = MakeSealedSegment();
  errno = 0;
  EXPECT_EQ(::fcntl(seg.fd(), F_ADD_SEALS, F_SEAL_WRITE), -1);
  EXPECT_EQ(errno, EPERM);
  EXPECT_FALSE(seg.Seal().ok());
  EXPECT_TRUE(seg.IsSealed());
}

TEST(SegmentTest, PrivateWritableMappingIsCopyOnWrite) {
  Segment seg = MakeSealedSegment();
  auto priv = seg.MapPrivate(PROT_READ | PROT_WRITE);
  ASSERT_TRUE(priv.ok()) << priv.status();
  EXPECT_STREQ(static_cast<const char*>(priv->data()), "sealed bytes");
  std::memcpy(priv->data(), "private copy", 13);
  priv->bytes()[kSize - 1] = std::byte{0x5a};
  EXPECT_STREQ(static_cast<const char*>(priv->data()), "private copy");

  auto fresh = seg.MapShared(PROT_READ);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_STREQ(static_cast<const char*>(fresh->data()), "sealed bytes");
  EXPECT_EQ(fresh->bytes()[kSize - 1], std::byte{0});
  char buf[13] = {};
  ASSERT_EQ(::pread(seg.fd(), buf, sizeof buf, 0), 13);
  EXPECT_STREQ(buf, "sealed bytes");
}

TEST(SegmentTest, SealFailsWhileWritableSharedMappingLives) {
  auto seg = Segment::Create("segment_test", kSize);
  ASSERT_TRUE(seg.ok());
  auto map = seg->MapShared(PROT_READ | PROT_WRITE);
  ASSERT_TRUE(map.ok());
  absl::Status s = seg->Seal();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("writable shared mapping"));
  EXPECT_FALSE(seg->IsSealed());
  map->Reset();
  EXPECT_TRUE(seg->Seal().ok());
  EXPECT_TRUE(seg->IsSealed());
}

TEST(SegmentTest, PatientSealWaitsForAMappingLetGoMeanwhileAndGivesUpOnOneThatStays) {
  auto seg = Segment::Create("segment_test", kSize);
  ASSERT_TRUE(seg.ok());
  auto map = seg->MapShared(PROT_READ | PROT_WRITE);
  ASSERT_TRUE(map.ok());
  // Held throughout: the seal gives up after its patience, naming the cause.
  absl::Status s = seg->SealWhenUnmapped(absl::Milliseconds(30));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_FALSE(seg->IsSealed());
  // Let go while the seal waits: it then succeeds.
  std::thread release([&] {
    absl::SleepFor(absl::Milliseconds(20));
    map->Reset();
  });
  s = seg->SealWhenUnmapped(absl::Seconds(10));
  release.join();
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_TRUE(seg->IsSealed());
}

TEST(SegmentTest, SealFailsWhileAnotherProcessHoldsWritableMapping) {
  auto seg = Segment::Create("segment_test", kSize);
  ASSERT_TRUE(seg.ok());
  auto map = seg->MapShared(PROT_READ | PROT_WRITE);
  ASSERT_TRUE(map.ok());
  int release[2];
  ASSERT_EQ(::pipe2(release, O_CLOEXEC), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // Child: inherits the writable mapping; holds it until the parent closes the pipe.
    ::close(release[1]);
    char c;
    while (::read(release[0], &c, 1) < 0 && errno == EINTR) {
    }
    _exit(0);
  }
  ::close(release[0]);
  map->Reset();  // our own mapping is gone; the child's copy still lives
  absl::Status s = seg->Seal();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  ::close(release[1]);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_TRUE(seg->Seal().ok());
}

TEST(MappingTest, MapRefusesZeroSize) {
  auto seg = Segment::Create("segment_test", kSize);
  ASSERT_TRUE(seg.ok());
  auto map = Mapping::Map(seg->fd(), 0, PROT_READ, MAP_SHARED, "zero");
  EXPECT_EQ(map.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(MappingTest, MapReportsErrno) {
  auto map = Mapping::Map(-1, 4096, PROT_READ, MAP_SHARED, "nothing");
  ASSERT_FALSE(map.ok());
  EXPECT_THAT(std::string(map.status().message()), HasSubstr("mmap(nothing)"));
  EXPECT_THAT(std::string(map.status().message()), HasSubstr("EBADF"));
}

TEST(MappingTest, MoveConstructionTransfersOwnership) {
  auto seg = Segment::Create("segment_test", kSize);
  ASSERT_TRUE(seg.ok());
  auto a = seg->MapShared(PROT_READ | PROT_WRITE);
  ASSERT_TRUE(a.ok());
  void* p = a->data();
  Mapping b(*std::move(a));
  EXPECT_FALSE(a->valid());
  EXPECT_EQ(a->data(), nullptr);
  EXPECT_EQ(a->size(), 0u);
  EXPECT_EQ(b.data(), p);
  EXPECT_EQ(b.size(), kSize);
  EXPECT_TRUE(IsMapped(p, kSize));
  {
    Mapping c(std::move(b));
    EXPECT_EQ(c.data(), p);
  }
  EXPECT_FALSE(IsMapped(p, kSize));  // the destructor of the last owner unmapped it
}

TEST(MappingTest, MoveAssignmentUnmapsTheOldRange) {
  auto seg = Segment::Create("segment_test", kSize);
  ASSERT_TRUE(seg.ok());
  auto a = seg->MapShared(PROT_READ);
  auto b = seg->MapShared(PROT_READ);
  ASSERT_TRUE(a.ok() && b.ok());
  void* pa = a->data();
  void* pb = b->data();
  ASSERT_NE(pa, pb);
  *b = *std::move(a);
  EXPECT_EQ(b->data(), pa);
  EXPECT_FALSE(a->valid());
  EXPECT_TRUE(IsMapped(pa, kSize));
  EXPECT_FALSE(IsMapped(pb, kSize));

  Mapping& alias = *b;
  *b = std::move(alias);  // self-move keeps the mapping
  EXPECT_EQ(b->data(), pa);
  EXPECT_TRUE(IsMapped(pa, kSize));

  b->Reset();
  EXPECT_FALSE(b->valid());
  EXPECT_FALSE(IsMapped(pa, kSize));
  b->Reset();  // a second reset is harmless
  EXPECT_EQ(b->size(), 0u);
}

}  // namespace
}  // namespace mp::shm
