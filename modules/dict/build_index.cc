#include "build_index.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "dict_index.h"
#include "synthetic_words.h"

namespace mp::dict {
namespace {

// The largest heap the host allows is 64 GiB (maxHeapMb); more synthetic text cannot fit.
constexpr uint64_t kMaxSyntheticMb = 65536;
// Bytes the segment manager needs besides the two vectors: their block headers, the named
// object index and DictIndex itself. Generous; only used for the up-front size check.
constexpr uint64_t kHeapSlackBytes = 64 << 10;

uint64_t ParseSyntheticMb(std::optional<std::string_view> option) {
  if (!option) return 0;
  uint64_t mb = 0;
  const char* first = option->data();
  const char* last = first + option->size();
  auto [end, ec] = std::from_chars(first, last, mb);
  if (option->empty() || ec != std::errc() || end != last || mb > kMaxSyntheticMb) {
    throw std::invalid_argument(
        "dict: option synthetic_mb must be a whole number of MiB from 0 to " +
        std::to_string(kMaxSyntheticMb) + ", got '" + std::string(*option) + "'");
  }
  return mb;
}

// The lines of `text`: trailing '\r' stripped, empty lines skipped; views into `text`.
std::vector<std::string_view> SplitLines(std::string_view text) {
  std::vector<std::string_view> lines;
  lines.reserve(static_cast<size_t>(std::count(text.begin(), text.end(), '\n')) + 1);
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

// Calls emit(word) for every word of the union of `real` and `synthetic` (both sorted and
// unique), in byte-wise order, each once.
template <typename Emit>
void MergeUnique(const std::vector<std::string_view>& real,
                 const std::vector<SyntheticCode>& synthetic, Emit&& emit) {
  size_t r = 0, s = 0;
  while (r < real.size() || s < synthetic.size()) {
    if (s == synthetic.size()) {
      emit(real[r++]);
      continue;
    }
    const SyntheticWord w = DecodeSynthetic(synthetic[s]);
    if (r == real.size() || w.view() < real[r]) {
      emit(w.view());
      ++s;
    } else if (real[r] < w.view()) {
      emit(real[r++]);
    } else {  // in both lists: once
      emit(real[r++]);
      ++s;
    }
  }
}

std::string Mib(uint64_t bytes) { return std::to_string((bytes + (1 << 20) - 1) >> 20) + " MiB"; }

}  // namespace

void BuildIndex(HeapBuilder& heap) {
  // Read the option first: the host refuses an option the build never asked for.
  const uint64_t synthetic_mb = ParseSyntheticMb(heap.Option("synthetic_mb"));
  const std::optional<std::string_view> file = heap.DataFile("words");
  if (!file) {
    throw std::runtime_error("dict: no data file 'words' configured; set dataFiles.words");
  }

  std::vector<std::string_view> real = SplitLines(*file);
  std::sort(real.begin(), real.end());
  real.erase(std::unique(real.begin(), real.end()), real.end());

  std::vector<SyntheticCode> synthetic;
  try {
    synthetic = GenerateSyntheticCodes(synthetic_mb << 20);
  } catch (const std::bad_alloc&) {
    throw std::runtime_error("dict: synthetic_mb=" + std::to_string(synthetic_mb) +
                             ": the builder has not enough memory for the sort buffer (about " +
                             Mib(synthetic_mb << 20) + ")");
  }

  // Count without merging: the union is both lists less the real words the generator also
  // produced (binary search of each real word that could be synthetic).
  uint64_t count = real.size() + synthetic.size(), bytes = 0;
  for (std::string_view w : real) {
    bytes += w.size();
    const std::optional<SyntheticCode> code = EncodeSynthetic(w);
    if (code && std::binary_search(synthetic.begin(), synthetic.end(), *code)) {
      --count;
      bytes -= w.size();
    }
  }
  for (SyntheticCode code : synthetic) bytes += static_cast<uint64_t>(SyntheticLength(code));
  if (count == 0) {
    throw std::runtime_error(
        "dict: data file 'words' has no words (and synthetic_mb is 0); nothing to serve");
  }

  const uint64_t need = bytes + (count + 1) * sizeof(uint64_t) + kHeapSlackBytes;
  const uint64_t free = heap.segment().get_free_memory();
  if (need > free) {
    throw std::runtime_error("dict: heap too small: " + std::to_string(count) + " words need " +
                             Mib(need) + " (text " + Mib(bytes) + " + offsets " +
                             Mib((count + 1) * sizeof(uint64_t)) + "), the heap has " + Mib(free) +
                             " free; raise maxHeapMb");
  }

  DictIndex* index = heap.Construct<DictIndex>(kRootName, heap.allocator());
  // Exact sizes: the heap has a fixed maximum, and growth by doubling would waste it. Filled
  // through raw pointers: push_back on offset-pointer vectors costs more than the copy.
  index->blob.reserve(bytes);
  index->blob.resize(bytes);
  index->offsets.reserve(count + 1);
  index->offsets.resize(count + 1);
  char* blob = index->blob.data();
  uint64_t* offsets = index->offsets.data();
  uint64_t at = 0, i = 0;
  MergeUnique(real, synthetic, [&](std::string_view w) {
    if (i == count || at + w.size() > bytes) throw std::logic_error("dict: word count mismatch");
    offsets[i++] = at;
    std::memcpy(blob + at, w.data(), w.size());
    at += w.size();
  });
  if (i != count || at != bytes) throw std::logic_error("dict: word count mismatch");
  offsets[count] = at;
}

}  // namespace mp::dict
