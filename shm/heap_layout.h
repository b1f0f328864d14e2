// The bytes at the start of every module heap segment. Shared between processes: offsets only,
// trivially copyable, fixed size. Readers treat every field as untrusted until validated.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace mp::shm {

inline constexpr uint64_t kHeapMagic = 0x3150414548504D00ull;  // "\0MPHEAP1" little-endian
inline constexpr uint32_t kHeapLayoutVersion = 1;
inline constexpr uint64_t kHeapHeaderBytes = 4096;  // the data region starts one page in
inline constexpr uint32_t kMaxHeapRoots = 48;
inline constexpr size_t kHeapRootNameBytes = 48;

// One named object in the data region: [offset, offset + size) relative to the data start.
struct HeapRoot {
  char name[kHeapRootNameBytes];  // NUL-terminated
  uint64_t offset;
  uint64_t size;
};
static_assert(sizeof(HeapRoot) == 64);

// Written in two steps: the builder (untrusted module code) fills `roots`, `root_count` and
// `data_bytes`; the supervisor validates them, then writes the rest, `checksum` and finally
// `magic`, and seals. A header without the magic was never finished.
struct HeapHeader {
  uint64_t magic;
  uint32_t layout_version;
  uint32_t abi_version;       // module ABI the plugin was built against
  uint64_t segment_bytes;     // total memfd size, header included
  uint64_t data_offset;       // == kHeapHeaderBytes
  uint64_t data_bytes;        // bytes of the data region in use
  uint64_t checksum;          // HeapChecksum over the data region
  uint64_t generation;
  char module_name[64];       // NUL-terminated
  char module_version[32];    // NUL-terminated
  uint32_t root_count;
  uint32_t reserved;
  HeapRoot roots[kMaxHeapRoots];
};
static_assert(sizeof(HeapHeader) <= kHeapHeaderBytes);
static_assert(std::is_trivially_copyable_v<HeapHeader>);
static_assert(std::is_standard_layout_v<HeapHeader>);

}  // namespace mp::shm
