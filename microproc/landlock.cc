#include "microproc/landlock.h"

#include <fcntl.h>
#include <linux/landlock.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "shm/sys.h"
#include "shm/unique_fd.h"

namespace mp::microproc {
namespace {

// The ruleset attribute as of Landlock ABI 6; older kernels are given its prefix (the size
// argument tells them which fields there are). Debian 12's headers know only ABI 1-2.
struct RulesetAttr {
  uint64_t handled_access_fs;
  uint64_t handled_access_net;  // ABI 4
  uint64_t scoped;              // ABI 6
};

constexpr uint64_t kAccessFsRefer = 1ull << 13;      // ABI 2
constexpr uint64_t kAccessFsTruncate = 1ull << 14;   // ABI 3
constexpr uint64_t kAccessFsIoctlDev = 1ull << 15;   // ABI 5
constexpr uint64_t kAccessNetBindTcp = 1ull << 0;    // ABI 4
constexpr uint64_t kAccessNetConnectTcp = 1ull << 1;
constexpr uint64_t kScopeAbstractUnixSocket = 1ull << 0;  // ABI 6
constexpr uint64_t kScopeSignal = 1ull << 1;

constexpr uint64_t kAccessFsAbi1 =
    LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_READ_FILE |
    LANDLOCK_ACCESS_FS_READ_DIR | LANDLOCK_ACCESS_FS_REMOVE_DIR | LANDLOCK_ACCESS_FS_REMOVE_FILE |
    LANDLOCK_ACCESS_FS_MAKE_CHAR | LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_MAKE_REG |
    LANDLOCK_ACCESS_FS_MAKE_SOCK | LANDLOCK_ACCESS_FS_MAKE_FIFO | LANDLOCK_ACCESS_FS_MAKE_BLOCK |
    LANDLOCK_ACCESS_FS_MAKE_SYM;

}  // namespace

absl::StatusOr<int> RestrictWithLandlock(const std::vector<std::string>& read_only) {
  const long abi = ::syscall(SYS_landlock_create_ruleset, nullptr, 0,
                             LANDLOCK_CREATE_RULESET_VERSION);
  if (abi < 1) return absl::UnimplementedError("landlock: not supported by this kernel");
  RulesetAttr attr{};
  size_t attr_size = sizeof attr.handled_access_fs;
  attr.handled_access_fs = kAccessFsAbi1;
  if (abi >= 2) attr.handled_access_fs |= kAccessFsRefer;
  if (abi >= 3) attr.handled_access_fs |= kAccessFsTruncate;
  if (abi >= 5) attr.handled_access_fs |= kAccessFsIoctlDev;
  if (abi >= 4) {
    attr.handled_access_net = kAccessNetBindTcp | kAccessNetConnectTcp;
    attr_size = offsetof(RulesetAttr, scoped);
  }
  if (abi >= 6) {
    attr.scoped = kScopeAbstractUnixSocket | kScopeSignal;
    attr_size = sizeof attr;
  }
  UniqueFd ruleset(static_cast<int>(::syscall(SYS_landlock_create_ruleset, &attr, attr_size, 0)));
  if (!ruleset) return ErrnoStatus("landlock_create_ruleset", errno);
  for (const std::string& path : read_only) {
    UniqueFd target(::open(path.c_str(), O_PATH | O_CLOEXEC));
    if (!target) continue;  // not on this system
    struct stat st;
    if (::fstat(target.get(), &st) != 0) continue;
    landlock_path_beneath_attr rule{};
    rule.parent_fd = target.get();
    rule.allowed_access = LANDLOCK_ACCESS_FS_READ_FILE;
    if (S_ISDIR(st.st_mode)) rule.allowed_access |= LANDLOCK_ACCESS_FS_READ_DIR;
    if (::syscall(SYS_landlock_add_rule, ruleset.get(), LANDLOCK_RULE_PATH_BENEATH, &rule, 0) !=
        0) {
      return ErrnoStatus(absl::StrCat("landlock_add_rule(", path, ")"), errno);
    }
  }
  if (::syscall(SYS_landlock_restrict_self, ruleset.get(), 0) != 0) {
    return ErrnoStatus("landlock_restrict_self", errno);
  }
  return static_cast<int>(abi);
}

absl::Status RestrictFilesystemWithLandlock() { return RestrictWithLandlock({}).status(); }

std::vector<std::string> PluginLoadPaths() {
  return {"/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib", "/etc/ld.so.cache"};
}

}  // namespace mp::microproc
