// Memory accounting that understands sharing, read from /proc: RSS, PSS and USS of a process
// (smaps_rollup) and, for its heap mapping, the resident bytes and the privatized bytes (pages a
// private write copied: the mapping's `Anonymous` field in smaps; memfd pages are always
// "dirty", so Private_Dirty is not that figure).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace mp::host {

struct MemoryUsage {
  uint64_t rss_bytes = 0;
  uint64_t pss_bytes = 0;
  uint64_t uss_bytes = 0;              // Private_Clean + Private_Dirty
  uint64_t heap_resident_bytes = 0;    // Rss of the heap mapping(s)
  uint64_t heap_pss_bytes = 0;         // Pss of the heap mapping(s)
  uint64_t heap_privatized_bytes = 0;  // Anonymous of the heap mapping(s)
  uint32_t heap_mappings = 0;
};

// What marks generation `generation` of `module`'s heap mapping in /proc/PID/smaps.
std::string HeapMarker(absl::string_view module, uint64_t generation);

// Reads /proc/PID/smaps_rollup and /proc/PID/smaps. Mappings whose path contains
// `heap_marker` (e.g. "/memfd:mp-heap.echo.gen1 ") count as the heap. nullopt if the process
// is gone or /proc is unreadable.
std::optional<MemoryUsage> ReadMemoryUsage(pid_t pid, absl::string_view heap_marker);

// This process as Prometheus' process_* metrics describe it.
struct ProcessStats {
  double cpu_seconds = 0;  // user + system
  uint64_t resident_bytes = 0;
  uint64_t virtual_bytes = 0;
  uint64_t open_fds = 0;
  uint64_t max_fds = 0;  // the soft RLIMIT_NOFILE
  double start_time_seconds = 0;  // since the epoch
};
// From /proc/self/stat, /proc/self/fd and getrlimit; zeros where unreadable.
ProcessStats ReadProcessStats();

}  // namespace mp::host
