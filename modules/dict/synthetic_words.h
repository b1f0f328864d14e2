// Deterministic synthetic words, so the dict heap can be scaled far past the real word list
// (option synthetic_mb). The generator is part of the module's contract: README.md specifies
// it so that another implementation (e.g. Python) produces the identical list.
//
// Generator (all arithmetic modulo 2^64):
//   splitmix64, state = 0x6d70686f7374 ("mphost"); next():
//     state += 0x9e3779b97f4a7c15; z = state;
//     z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
//     z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
//     return z ^ (z >> 31);
//   while total < synthetic_mb * 2^20:
//     length = 4 + next() % 9                       (4..12)
//     word   = length letters, each 'a' + next() % 26, first letter drawn first
//     total += length
// Duplicates are generated; the module sorts and deduplicates them together with the real
// words. synthetic_mb = 0 generates nothing.
//
// Builder process only. Not thread-safe (plain values, no sharing).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace mp::dict {

inline constexpr uint64_t kSyntheticSeed = 0x6d70686f7374ull;
inline constexpr int kSyntheticMinLength = 4;
inline constexpr int kSyntheticMaxLength = 12;

// The splitmix64 generator above.
class SplitMix64 {
 public:
  static constexpr uint64_t kGamma = 0x9e3779b97f4a7c15ull;
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    state_ += kGamma;
    uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Advances as if Next() had been called `n` times (the state only ever adds kGamma).
  void Skip(uint64_t n) { state_ += n * kGamma; }

 private:
  uint64_t state_;
};

// A synthetic word packed into 60 bits: letter k (0-based, k < 12) is stored as 1..26 in bits
// [55 - 5k, 60 - 5k), unused positions are 0. Unsigned order of codes is byte-wise order of
// the words (a proper prefix has 0 where the longer word has a letter), so sorting and
// deduplicating codes sorts and deduplicates the words, at 8 bytes per word.
using SyntheticCode = uint64_t;

// A decoded code: the letters in a small buffer.
struct SyntheticWord {
  char letters[kSyntheticMaxLength];
  int length;
  std::string_view view() const { return {letters, static_cast<size_t>(length)}; }
};

SyntheticWord DecodeSynthetic(SyntheticCode code);
// The number of letters of `code` (0 for code 0).
int SyntheticLength(SyntheticCode code);
// The code of `word` if the generator could emit it (4..12 letters, all 'a'..'z').
std::optional<SyntheticCode> EncodeSynthetic(std::string_view word);

// The codes of every word the generator emits for `target_bytes`, sorted and deduplicated.
// Runs the generator twice (counting the words per 3-letter prefix, then placing each in the
// region of its first letter), then per region scatters the words into their 3-letter buckets
// in a scratch buffer and radix-sorts each bucket: O(W) for W words generated (about
// target_bytes / 8), with memory access that stays within a few MiB at a time. Needs 8 bytes
// of builder memory per generated word; throws std::bad_alloc when that is not available.
std::vector<SyntheticCode> GenerateSyntheticCodes(uint64_t target_bytes);

}  // namespace mp::dict
