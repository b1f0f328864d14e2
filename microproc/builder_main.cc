// mp-builder: runs one module's build function in a process of its own, so that module code
// never runs in the supervisor. The supervisor execs it with
//   fd 3: a pipe for the one-line result ("ok VERSION" or "error MESSAGE")
//   fd 4: the heap memfd, unsealed
// and argv: --module NAME --plugin PATH [--option KEY=VALUE]...
// On success the data region and the header's root table are filled; the supervisor then
// validates, checksums and seals.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <vector>
#include <string>

#include "absl/strings/str_cat.h"
#include "microproc/plugin.h"
#include "microproc/sandbox.h"
#include "microproc/zygote_protocol.h"
#include "shm/heap_layout.h"
#include "shm/segment.h"

namespace {

using mp::shm::HeapHeader;

struct DataFile {
  const void* data = nullptr;
  uint64_t size = 0;
};

struct BuildState {
  mp_build_ctx ctx;
  HeapHeader* header;
  std::map<std::string, std::string> options;
  std::set<std::string> options_asked;
  std::map<std::string, DataFile> data_files;
  std::string failure;
  bool used_set = false;
};

BuildState* From(mp_build_ctx* ctx) { return static_cast<BuildState*>(ctx->host); }

int SetRoot(mp_build_ctx* ctx, const char* name, uint64_t offset, uint64_t size) {
  HeapHeader* h = From(ctx)->header;
  if (h->root_count >= mp::shm::kMaxHeapRoots) return -1;
  if (std::strlen(name) >= mp::shm::kHeapRootNameBytes) return -1;
  mp::shm::HeapRoot& r = h->roots[h->root_count++];
  std::memset(r.name, 0, sizeof r.name);
  std::memcpy(r.name, name, std::strlen(name));
  r.offset = offset;
  r.size = size;
  return 0;
}

void SetUsed(mp_build_ctx* ctx, uint64_t bytes) {
  From(ctx)->header->data_bytes = bytes;
  From(ctx)->used_set = true;
}

const char* Option(mp_build_ctx* ctx, const char* key) {
  From(ctx)->options_asked.insert(key);
  auto& opts = From(ctx)->options;
  auto it = opts.find(key);
  return it == opts.end() ? nullptr : it->second.c_str();
}

int GetDataFile(mp_build_ctx* ctx, const char* name, const void** data, uint64_t* size) {
  auto& files = From(ctx)->data_files;
  auto it = files.find(name);
  if (it == files.end()) return -1;
  *data = it->second.data;
  *size = it->second.size;
  return 0;
}

void Fail(mp_build_ctx* ctx, const char* message) { From(ctx)->failure = message ? message : ""; }

// Result kinds: "ok VERSION"; "invalid MESSAGE" (the plugin or the setup is unusable: a
// configuration error); "error MESSAGE" (the module's build failed).
enum class Result { kOk, kInvalid, kError };

[[noreturn]] void Report(Result kind, const std::string& text) {
  std::string flat = text;
  for (char& c : flat) {
    if (c == '\n') c = ' ';  // one line, whatever the module said
  }
  const char* tag = kind == Result::kOk ? "ok " : kind == Result::kInvalid ? "invalid " : "error ";
  std::string line = absl::StrCat(tag, flat, "\n");
  ssize_t unused = ::write(mp::microproc::kHelperSocketFd, line.data(), line.size());
  (void)unused;
  _exit(kind == Result::kOk ? 0 : 1);
}

}  // namespace

int main(int argc, char** argv) {
  std::string module, plugin;
  BuildState state{};
  std::map<std::string, int> data_fds;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--module") {
      module = value;
    } else if (flag == "--plugin") {
      plugin = value;
    } else if (flag == "--option") {
      auto eq = value.find('=');
      state.options[value.substr(0, eq)] = eq == std::string::npos ? "" : value.substr(eq + 1);
    } else if (flag == "--data") {
      auto eq = value.find('=');
      if (eq == std::string::npos) Report(Result::kInvalid, "mp-builder: --data needs NAME=FD");
      data_fds[value.substr(0, eq)] = std::atoi(value.c_str() + eq + 1);
    } else {
      Report(Result::kInvalid, absl::StrCat("mp-builder: unknown flag ", flag));
    }
  }
  if (module.empty() || plugin.empty()) Report(Result::kInvalid, "mp-builder: --module and --plugin are required");
  for (auto s : {mp::microproc::SetParentDeathSignal(), mp::microproc::SetNoNewPrivs(),
                 mp::microproc::ApplyRlimits(0, 64)}) {
    if (!s.ok()) Report(Result::kInvalid, std::string(s.message()));
  }

  auto heap = mp::shm::Segment::Adopt(mp::UniqueFd(mp::microproc::kHelperHeapFd), "heap");
  if (!heap.ok()) Report(Result::kInvalid, std::string(heap.status().message()));
  auto map = heap->MapShared(PROT_READ | PROT_WRITE);
  if (!map.ok()) Report(Result::kInvalid, std::string(map.status().message()));
  state.header = static_cast<HeapHeader*>(map->data());
  std::memset(state.header, 0, sizeof(HeapHeader));

  std::vector<mp::shm::Mapping> data_maps;
  for (const auto& [name, fd] : data_fds) {
    auto file = mp::shm::Segment::Adopt(mp::UniqueFd(fd), name);
    if (!file.ok()) Report(Result::kInvalid, absl::StrCat("module '", module, "': data file '", name, "': ", file.status().message()));
    DataFile& df = state.data_files[name];
    if (file->size() > 0) {
      auto m = mp::shm::Mapping::Map(file->fd(), file->size(), PROT_READ, MAP_PRIVATE, name);
      if (!m.ok()) Report(Result::kInvalid, absl::StrCat("module '", module, "': data file '", name, "': ", m.status().message()));
      df.data = m->data();
      df.size = m->size();
      data_maps.push_back(*std::move(m));
    } else {
      df.data = "";
    }
  }

  auto loaded = mp::microproc::LoadPlugin(module, plugin);
  if (!loaded.ok()) Report(Result::kInvalid, std::string(loaded.status().message()));

  state.ctx.data = map->bytes() + mp::shm::kHeapHeaderBytes;
  state.ctx.capacity = map->size() - mp::shm::kHeapHeaderBytes;
  state.ctx.set_root = &SetRoot;
  state.ctx.set_used = &SetUsed;
  state.ctx.option = &Option;
  state.ctx.fail = &Fail;
  state.ctx.data_file = &GetDataFile;
  state.ctx.host = &state;
  // From here on module code runs: it may not create processes or open anything. A child that
  // outlived the builder could keep the heap memfd and resize it under the supervisor.
  if (auto s = mp::microproc::InstallBuilderSeccomp(); !s.ok()) Report(Result::kInvalid, std::string(s.message()));
  int rc = loaded->module->build(&state.ctx);
  if (rc != 0) {
    Report(Result::kError, absl::StrCat("module '", module, "': build failed: ",
                               state.failure.empty() ? "(no reason given)" : state.failure));
  }
  for (const auto& [key, value] : state.options) {
    if (state.options_asked.count(key) == 0) {
      Report(Result::kInvalid, absl::StrCat("module '", module, "': unknown option '", key,
                                 "' (the module never reads it)"));
    }
  }
  if (!state.used_set) state.header->data_bytes = state.ctx.capacity;  // a C module may not say
  const char* version = loaded->module->version ? loaded->module->version : "";
  Report(Result::kOk, std::string(version, strnlen(version, 31)));
}
