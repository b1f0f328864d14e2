#include "shm/sys.h"

#include <string.h>

#include "absl/strings/str_cat.h"

namespace mp {

std::string ErrnoName(int err) {
  const char* name = strerrorname_np(err);
  return name != nullptr ? std::string(name) : absl::StrCat("errno ", err);
}

absl::Status ErrnoStatus(absl::string_view what, int err) {
  return absl::Status(absl::ErrnoToStatusCode(err),
                      absl::StrCat(what, ": ", strerrordesc_np(err) ? strerrordesc_np(err) : "?",
                                   " (", ErrnoName(err), ")"));
}

}  // namespace mp
