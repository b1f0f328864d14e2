#include "shm/segment.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "shm/sys.h"

namespace mp::shm {

Mapping::Mapping(Mapping&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

Mapping& Mapping::operator=(Mapping&& other) noexcept {
  if (this != &other) {
    Reset();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

Mapping::~Mapping() { Reset(); }

void Mapping::Reset() noexcept {
  if (data_ != nullptr) ::munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
}

absl::StatusOr<Mapping> Mapping::Map(int fd, size_t size, int prot, int flags,
                                     absl::string_view what, off_t offset) {
  if (size == 0) return absl::InvalidArgumentError(absl::StrCat("mmap(", what, "): size 0"));
  void* p = ::mmap(nullptr, size, prot, flags, fd, offset);
  if (p == MAP_FAILED) return ErrnoStatus(absl::StrCat("mmap(", what, ")"), errno);
  return Mapping(p, size);
}

absl::StatusOr<Segment> Segment::Create(absl::string_view name, uint64_t size) {
  std::string n(name);
  int fd = ::memfd_create(n.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return ErrnoStatus(absl::StrCat("memfd_create(", name, ")"), errno);
  Segment seg(UniqueFd(fd), 0, std::move(n));
  if (auto s = seg.Resize(size); !s.ok()) return s;
  return seg;
}

absl::StatusOr<Segment> Segment::Adopt(UniqueFd fd, absl::string_view name) {
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(absl::StrCat("fstat(", name, ")"), errno);
  return Segment(std::move(fd), static_cast<uint64_t>(st.st_size), std::string(name));
}

absl::Status Segment::Resize(uint64_t size) {
  if (RetryEintr([&] { return ::ftruncate(fd_.get(), static_cast<off_t>(size)); }) != 0) {
    return ErrnoStatus(absl::StrCat("ftruncate(", name_, ", ", size, ")"), errno);
  }
  size_ = size;
  return absl::OkStatus();
}

absl::Status Segment::Seal() {
  if (::fcntl(fd_.get(), F_ADD_SEALS, kAllSeals) != 0) {
    int err = errno;
    if (err == EBUSY) {
      return absl::FailedPreconditionError(
          absl::StrCat("seal(", name_, "): a writable shared mapping is still alive"));
    }
    return ErrnoStatus(absl::StrCat("fcntl(", name_, ", F_ADD_SEALS)"), err);
  }
  return absl::OkStatus();
}

absl::Status Segment::SealWhenUnmapped(absl::Duration patience) {
  const absl::Time give_up = absl::Now() + patience;
  absl::Duration pause = absl::Microseconds(100);
  for (;;) {
    absl::Status s = Seal();
    if (s.ok() || !absl::IsFailedPrecondition(s) || absl::Now() >= give_up) return s;
    absl::SleepFor(pause);
    pause = std::min(pause * 2, absl::Milliseconds(20));
  }
}

absl::StatusOr<int> Segment::Seals() const {
  int seals = ::fcntl(fd_.get(), F_GET_SEALS);
  if (seals < 0) return ErrnoStatus(absl::StrCat("fcntl(", name_, ", F_GET_SEALS)"), errno);
  return seals;
}

bool Segment::IsSealed() const {
  auto seals = Seals();
  return seals.ok() && (*seals & kAllSeals) == kAllSeals;
}

absl::StatusOr<Mapping> Segment::MapShared(int prot) const {
  return Mapping::Map(fd_.get(), size_, prot, MAP_SHARED, name_);
}

absl::StatusOr<Mapping> Segment::MapPrivate(int prot) const {
  return Mapping::Map(fd_.get(), size_, prot, MAP_PRIVATE, name_);
}

}  // namespace mp::shm
