#include "synthetic_words.h"

#include <algorithm>
#include <array>
#include <bit>

namespace mp::dict {
namespace {

constexpr int kBitsPerLetter = 5;
constexpr uint64_t kLengths = kSyntheticMaxLength - kSyntheticMinLength + 1;
// Buckets by the first three letters: the top 15 bits of a code (every word has >= 4 letters).
constexpr int kBucketShift = kBitsPerLetter * (kSyntheticMaxLength - 3);
constexpr size_t kBuckets = size_t{1} << (3 * kBitsPerLetter);
// Regions by the first letter: the top 5 bits.
constexpr int kRegionShift = kBitsPerLetter * (kSyntheticMaxLength - 1);
constexpr size_t kRegions = size_t{1} << kBitsPerLetter;
constexpr size_t kBucketsPerRegion = kBuckets / kRegions;

constexpr int Shift(int k) { return kBitsPerLetter * (kSyntheticMaxLength - 1 - k); }

// Runs the generator of synthetic_words.h, calling emit(code) for each word in order.
template <typename Emit>
void ForEachGenerated(uint64_t target_bytes, Emit&& emit) {
  SplitMix64 rng(kSyntheticSeed);
  for (uint64_t total = 0; total < target_bytes;) {
    const int length = static_cast<int>(kSyntheticMinLength + rng.Next() % kLengths);
    SyntheticCode code = 0;
    for (int k = 0; k < length; ++k) {
      const uint64_t letter = 1 + rng.Next() % 26;  // 'a' + (next() % 26), stored as 1..26
      code |= letter << Shift(k);
    }
    emit(code);
    total += static_cast<uint64_t>(length);
  }
}

// Sorts [first, first + n) of codes that share their top 15 bits: LSD radix sort on the low 45
// bits, 5 passes of 9 bits, through `tmp` (>= n elements): linear, no branch to mispredict.
// Small buckets use std::sort.
void SortBucket(SyntheticCode* first, size_t n, SyntheticCode* tmp) {
  constexpr int kDigitBits = 9;
  constexpr int kPasses = kBucketShift / kDigitBits;
  static_assert(kPasses * kDigitBits == kBucketShift);
  if (n < 256) {
    std::sort(first, first + n);
    return;
  }
  SyntheticCode* from = first;
  SyntheticCode* to = tmp;
  for (int pass = 0; pass < kPasses; ++pass) {
    const int shift = pass * kDigitBits;
    std::array<size_t, (size_t{1} << kDigitBits) + 1> pos{};
    for (size_t i = 0; i < n; ++i) ++pos[((from[i] >> shift) & ((1u << kDigitBits) - 1)) + 1];
    for (size_t d = 1; d < pos.size(); ++d) pos[d] += pos[d - 1];
    for (size_t i = 0; i < n; ++i)
      to[pos[(from[i] >> shift) & ((1u << kDigitBits) - 1)]++] = from[i];
    std::swap(from, to);
  }
  if (from != first) std::copy(from, from + n, first);  // an odd number of passes ends in tmp
}

}  // namespace

SyntheticWord DecodeSynthetic(SyntheticCode code) {
  SyntheticWord w{};
  w.length = 0;
  for (int k = 0; k < kSyntheticMaxLength; ++k) {
    const auto v = static_cast<unsigned>((code >> Shift(k)) & 31u);
    if (v == 0) break;
    w.letters[w.length++] = static_cast<char>('a' + v - 1);
  }
  return w;
}

int SyntheticLength(SyntheticCode code) {
  if (code == 0) return 0;
  return kSyntheticMaxLength - std::countr_zero(code) / kBitsPerLetter;
}

std::optional<SyntheticCode> EncodeSynthetic(std::string_view word) {
  if (word.size() < kSyntheticMinLength || word.size() > kSyntheticMaxLength) return std::nullopt;
  SyntheticCode code = 0;
  for (size_t k = 0; k < word.size(); ++k) {
    const char c = word[k];
    if (c < 'a' || c > 'z') return std::nullopt;
    code |= static_cast<uint64_t>(c - 'a' + 1) << Shift(static_cast<int>(k));
  }
  return code;
}

std::vector<SyntheticCode> GenerateSyntheticCodes(uint64_t target_bytes) {
  std::vector<SyntheticCode> codes;
  if (target_bytes == 0) return codes;

  // Pass 1: the size of every 3-letter bucket; the first letter's region is the union of its
  // 1024 buckets (the letters are 1..26 in 5 bits, so some buckets stay empty).
  std::vector<uint64_t> start(kBuckets + 1, 0);
  ForEachGenerated(target_bytes, [&](SyntheticCode code) { ++start[(code >> kBucketShift) + 1]; });
  for (size_t b = 1; b <= kBuckets; ++b) start[b] += start[b - 1];

  // Pass 2: each code into the region of its first letter (32 write streams). Scattering
  // straight into 17576 buckets spread over ~1 GiB costs a TLB miss per word (measured 3x
  // slower). The buffer is sized exactly: growing ~1 GiB by doubling would need 3 GiB.
  codes.resize(start[kBuckets]);
  std::array<uint64_t, kRegions> cursor;
  for (size_t r = 0; r < kRegions; ++r) cursor[r] = start[r * kBucketsPerRegion];
  ForEachGenerated(target_bytes,
                   [&](SyntheticCode code) { codes[cursor[code >> kRegionShift]++] = code; });

  // Per region: scatter into its buckets in a scratch buffer (<= 1024 streams over a few MiB),
  // sort and deduplicate each bucket, and copy the result back, compacted to the front.
  uint64_t largest = 0;
  for (size_t r = 0; r < kRegions; ++r) {
    largest = std::max(largest, start[(r + 1) * kBucketsPerRegion] - start[r * kBucketsPerRegion]);
  }
  std::vector<SyntheticCode> scratch(largest);
  std::vector<uint64_t> fill(kBucketsPerRegion);
  uint64_t largest_bucket = 0;
  for (size_t b = 0; b < kBuckets; ++b)
    largest_bucket = std::max(largest_bucket, start[b + 1] - start[b]);
  std::vector<SyntheticCode> radix_tmp(largest_bucket);
  uint64_t out = 0;
  for (size_t r = 0; r < kRegions; ++r) {
    const uint64_t base = start[r * kBucketsPerRegion];
    const uint64_t end = start[(r + 1) * kBucketsPerRegion];
    for (size_t b = 0; b < kBucketsPerRegion; ++b)
      fill[b] = start[r * kBucketsPerRegion + b] - base;
    for (uint64_t i = base; i < end; ++i) {
      const SyntheticCode code = codes[i];
      scratch[fill[(code >> kBucketShift) & (kBucketsPerRegion - 1)]++] = code;
    }
    for (size_t b = 0; b < kBucketsPerRegion; ++b) {
      SyntheticCode* first = scratch.data() + (start[r * kBucketsPerRegion + b] - base);
      SyntheticCode* last = scratch.data() + (start[r * kBucketsPerRegion + b + 1] - base);
      SortBucket(first, static_cast<size_t>(last - first), radix_tmp.data());
      SyntheticCode* kept = std::unique(first, last);
      std::copy(first, kept, codes.data() + out);
      out += static_cast<uint64_t>(kept - first);
    }
  }
  codes.resize(out);
  return codes;
}

}  // namespace mp::dict
