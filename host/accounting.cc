#include "host/accounting.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

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

ProcessStats ReadProcessStats() {
  ProcessStats out;
  std::ifstream stat_file("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
  // Fields after the command (which may hold spaces), from field 3 (state) on: see proc(5).
  const size_t close = stat.rfind(')');
  if (close != std::string::npos) {
    std::vector<std::string> f = absl::StrSplit(stat.substr(close + 2), ' ', absl::SkipEmpty());
    auto field = [&f](size_t n) -> uint64_t {  // proc(5) numbering
      uint64_t v = 0;
      if (n >= 3 && n - 3 < f.size()) (void)absl::SimpleAtoi(f[n - 3], &v);
      return v;
    };
    const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
    out.cpu_seconds = static_cast<double>(field(14) + field(15)) / ticks;
    out.virtual_bytes = field(23);
    out.resident_bytes = field(24) * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    // starttime is in ticks since boot; the boot time is btime in /proc/stat.
    std::ifstream system_stat("/proc/stat");
    std::string line;
    while (std::getline(system_stat, line)) {
      uint64_t btime = 0;
      if (absl::StartsWith(line, "btime ") && absl::SimpleAtoi(line.substr(6), &btime)) {
        out.start_time_seconds = static_cast<double>(btime) + static_cast<double>(field(22)) / ticks;
        break;
      }
    }
  }
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (dirent* e = ::readdir(d)) out.open_fds += e->d_name[0] != '.' ? 1 : 0;
    ::closedir(d);
    if (out.open_fds > 0) --out.open_fds;  // the directory's own descriptor
  }
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0) out.max_fds = limit.rlim_cur;
  return out;
}

}  // namespace mp::host
