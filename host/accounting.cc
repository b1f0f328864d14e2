#include "host/accounting.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace mp::host {

std::string HeapMarker(absl::string_view module, uint64_t generation) {
  return absl::StrCat("/memfd:mp-heap.", module, ".gen", generation, " ");
}
namespace {

// "Pss:                 123 kB" → bytes, if `line` starts with `key`.
bool Field(const std::string& line, const char* key, uint64_t* bytes) {
  const size_t n = std::strlen(key);
  if (line.compare(0, n, key) != 0) return false;
  unsigned long long kb = 0;
  if (std::sscanf(line.c_str() + n, " %llu kB", &kb) != 1) return false;
  *bytes += kb * 1024;
  return true;
}

// A mapping header line starts with "start-end perms ..."; field lines start with "Name:".
bool IsMappingHeader(const std::string& line) {
  const auto dash = line.find('-');
  const auto space = line.find(' ');
  return dash != std::string::npos && space != std::string::npos && dash < space &&
         line.find(':') > space;
}

}  // namespace

std::optional<MemoryUsage> ReadMemoryUsage(pid_t pid, absl::string_view heap_marker) {
  MemoryUsage u;
  {
    std::ifstream rollup(absl::StrCat("/proc/", pid, "/smaps_rollup"));
    if (!rollup) return std::nullopt;
    std::string line;
    bool any = false;
    while (std::getline(rollup, line)) {
      any |= Field(line, "Rss:", &u.rss_bytes);
      Field(line, "Pss:", &u.pss_bytes);
      Field(line, "Private_Clean:", &u.uss_bytes);
      Field(line, "Private_Dirty:", &u.uss_bytes);
    }
    if (!any) return std::nullopt;
  }
  std::ifstream smaps(absl::StrCat("/proc/", pid, "/smaps"));
  std::string line;
  bool in_heap = false;
  while (std::getline(smaps, line)) {
    if (IsMappingHeader(line)) {
      in_heap = absl::StrContains(line, heap_marker);
      if (in_heap) ++u.heap_mappings;
      continue;
    }
    if (!in_heap) continue;
    Field(line, "Rss:", &u.heap_resident_bytes) || Field(line, "Pss:", &u.heap_pss_bytes) ||
        Field(line, "Anonymous:", &u.heap_privatized_bytes);
  }
  return u;
}

}  // namespace mp::host
