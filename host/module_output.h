// What module code writes to stderr, in microprocesses, builders and zygotes: data, never
// mistaken for the host's own log. Each process writes into a pipe of its own that the host
// reads on its loop; each line becomes one host event,
//   event=module_output module=dict stage=worker pid=4242 line="..."
// quoted by QuoteLogValue. Per process, at most `lines_per_second` lines and
// `bytes_per_second` bytes are logged; the rest is read, dropped and counted
// (mphost_module_output_dropped_*), with one `module_output_dropped` event per process and
// second at most. Lines longer than `max_line_bytes` are cut there.
#pragma once

#include <kj/async-unix.h>
#include <kj/timer.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "shm/unique_fd.h"

namespace mp::host {

struct ModuleOutputLimits {
  uint32_t lines_per_second = 100;
  uint32_t bytes_per_second = 64 << 10;
  uint32_t max_line_bytes = 4 << 10;
};

// Not thread-safe; the supervisor's loop thread only.
class ModuleOutput final : private kj::TaskSet::ErrorHandler {
 public:
  ModuleOutput(kj::UnixEventPort& events, kj::Timer& timer, ModuleOutputLimits limits = {});
  ~ModuleOutput();

  struct Pipe {
    UniqueFd write_end;  // for the process's fd 2; close the host's copy once it is handed over
    uint64_t id;         // for SetPid
  };
  // A pipe for one process of `module` (`stage`: "worker", "builder", "zygote"). The host reads
  // it until every copy of the write end is closed.
  absl::StatusOr<Pipe> Open(absl::string_view module, absl::string_view stage);
  // Labels the stream's lines with the process's pid (once the host knows it).
  void SetPid(uint64_t id, int64_t pid);

  struct Counters {
    uint64_t lines = 0;          // logged
    uint64_t dropped_lines = 0;  // over the rate limits
    uint64_t dropped_bytes = 0;
  };
  Counters ForModule(absl::string_view module) const;

 private:
  struct Stream;
  kj::Promise<void> Read(Stream& s);
  void Consume(Stream& s, const char* data, size_t n);
  void Emit(Stream& s, absl::string_view line, bool cut);
  void ReportDrops(Stream& s);
  void Finish(uint64_t id);
  void taskFailed(kj::Exception&& e) override;

  kj::UnixEventPort& events_;
  kj::Timer& timer_;
  ModuleOutputLimits limits_;
  uint64_t next_id_ = 1;
  std::map<uint64_t, std::unique_ptr<Stream>> streams_;
  std::map<std::string, Counters, std::less<>> counters_;
  kj::TaskSet tasks_;
};

}  // namespace mp::host
