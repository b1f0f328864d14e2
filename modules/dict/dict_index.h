// The dict module's heap layout and its read-only view.
//
// Layout (root "dict", one DictIndex):
//   blob     every word once, in byte-wise sorted order, concatenated with no separator;
//   offsets  N + 1 byte offsets into blob: word i is blob[offsets[i], offsets[i + 1]).
// Both are Boost.Interprocess vectors (offset pointers), so the heap reads correctly at any
// base address. Offsets are 64-bit so that a synthetic heap may pass 4 GiB of text.
//
// Written once by Build in the builder process (build_index.cc); after sealing, every
// microprocess reads it through WordTable and nothing may write it.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "mp/module.hpp"

namespace mp::dict {

inline constexpr char kRootName[] = "dict";
// Bumped when DictIndex changes; a microprocess refuses a heap of another version.
inline constexpr uint32_t kLayoutVersion = 1;

// The heap root. Constructed only by BuildIndex (builder process); read-only afterwards.
struct DictIndex {
  explicit DictIndex(const HeapAllocator<char>& alloc) : blob(alloc), offsets(alloc) {}

  uint32_t layout_version = kLayoutVersion;
  HeapVector<char> blob;
  HeapVector<uint64_t> offsets;
};

// A read-only view of a DictIndex: the words as string_views, sorted byte-wise, unique and
// non-empty. Cheap to copy; valid as long as the heap is mapped. Any thread or process that
// maps the sealed heap may use it; it never writes.
class WordTable {
 public:
  // Validates the O(1) invariants (version, offsets[0] == 0, offsets[N] == blob size) and
  // returns the view, or nullopt for a heap this code did not build. Per-word order is not
  // re-checked on every call (O(N)); the heap is sealed and checksummed after BuildIndex
  // wrote it in order.
  static std::optional<WordTable> Open(const DictIndex& index) {
    if (index.layout_version != kLayoutVersion) return std::nullopt;
    const uint64_t n_offsets = index.offsets.size();
    if (n_offsets == 0) return std::nullopt;
    const uint64_t* offsets = index.offsets.data();
    const uint64_t bytes = index.blob.size();
    if (offsets[0] != 0 || offsets[n_offsets - 1] != bytes) return std::nullopt;
    return WordTable(index.blob.data(), offsets, n_offsets - 1, bytes);
  }

  uint64_t size() const { return count_; }
  uint64_t bytes() const { return bytes_; }

  // Word `i` (i < size()).
  std::string_view word(uint64_t i) const {
    return {blob_ + offsets_[i], static_cast<size_t>(offsets_[i + 1] - offsets_[i])};
  }
  uint64_t length(uint64_t i) const { return offsets_[i + 1] - offsets_[i]; }
  // Byte `pos` of word `i`; requires pos < length(i).
  unsigned char byte(uint64_t i, uint64_t pos) const {
    return static_cast<unsigned char>(blob_[offsets_[i] + pos]);
  }

  // The first index whose word is >= key (byte-wise), or size(). O(log N) comparisons.
  uint64_t LowerBound(std::string_view key) const {
    uint64_t lo = 0, hi = count_;
    while (lo < hi) {
      const uint64_t mid = lo + (hi - lo) / 2;
      if (word(mid) < key) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    return lo;
  }

  bool Contains(std::string_view key) const {
    const uint64_t i = LowerBound(key);
    return i < count_ && word(i) == key;
  }

 private:
  WordTable(const char* blob, const uint64_t* offsets, uint64_t count, uint64_t bytes)
      : blob_(blob), offsets_(offsets), count_(count), bytes_(bytes) {}

  const char* blob_;
  const uint64_t* offsets_;
  uint64_t count_;
  uint64_t bytes_;
};

}  // namespace mp::dict
