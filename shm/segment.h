// Memfd segments: anonymous shared memory with a name, a size, and kernel-enforced seals.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "shm/unique_fd.h"

namespace mp::shm {

// One mmap'd range, unmapped by the destructor. Move-only. Not thread-safe.
class Mapping {
 public:
  Mapping() = default;
  Mapping(Mapping&& other) noexcept;
  Mapping& operator=(Mapping&& other) noexcept;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping();

  // mmap(nullptr, size, prot, flags, fd, offset). `what` names the subject in errors.
  static absl::StatusOr<Mapping> Map(int fd, size_t size, int prot, int flags,
                                     absl::string_view what, off_t offset = 0);

  void* data() const noexcept { return data_; }
  std::byte* bytes() const noexcept { return static_cast<std::byte*>(data_); }
  size_t size() const noexcept { return size_; }
  bool valid() const noexcept { return data_ != nullptr; }

  // Unmaps now. Needed before sealing: F_SEAL_WRITE fails while a writable shared map lives.
  void Reset() noexcept;

 private:
  Mapping(void* data, size_t size) : data_(data), size_(size) {}
  void* data_ = nullptr;
  size_t size_ = 0;
};

// The four seals that make a segment immutable forever.
inline constexpr int kAllSeals = 0x0001 /*F_SEAL_SEAL*/ | 0x0002 /*F_SEAL_SHRINK*/ |
                                 0x0004 /*F_SEAL_GROW*/ | 0x0008 /*F_SEAL_WRITE*/;

// A memfd and its size. Owns the descriptor. Not thread-safe.
class Segment {
 public:
  // Creates a sealable memfd named `name` (visible as /memfd:name in /proc/PID/maps) of
  // `size` bytes. Pages are allocated lazily by the kernel on first touch.
  static absl::StatusOr<Segment> Create(absl::string_view name, uint64_t size);

  // Takes ownership of an existing memfd received from another process; reads its size.
  static absl::StatusOr<Segment> Adopt(UniqueFd fd, absl::string_view name);

  // Changes the size. Fails once F_SEAL_SHRINK / F_SEAL_GROW are set.
  absl::Status Resize(uint64_t size);

  // Seals against every future write, resize and seal change. One-way: afterwards no process
  // can change what readers see. Fails with FAILED_PRECONDITION while any writable shared
  // mapping of the memfd is alive, in this or any other process (unmap first).
  absl::Status Seal();
  // Seal(), retried while a writable mapping is still alive, for at most `patience`. A process
  // that has exited may keep its mappings a moment longer: anything holding a reference to its
  // address space (a reader of /proc/<pid>/stat, for one) unmaps it when it lets go.
  absl::Status SealWhenUnmapped(absl::Duration patience);

  // The seals currently set (F_GET_SEALS).
  absl::StatusOr<int> Seals() const;
  bool IsSealed() const;

  // Maps the whole segment MAP_SHARED with `prot` (PROT_READ, or PROT_READ|PROT_WRITE before
  // sealing).
  absl::StatusOr<Mapping> MapShared(int prot) const;

  // Maps the whole segment MAP_PRIVATE: copy-on-write if `prot` includes PROT_WRITE, so a
  // write copies the page into this process only; the memfd never changes.
  absl::StatusOr<Mapping> MapPrivate(int prot) const;

  int fd() const noexcept { return fd_.get(); }
  uint64_t size() const noexcept { return size_; }
  const std::string& name() const noexcept { return name_; }
  UniqueFd ReleaseFd() && noexcept { return std::move(fd_); }

 private:
  Segment(UniqueFd fd, uint64_t size, std::string name)
      : fd_(std::move(fd)), size_(size), name_(std::move(name)) {}
  UniqueFd fd_;
  uint64_t size_ = 0;
  std::string name_;
};

}  // namespace mp::shm
