#include "host/module_output.h"

#include <fcntl.h>
#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "host/log.h"
#include "shm/sys.h"

namespace mp::host {

struct ModuleOutput::Stream {
  uint64_t id;
  std::string module;
  std::string stage;
  std::string pid = "?";
  UniqueFd read_end;
  kj::Own<kj::UnixEventPort::FdObserver> observer;
  std::string partial;      // a line not yet ended
  bool cutting = false;     // dropping the rest of a line past max_line_bytes
  kj::TimePoint window = kj::origin<kj::TimePoint>();  // start of the current second
  uint32_t window_lines = 0;
  uint64_t window_bytes = 0;
  uint64_t dropped_lines = 0;  // in the current window, for the drop notice
  uint64_t dropped_bytes = 0;
  kj::Promise<void> reading = nullptr;
};

ModuleOutput::ModuleOutput(kj::UnixEventPort& events, kj::Timer& timer, ModuleOutputLimits limits)
    : events_(events), timer_(timer), limits_(limits), tasks_(*this) {}

ModuleOutput::~ModuleOutput() = default;

absl::StatusOr<ModuleOutput::Pipe> ModuleOutput::Open(absl::string_view module,
                                                      absl::string_view stage) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return ErrnoStatus("pipe2 (module output)", errno);
  UniqueFd read_end(fds[0]), write_end(fds[1]);
  if (::fcntl(read_end.get(), F_SETFL, O_NONBLOCK) != 0) return ErrnoStatus("fcntl", errno);
  auto s = std::make_unique<Stream>();
  s->id = next_id_++;
  s->module = std::string(module);
  s->stage = std::string(stage);
  s->read_end = std::move(read_end);
  s->observer = kj::heap<kj::UnixEventPort::FdObserver>(
      events_, s->read_end.get(), kj::UnixEventPort::FdObserver::OBSERVE_READ);
  s->window = timer_.now();
  Stream& ref = *s;
  const uint64_t id = s->id;
  streams_.emplace(id, std::move(s));
  counters_[ref.module];  // every module's series exists from its first process on
  ref.reading = Read(ref).eagerlyEvaluate(nullptr);
  return Pipe{std::move(write_end), id};
}

void ModuleOutput::SetPid(uint64_t id, int64_t pid) {
  if (auto it = streams_.find(id); it != streams_.end()) it->second->pid = absl::StrCat(pid);
}

ModuleOutput::Counters ModuleOutput::ForModule(absl::string_view module) const {
  auto it = counters_.find(module);
  return it == counters_.end() ? Counters{} : it->second;
}

kj::Promise<void> ModuleOutput::Read(Stream& s) {
  // At most 16 reads per turn: a flooding process cannot hold the loop.
  char buf[16 << 10];
  for (int i = 0; i < 16; ++i) {
    const ssize_t n = RetryEintr([&] { return ::read(s.read_end.get(), buf, sizeof buf); });
    if (n > 0) {
      Consume(s, buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return s.observer->whenBecomesReadable().then([this, &s]() { return Read(s); });
    }
    // End of stream (every writer is gone) or an error: flush what is left and stop.
    if (!s.partial.empty() && !s.cutting) Emit(s, s.partial, false);
    ReportDrops(s);
    const uint64_t id = s.id;
    tasks_.add(kj::evalLater([this, id]() { Finish(id); }));
    return kj::READY_NOW;
  }
  return kj::evalLater([this, &s]() { return Read(s); });
}

void ModuleOutput::Consume(Stream& s, const char* data, size_t n) {
  size_t start = 0;
  for (size_t i = 0; i < n; ++i) {
    if (data[i] != '\n') continue;
    if (s.cutting) {
      s.cutting = false;
    } else {
      s.partial.append(data + start, i - start);
      Emit(s, s.partial, false);
    }
    s.partial.clear();
    start = i + 1;
  }
  if (start < n && !s.cutting) {
    s.partial.append(data + start, n - start);
    if (s.partial.size() >= limits_.max_line_bytes) {
      s.partial.resize(limits_.max_line_bytes);
      Emit(s, s.partial, true);
      s.partial.clear();
      s.cutting = true;  // the rest of this line is dropped
    }
  }
}

void ModuleOutput::Emit(Stream& s, absl::string_view line, bool cut) {
  const kj::TimePoint now = timer_.now();
  if (now - s.window >= 1 * kj::SECONDS) {
    ReportDrops(s);
    s.window = now;
    s.window_lines = 0;
    s.window_bytes = 0;
  }
  Counters& c = counters_[s.module];
  if (s.window_lines >= limits_.lines_per_second ||
      s.window_bytes + line.size() > limits_.bytes_per_second) {
    if (s.dropped_lines == 0) {
      // The first drop of this second: say so when the second ends, even if nothing follows.
      tasks_.add(timer_.atTime(s.window + 1 * kj::SECONDS).then([this, id = s.id]() {
        if (auto it = streams_.find(id); it != streams_.end()) ReportDrops(*it->second);
      }));
    }
    ++s.dropped_lines;
    s.dropped_bytes += line.size() + 1;
    ++c.dropped_lines;
    c.dropped_bytes += line.size() + 1;
    return;
  }
  ++s.window_lines;
  s.window_bytes += line.size() + 1;
  ++c.lines;
  if (cut) {
    LogEvent("module_output", {{"module", s.module},
                               {"stage", s.stage},
                               {"pid", s.pid},
                               {"stream", "stderr"},
                               {"cut_at_bytes", absl::StrCat(limits_.max_line_bytes)},
                               {"line", line}});
  } else {
    LogEvent("module_output",
             {{"module", s.module}, {"stage", s.stage}, {"pid", s.pid}, {"stream", "stderr"}, {"line", line}});
  }
}

void ModuleOutput::ReportDrops(Stream& s) {
  if (s.dropped_lines == 0) return;
  LogEvent(LogLevel::kWarn, "module_output_dropped",
           {{"module", s.module},
            {"stage", s.stage},
            {"pid", s.pid},
            {"lines", absl::StrCat(s.dropped_lines)},
            {"bytes", absl::StrCat(s.dropped_bytes)},
            {"limit", absl::StrCat(limits_.lines_per_second, " lines, ", limits_.bytes_per_second,
                                   " bytes per second")}});
  s.dropped_lines = 0;
  s.dropped_bytes = 0;
}

void ModuleOutput::Finish(uint64_t id) { streams_.erase(id); }

void ModuleOutput::taskFailed(kj::Exception&& e) {
  LogEvent(LogLevel::kError, "internal_error", {{"what", e.getDescription().cStr()}});
}

}  // namespace mp::host
