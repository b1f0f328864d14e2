#include "shm/module_heap.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace mp::shm {
namespace {

constexpr uint64_t kPrime1 = 0x9E3779B185EBCA87ull;
constexpr uint64_t kPrime2 = 0xC2B2AE3D27D4EB4Full;

inline uint64_t Rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
inline uint64_t Round(uint64_t acc, uint64_t v) { return Rotl(acc + v * kPrime2, 31) * kPrime1; }

uint64_t PageRound(uint64_t n) {
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  return (n + page - 1) / page * page;
}

// Copies a NUL-terminated string out of a fixed, untrusted field.
std::string BoundedString(const char* field, size_t capacity) {
  return std::string(field, ::strnlen(field, capacity));
}

absl::Status ValidateRoots(const HeapHeader& h, uint64_t data_bytes, absl::string_view what) {
  if (h.root_count > kMaxHeapRoots) {
    return absl::DataLossError(absl::StrCat(what, ": root table claims ", h.root_count,
                                            " entries, at most ", kMaxHeapRoots));
  }
  for (uint32_t i = 0; i < h.root_count; ++i) {
    const HeapRoot& r = h.roots[i];
    if (::strnlen(r.name, kHeapRootNameBytes) == kHeapRootNameBytes) {
      return absl::DataLossError(absl::StrCat(what, ": root ", i, " has an unterminated name"));
    }
    if (r.offset > data_bytes || r.size > data_bytes - r.offset) {
      return absl::DataLossError(absl::StrFormat(
          "%s: root '%s' [%d, +%d) lies outside the data region of %d bytes", what, r.name,
          r.offset, r.size, data_bytes));
    }
  }
  return absl::OkStatus();
}

}  // namespace

uint64_t HeapChecksum(std::span<const std::byte> bytes) noexcept {
  uint64_t lanes[4] = {kPrime1 + kPrime2, kPrime2, 0, 0 - kPrime1};
  const std::byte* p = bytes.data();
  size_t n = bytes.size();
  while (n >= 32) {
    for (int i = 0; i < 4; ++i) {
      uint64_t v;
      std::memcpy(&v, p + 8 * i, 8);
      lanes[i] = Round(lanes[i], v);
    }
    p += 32;
    n -= 32;
  }
  uint64_t h = Rotl(lanes[0], 1) + Rotl(lanes[1], 7) + Rotl(lanes[2], 12) + Rotl(lanes[3], 18);
  h += bytes.size();
  for (; n > 0; --n, ++p) h = Rotl(h ^ (static_cast<uint64_t>(*p) * kPrime1), 11) * kPrime2;
  h ^= h >> 33;
  h *= kPrime2;
  h ^= h >> 29;
  return h;
}

absl::StatusOr<Segment> CreateHeapSegment(absl::string_view module, uint64_t generation,
                                          uint64_t max_data_bytes) {
  return Segment::Create(absl::StrCat("mp-heap.", module, ".gen", generation),
                         kHeapHeaderBytes + PageRound(max_data_bytes));
}

