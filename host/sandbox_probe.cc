#include "host/sandbox_probe.h"

#include <dirent.h>
#include <unistd.h>

#include <climits>
#include <fstream>

#include "absl/strings/str_cat.h"

namespace mp::host {
namespace {

std::string StatusField(const std::string& status, const std::string& field) {
  auto at = status.find("\n" + field + ":");
  if (at == std::string::npos) return "";
  at += field.size() + 2;
  while (at < status.size() && (status[at] == ' ' || status[at] == '\t')) ++at;
  return status.substr(at, status.find('\n', at) - at);
}

std::string Link(const std::string& path) {
  char buf[PATH_MAX];
  ssize_t n = ::readlink(path.c_str(), buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

}  // namespace

std::vector<std::string> ProbeSandboxLayers(pid_t pid, bool landlock_claimed, int max_fds) {
  const std::string proc = absl::StrCat("/proc/", pid);
  std::vector<std::string> layers;
  std::ifstream status_file(proc + "/status");
  std::string status((std::istreambuf_iterator<char>(status_file)), std::istreambuf_iterator<char>());
  if (status.empty()) return layers;
  status = "\n" + status;
  int fds = 0;
  if (DIR* d = ::opendir((proc + "/fd").c_str())) {
    while (dirent* e = ::readdir(d)) fds += e->d_name[0] != '.';
    ::closedir(d);
    if (fds <= max_fds) layers.push_back("close_fds");
  }
  std::ifstream limits(proc + "/limits");
  std::string line;
  while (std::getline(limits, line)) {
    if (line.rfind("Max address space", 0) == 0 && line.find("unlimited") == std::string::npos) {
      layers.push_back("rlimits");
    }
  }
  if (StatusField(status, "NoNewPrivs") == "1") layers.push_back("no_new_privs");
  if (StatusField(status, "Seccomp") == "2") layers.push_back("seccomp");
  if (landlock_claimed) layers.push_back("landlock");
  for (const char* ns : {"user", "pid", "net", "ipc", "mnt"}) {
    const std::string theirs = Link(absl::StrCat(proc, "/ns/", ns));
    if (!theirs.empty() && theirs != Link(absl::StrCat("/proc/self/ns/", ns))) {
      layers.push_back(absl::StrCat(ns, "_ns"));
    }
  }
  return layers;
}

}  // namespace mp::host
