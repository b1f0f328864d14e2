// Spelling suggestions: the words within edit distance 2 of a query.
//
// Distance: optimal string alignment (Levenshtein plus the transposition of two adjacent
// bytes, each edit costing 1, no substring edited twice), byte-wise and case-sensitive: a
// 2-byte UTF-8 letter replaced by another counts 1 or 2 depending on how many bytes differ.
// So "wrod" -> "word" is 1 (plain Levenshtein would say 2).
//
// Algorithm: a depth-first walk of the trie that is implicit in the sorted word array (the
// words under a prefix are a contiguous range; the children of a node are found by galloping
// on the byte at that depth), carrying one edit-distance row per depth (Ukkonen band of width
// 2 * 2 + 1, values saturated at 3). A subtree is pruned as soon as its row minimum exceeds
// the pass's distance. The walk meets words in byte-wise order, so it needs no sort:
//   pass 1 collects every word at distance <= 1 (cheap: few nodes are within 1);
//   pass 2 runs only if that left room, and stops at the first `limit - found` words at
//   distance exactly 2 (on a dense list it ends after a few prefixes).
// At most 3 * limit candidates are kept.
//
// Cost: O(V * (5 + log R)) where V is the number of trie nodes within distance 2 of a prefix of
// the query (for natural-language lists a few thousand, independent of N; pass 2's early stop
// usually visits far fewer) and R the size of a node's range. No index beyond the sorted
// array. Memory: O(|query|^2 + limit) from malloc.
// TODO(perf): on a dense list (synthetic_mb = 1024: 113 M words) a long query with few words
// at distance 2 takes ~150 ms warm, nearly all in cache misses while galloping over the huge
// ranges of the top trie levels; a child table for the first levels would cut them.
// Any process that maps the heap may call it; it never writes the heap.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "dict_index.h"

namespace mp::dict {

inline constexpr int kMaxSuggestDistance = 2;
// Longer queries are refused by the route (the rows are |query|^2 bytes).
inline constexpr size_t kMaxSuggestQueryBytes = 256;

struct Suggestion {
  uint64_t word;  // index into the WordTable
  int distance;   // 0..kMaxSuggestDistance
};

// At most `limit` words within kMaxSuggestDistance of `query`, by distance, then byte-wise.
// Requires query.size() <= kMaxSuggestQueryBytes.
std::vector<Suggestion> Suggest(const WordTable& words, std::string_view query, size_t limit);

}  // namespace mp::dict
