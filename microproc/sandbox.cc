#include "microproc/sandbox.h"

#include <linux/capability.h>
#include <linux/close_range.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "absl/strings/str_cat.h"
#include "shm/sys.h"

namespace mp::microproc {

absl::Status CloseFdsExcept(std::initializer_list<int> keep) {
  std::vector<int> fds(keep);
  std::sort(fds.begin(), fds.end());
  unsigned int next = 0;
  for (int fd : fds) {
    if (fd < 0) continue;
    if (static_cast<unsigned>(fd) > next &&
        ::syscall(SYS_close_range, next, static_cast<unsigned>(fd) - 1, 0) != 0) {
      return ErrnoStatus("close_range", errno);
    }
    next = static_cast<unsigned>(fd) + 1;
  }
  if (::syscall(SYS_close_range, next, ~0u, 0) != 0) return ErrnoStatus("close_range", errno);
  return absl::OkStatus();
}

absl::Status ApplyRlimits(uint64_t address_space_bytes, uint64_t max_fds) {
  auto set = [](int resource, rlim_t value, const char* name) -> absl::Status {
    rlimit lim{value, value};
    if (::setrlimit(resource, &lim) != 0) return ErrnoStatus(absl::StrCat("setrlimit(", name, ")"), errno);
    return absl::OkStatus();
  };
  if (auto s = set(RLIMIT_CORE, 0, "RLIMIT_CORE"); !s.ok()) return s;
  if (auto s = set(RLIMIT_NOFILE, max_fds, "RLIMIT_NOFILE"); !s.ok()) return s;
  if (address_space_bytes > 0) {
    uint64_t limit = address_space_bytes;
#if defined(__SANITIZE_ADDRESS__)
    // AddressSanitizer builds only (tools/test's build-asan/): ASan reserves terabytes of
    // shadow address space at startup, which RLIMIT_AS counts. The limit then caps growth
    // beyond what the process had the first time it asked, so a runaway allocation still
    // fails. Read once: a microprocess (a fork of its zygote) inherits the figure, and by then
    // Landlock hides /proc/self/statm.
    static const uint64_t asan_reserved = [] {
      uint64_t bytes = 0;
      if (FILE* statm = std::fopen("/proc/self/statm", "r")) {
        unsigned long long pages = 0;
        if (std::fscanf(statm, "%llu", &pages) == 1) {
          bytes = pages * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
        }
        std::fclose(statm);
      }
      return bytes;
    }();
    limit += asan_reserved;
#endif
    if (auto s = set(RLIMIT_AS, limit, "RLIMIT_AS"); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status SetNoNewPrivs() {
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return ErrnoStatus("prctl(NO_NEW_PRIVS)", errno);
  return absl::OkStatus();
}

absl::Status SetParentDeathSignal() {
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) return ErrnoStatus("prctl(PDEATHSIG)", errno);
  return absl::OkStatus();
}

absl::Status DropCapabilities(bool keep_sys_admin) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (keep_sys_admin) {
    static_assert(CAP_SYS_ADMIN < 32);
    data[0].effective = data[0].permitted = 1u << CAP_SYS_ADMIN;
  }
  if (::syscall(SYS_capset, &header, data) != 0) return ErrnoStatus("capset", errno);
  return absl::OkStatus();
}

std::vector<std::string> SandboxLayerNames() {
  return {"close_fds", "rlimits", "no_new_privs", "pdeathsig", "seccomp"};
}

}  // namespace mp::microproc
