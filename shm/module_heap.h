// A module heap: one memfd per module generation holding a HeapHeader and a data region that
// the module's build function fills (a Boost.Interprocess managed_external_buffer, built with
// offset pointers so it reads correctly at any base address).
//
// Life of a heap: CreateHeapSegment (supervisor) → the builder process maps it shared and fills
// the data region and the root table → FinishHeap (supervisor: validate, trim, checksum,
// magic, seal) → readers map it private read-only and call OpenHeap.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "shm/heap_layout.h"
#include "shm/segment.h"

namespace mp::shm {

// A 64-bit checksum of `bytes` (four independent multiply-rotate lanes; ~GB/s). Detects
// corruption and truncation; not a cryptographic MAC (the seals are what prevent tampering).
uint64_t HeapChecksum(std::span<const std::byte> bytes) noexcept;

// Creates the memfd for one generation of `module`: header page plus `max_data_bytes`.
absl::StatusOr<Segment> CreateHeapSegment(absl::string_view module, uint64_t generation,
                                          uint64_t max_data_bytes);

// What FinishHeap recorded, for logs, mpctl and metrics.
struct HeapInfo {
  std::string module_name;
  std::string module_version;
  uint64_t generation = 0;
  uint64_t segment_bytes = 0;
  uint64_t data_bytes = 0;
  uint64_t checksum = 0;
  uint32_t root_count = 0;
};

// Supervisor side, after the builder process has exited: validates the builder-written parts
// of the header (root table within the data region, data_bytes within capacity), shrinks the
// memfd to the used size, writes identity, checksum and magic, unmaps, and seals all four
// seals. Fails (and leaves the segment unsealed and unusable) on any inconsistency.
absl::StatusOr<HeapInfo> FinishHeap(Segment& segment, absl::string_view module_name,
                                    absl::string_view module_version, uint32_t abi_version,
                                    uint64_t generation);

// A validated, mapped heap. Does not own the mapping; valid while the mapping lives.
class HeapView {
 public:
  const HeapHeader& header() const noexcept { return *header_; }
  const std::byte* data() const noexcept { return data_; }
  uint64_t data_bytes() const noexcept { return header_->data_bytes; }

  // The root named `name`, as a span of the data region; nullopt if there is none.
  std::optional<std::span<const std::byte>> FindRoot(absl::string_view name) const noexcept;

 private:
  friend absl::StatusOr<HeapView> OpenHeap(const void*, uint64_t, bool);
  const HeapHeader* header_ = nullptr;
  const std::byte* data_ = nullptr;
};

// Validates a mapped heap: magic, layout version, sizes against `mapped_bytes`, root table
// bounds, and (if `verify_checksum`) the checksum. Reads only; safe on a read-only mapping.
absl::StatusOr<HeapView> OpenHeap(const void* base, uint64_t mapped_bytes, bool verify_checksum);

}  // namespace mp::shm
