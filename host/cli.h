// The command lines of mphost and mpctl: flags are parsed by kj::MainBuilder (so `--flag value`,
// `--flag=value`, `--help` and `--version` all work), and this context gives them the exit codes
// both programs document: 0 for help and version, 2 for a usage error. Numbers are parsed
// strictly ("2x" is refused), and an unknown word gets a "did you mean".
#pragma once

#include <kj/main.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mp::host {

inline constexpr int kExitUsage = 2;

// Thrown by CliContext instead of exiting, so that the stack unwinds; RunCli catches it.
struct CliExit {
  int code;
};

class CliContext final : public kj::ProcessContext {
 public:
  explicit CliContext(const char* program) : program_(program) {}
  kj::StringPtr getProgramName() override { return program_; }
  [[noreturn]] void exit() override;
  void warning(kj::StringPtr message) override;
  void error(kj::StringPtr message) override;
  [[noreturn]] void exitError(kj::StringPtr message) override;
  [[noreturn]] void exitInfo(kj::StringPtr message) override;
  void increaseLoggingVerbosity() override {}

 private:
  kj::StringPtr program_;
  bool failed_ = false;
};

// Parses `argv` with `main`. Returns nullopt when the program should go on (its callbacks have
// recorded what to do), or the exit code: 0 after --help or --version, 2 after a usage error
// (printed with a pointer to --help).
std::optional<int> ParseCommandLine(kj::MainFunc main, CliContext& context, int argc, char** argv);

// `text` as an integer in [min, max], or an error naming `what` ("--min '2x' is not a whole
// number").
absl::StatusOr<uint64_t> ParseNumber(absl::string_view text, absl::string_view what, uint64_t min,
                                     uint64_t max);

// The word of `known` nearest to `word` (at most two edits away), or "" if none is.
std::string Nearest(absl::string_view word, const std::vector<std::string>& known);

}  // namespace mp::host
