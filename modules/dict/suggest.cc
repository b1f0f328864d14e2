#include "suggest.h"

#include <algorithm>
#include <array>
#include <cstdlib>

namespace mp::dict {
namespace {

constexpr int kK = kMaxSuggestDistance;
constexpr uint8_t kInf = kK + 1;  // "more than kK": every value is saturated here

class TrieWalk {
 public:
  TrieWalk(const WordTable& words, std::string_view query, size_t limit)
      : words_(words),
        query_(query),
        n_(static_cast<int>(query.size())),
        width_(n_ + 1),
        rows_(static_cast<size_t>(n_ + kK + 1) * static_cast<size_t>(n_ + 1), kInf),
        path_(static_cast<size_t>(n_ + kK + 1), 0),
        limit_(limit) {}

  std::vector<Suggestion> Run() {
    std::vector<Suggestion> out;
    if (limit_ == 0 || words_.size() == 0) return out;
    uint8_t* row0 = Row(0);
    for (int j = 0; j <= std::min(n_, kK); ++j) row0[j] = static_cast<uint8_t>(j);
    if (kK + 1 <= n_) row0[kK + 1] = kInf;

    // Pass 1: every word at distance 0 or 1 (a small part of the trie).
    max_distance_ = kK - 1;
    Visit(0, 0, words_.size());
    const size_t near = std::min(limit_, found_[0].size() + found_[1].size());
    // Pass 2, only if pass 1 did not fill the answer: the first words at distance exactly 2,
    // in byte-wise order, so the walk stops as soon as it has enough.
    if (near < limit_) {
      max_distance_ = kK;
      wanted_far_ = limit_ - near;
      Visit(0, 0, words_.size());
    }
    for (int d = 0; d <= kK; ++d) {
      for (uint64_t w : found_[d]) {
        if (out.size() == limit_) return out;
        out.push_back({w, d});
      }
    }
    return out;
  }

 private:
  uint8_t* Row(int i) { return &rows_[static_cast<size_t>(i) * static_cast<size_t>(width_)]; }

  // Records word `w` at distance `d`. Pass 1 keeps the first `limit` of each distance; pass 2
  // keeps only distance 2 (pass 1 found the rest) and ends the walk once it has enough.
  void Record(uint64_t w, int d) {
    if (max_distance_ < kK) {
      if (found_[d].size() < limit_) found_[d].push_back(w);
    } else if (d == kK) {
      found_[d].push_back(w);
      if (found_[d].size() >= wanted_far_) done_ = true;
    }
  }

  // Computes row i (prefix length i, last byte c = path_[i - 1]) in the band
  // [i - kK, i + kK] from rows i - 1 and i - 2; returns its minimum (kInf if the band is empty).
  uint8_t ComputeRow(int i) {
    const int lo = std::max(0, i - kK);
    const int hi = std::min(n_, i + kK);
    if (lo > hi) return kInf;
    uint8_t* cur = Row(i);
    const uint8_t* prev = Row(i - 1);
    const uint8_t* prev2 = i >= 2 ? Row(i - 2) : nullptr;
    const auto c = static_cast<unsigned char>(path_[static_cast<size_t>(i - 1)]);
    const auto c_before =
        i >= 2 ? static_cast<unsigned char>(path_[static_cast<size_t>(i - 2)]) : 0;
    if (lo > 0) cur[lo - 1] = kInf;  // read as the left neighbour of cur[lo]
    uint8_t row_min = kInf;
    for (int j = lo; j <= hi; ++j) {
      int v;
      if (j == 0) {
        v = i;
      } else {
        const auto q = static_cast<unsigned char>(query_[static_cast<size_t>(j - 1)]);
        v = prev[j - 1] + (q != c ? 1 : 0);
        v = std::min(v, prev[j] + 1);
        v = std::min(v, cur[j - 1] + 1);
        if (prev2 != nullptr && j >= 2 && c == static_cast<unsigned char>(query_[j - 2]) &&
            c_before == q) {
          v = std::min(v, prev2[j - 2] + 1);
        }
      }
      cur[j] = static_cast<uint8_t>(std::min<int>(v, kInf));
      row_min = std::min(row_min, cur[j]);
    }
    if (hi + 1 <= n_) cur[hi + 1] = kInf;  // read as prev[j] by row i + 1
    return row_min;
  }

  // The end of the run of words in [first, hi) whose byte at `depth` equals that of `first`
  // (the bytes at `depth` are non-decreasing over a node's range). Galloping: O(log run).
  uint64_t RunEnd(uint64_t first, uint64_t hi, uint64_t depth) const {
    const unsigned char c = words_.byte(first, depth);
    uint64_t in = first, out = hi, step = 1;
    while (true) {
      const uint64_t probe = first + step;
      if (probe >= hi) break;
      if (words_.byte(probe, depth) != c) {
        out = probe;
        break;
      }
      in = probe;
      step *= 2;
    }
    while (out - in > 1) {
      const uint64_t mid = in + (out - in) / 2;
      if (words_.byte(mid, depth) == c) {
        in = mid;
      } else {
        out = mid;
      }
    }
    return out;
  }

  // Visits the node of prefix length `depth` whose words are [lo, hi); row `depth` is computed
  // and its minimum is within max_distance_.
  void Visit(int depth, uint64_t lo, uint64_t hi) {
    const auto udepth = static_cast<uint64_t>(depth);
    if (words_.length(lo) == udepth) {  // the prefix itself is a word (at most one: unique)
      if (std::abs(depth - n_) <= kK) {
        const int d = Row(depth)[n_];
        if (d <= max_distance_) Record(lo, d);
        if (done_) return;
      }
      ++lo;
    }
    if (depth + 1 > n_ + kK) return;  // every longer word is more than kK away
    while (lo < hi && !done_) {
      const uint64_t end = RunEnd(lo, hi, udepth);
      path_[static_cast<size_t>(depth)] = static_cast<char>(words_.byte(lo, udepth));
      if (ComputeRow(depth + 1) <= max_distance_) Visit(depth + 1, lo, end);
      lo = end;
    }
  }

  const WordTable& words_;
  const std::string_view query_;
  const int n_;
  const int width_;
  std::vector<uint8_t> rows_;  // row i at [i * width_, (i + 1) * width_)
  std::vector<char> path_;     // the bytes of the current prefix
  const size_t limit_;
  std::array<std::vector<uint64_t>, kK + 1> found_;  // by distance, in byte-wise order
  int max_distance_ = kK;                            // the pass: words farther away are pruned
  size_t wanted_far_ = 0;  // pass 2: how many words at distance kK complete the answer
  bool done_ = false;      // pass 2 has them: unwind
};

}  // namespace

std::vector<Suggestion> Suggest(const WordTable& words, std::string_view query, size_t limit) {
  return TrieWalk(words, query, limit).Run();
}

}  // namespace mp::dict