absl::StatusOr<HeapInfo> FinishHeap(Segment& segment, absl::string_view module_name,
                                    absl::string_view module_version, uint32_t abi_version,
                                    uint64_t generation) {
  const std::string what = absl::StrCat("heap of module '", module_name, "'");
  // The builder may have resized the memfd behind our back. Shrunk: only what fstat reports is
  // there to map. Grown: the limit is still what we allocated (segment.size()).
  auto reread = Segment::Adopt(UniqueFd(::dup(segment.fd())), segment.name());
  if (!reread.ok()) return reread.status();
  const uint64_t segment_bytes = std::min(reread->size(), segment.size());
  if (segment_bytes < kHeapHeaderBytes) {
    return absl::DataLossError(absl::StrCat(what, ": segment shrank to ", segment_bytes,
                                            " bytes, smaller than its header"));
  }
  const uint64_t capacity = segment_bytes - kHeapHeaderBytes;
  uint64_t used = 0;
  {
    auto map = Mapping::Map(segment.fd(), kHeapHeaderBytes, PROT_READ | PROT_WRITE, MAP_SHARED,
                            segment.name());
    if (!map.ok()) return map.status();
    HeapHeader header;
    std::memcpy(&header, map->data(), sizeof header);  // one read of builder-written bytes
    used = header.data_bytes;
    if (used > capacity) {
      return absl::ResourceExhaustedError(absl::StrCat(
          what, ": build reports ", used, " bytes used, the heap holds at most ", capacity));
    }
    if (auto s = ValidateRoots(header, used, what); !s.ok()) return s;
    header.layout_version = kHeapLayoutVersion;
    header.abi_version = abi_version;
    header.data_offset = kHeapHeaderBytes;
    header.data_bytes = used;
    header.generation = generation;
    header.segment_bytes = kHeapHeaderBytes + PageRound(used);
    std::memset(header.module_name, 0, sizeof header.module_name);
    std::memset(header.module_version, 0, sizeof header.module_version);
    module_name.copy(header.module_name, sizeof header.module_name - 1);
    module_version.copy(header.module_version, sizeof header.module_version - 1);
    header.magic = 0;
    std::memcpy(map->data(), &header, sizeof header);
  }
  if (auto s = segment.Resize(kHeapHeaderBytes + PageRound(used)); !s.ok()) return s;
  {
    auto map = segment.MapShared(PROT_READ | PROT_WRITE);
    if (!map.ok()) return map.status();
    auto* header = static_cast<HeapHeader*>(map->data());
    header->checksum = HeapChecksum({map->bytes() + kHeapHeaderBytes, used});
    header->magic = kHeapMagic;  // last: a header with the magic is complete
  }
  // The builder has exited, but its address space may be torn down a moment later.
  if (auto s = segment.SealWhenUnmapped(absl::Seconds(2)); !s.ok()) return s;
  auto view = segment.MapShared(PROT_READ);
  if (!view.ok()) return view.status();
  auto opened = OpenHeap(view->data(), view->size(), /*verify_checksum=*/false);
  if (!opened.ok()) return opened.status();
  const HeapHeader& h = opened->header();
  return HeapInfo{BoundedString(h.module_name, sizeof h.module_name),
                  BoundedString(h.module_version, sizeof h.module_version),
                  h.generation,
                  h.segment_bytes,
                  h.data_bytes,
                  h.checksum,
                  h.root_count};
}

std::optional<std::span<const std::byte>> HeapView::FindRoot(
    absl::string_view name) const noexcept {
  for (uint32_t i = 0; i < header_->root_count; ++i) {
    const HeapRoot& r = header_->roots[i];
    if (name == absl::string_view(r.name, ::strnlen(r.name, kHeapRootNameBytes))) {
      return std::span<const std::byte>(data_ + r.offset, r.size);
    }
  }
  return std::nullopt;
}

absl::StatusOr<HeapView> OpenHeap(const void* base, uint64_t mapped_bytes,
                                  bool verify_checksum) {
  if (mapped_bytes < kHeapHeaderBytes) {
    return absl::DataLossError(
        absl::StrCat("heap: mapping of ", mapped_bytes, " bytes is smaller than its header"));
  }
  const auto* h = static_cast<const HeapHeader*>(base);
  if (h->magic != kHeapMagic) {
    return absl::DataLossError("heap: bad magic (not a finished mphost heap)");
  }
  if (h->layout_version != kHeapLayoutVersion) {
    return absl::DataLossError(absl::StrCat("heap: layout version ", h->layout_version,
                                            ", this build reads ", kHeapLayoutVersion));
  }
  if (h->data_offset != kHeapHeaderBytes || h->segment_bytes != mapped_bytes ||
      h->data_bytes > mapped_bytes - kHeapHeaderBytes) {
    return absl::DataLossError(absl::StrCat("heap: header sizes (segment ", h->segment_bytes,
                                            ", data ", h->data_bytes, ") disagree with the ",
                                            mapped_bytes, "-byte mapping"));
  }
  if (auto s = ValidateRoots(*h, h->data_bytes, "heap"); !s.ok()) return s;
  const auto* data = static_cast<const std::byte*>(base) + kHeapHeaderBytes;
  if (verify_checksum) {
    uint64_t sum = HeapChecksum({data, h->data_bytes});
    if (sum != h->checksum) {
      return absl::DataLossError(absl::StrFormat(
          "heap of module '%s': checksum %016x, header says %016x",
          BoundedString(h->module_name, sizeof h->module_name), sum, h->checksum));
    }
  }
  HeapView view;
  view.header_ = h;
  view.data_ = data;
  return view;
}

}  // namespace mp::shm
