// Builds the dict heap (DictIndex, see dict_index.h) from the data file "words" and the
// option "synthetic_mb". Builder process only: it reads the data file mapping the builder
// was given and writes the unsealed heap; it opens nothing itself.
#pragma once

#include "mp/module.hpp"

namespace mp::dict {

// Reads option synthetic_mb (always, so the host never calls it unknown) and data file
// "words" (one word per line; a trailing '\r' is stripped; empty lines are skipped; bytes are
// kept as they are, UTF-8 included), adds the synthetic words, sorts byte-wise, deduplicates
// and writes the root "dict". Throws std::exception with a message naming the option, the
// data file or the heap size to change; the build then fails with that message.
void BuildIndex(HeapBuilder& heap);

}  // namespace mp::dict
