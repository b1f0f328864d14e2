#include "host/cli.h"

#include <cstdio>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace mp::host {

void CliContext::exit() { throw CliExit{failed_ ? 1 : 0}; }

void CliContext::warning(kj::StringPtr message) {
  std::fprintf(stderr, "%s%s", message.cStr(), message.endsWith("\n") ? "" : "\n");
}

void CliContext::error(kj::StringPtr message) {
  failed_ = true;
  warning(message);
}

void CliContext::exitError(kj::StringPtr message) {
  warning(message);
  throw CliExit{kExitUsage};
}

void CliContext::exitInfo(kj::StringPtr message) {
  std::fprintf(stdout, "%s%s", message.cStr(), message.endsWith("\n") ? "" : "\n");
  std::fflush(stdout);
  throw CliExit{0};
}

std::optional<int> ParseCommandLine(kj::MainFunc main, CliContext& context, int argc,
                                    char** argv) {
  std::vector<kj::StringPtr> params;
  for (int i = 1; i < argc; ++i) params.emplace_back(argv[i]);
  try {
    main(context.getProgramName(), kj::arrayPtr(params.data(), params.size()));
  } catch (const CliExit& e) {
    return e.code;
  }
  return std::nullopt;
}

absl::StatusOr<uint64_t> ParseNumber(absl::string_view text, absl::string_view what, uint64_t min,
                                     uint64_t max) {
  uint64_t value = 0;
  if (text.empty() || text[0] == '+' || text[0] == '-' || !absl::SimpleAtoi(text, &value)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, what.empty() ? "'" : " '", text, "' is not a whole number"));
  }
  if (value < min || value > max) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, what.empty() ? "" : " ", value, " is out of range (", min, " to ", max, ")"));
  }
  return value;
}

namespace {
size_t EditDistance(absl::string_view a, absl::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}
}  // namespace

std::string Nearest(absl::string_view word, const std::vector<std::string>& known) {
  std::string best;
  size_t best_distance = 3;
  for (const std::string& k : known) {
    const size_t d = EditDistance(word, k);
    if (d < best_distance) {
      best_distance = d;
      best = k;
    }
  }
  return best;
}

}  // namespace mp::host
