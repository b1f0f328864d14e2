// mp-builder: runs one module's build function in a helper of its own, so that module code
// never runs in the supervisor. The supervisor starts it in namespaces of its own
// (host/helper_launcher.h) with
//   fd 2: a pipe for its stderr     fd 3: the control socket (SOCK_SEQPACKET)
//   fd 4: the heap memfd, unsealed  fd 5: the init socket    fd 6: the plugin, a sealed memfd
//   fd 7...: the data files named in the spec, read-only
// and argv only its process title. Its init forks the stage, which receives the HelperSpec,
// maps the heap and data files, enters the load sandbox, loads the plugin, tightens the
// sandbox and calls build; it sends one BuildResult. When the stage ends, init exits, and
// everything the module started ends with it. On success the data region and the header's
// root table are filled; the supervisor then validates, checksums and seals.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "microproc/helper_init.h"
#include "microproc/helper_protocol.h"
#include "microproc/helper_spec.h"
#include "microproc/helper_stage.h"
#include "microproc/plugin.h"
#include "microproc/sandbox.h"
#include "shm/heap_layout.h"
#include "shm/segment.h"

namespace mp::microproc {
namespace {

using shm::HeapHeader;

struct DataFile {
  const void* data = nullptr;
  uint64_t size = 0;
};

// What the module's build reaches through mp_build_ctx. Module code holds a pointer to it
// (ctx->host) and can scribble on it: nothing here is trusted once build() has run, except
// as this process's own report.
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
  if (h->root_count >= shm::kMaxHeapRoots) return -1;
  if (std::strlen(name) >= shm::kHeapRootNameBytes) return -1;
  shm::HeapRoot& r = h->roots[h->root_count++];
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

// Sends the one result and exits.
[[noreturn]] void Report(BuildOutcome outcome, absl::string_view text) {
  BuildResult result{};
  result.kind = MessageKind::kBuildResult;
  result.outcome = outcome;
  text.copy(result.text, sizeof result.text - 1);
  ssize_t unused = ::write(kHelperSocketFd, &result, sizeof result);
  (void)unused;
  _exit(outcome == BuildOutcome::kOk ? kExitOk : kExitFailed);
}

int Stage() {
  auto spec = ReceiveStageSpec(kHelperSocketFd, 10000);
  if (!spec.ok()) Report(BuildOutcome::kInvalid, absl::StrCat("mp-builder: ", spec.status().message()));
  const std::string& module = spec->module;
  BuildState state{};
  for (const auto& [key, value] : spec->options) state.options[key] = value;

  auto heap = shm::Segment::Adopt(UniqueFd(kHelperHeapFd), "heap");
  if (!heap.ok()) Report(BuildOutcome::kInvalid, heap.status().message());
  auto map = heap->MapShared(PROT_READ | PROT_WRITE);
  if (!map.ok()) Report(BuildOutcome::kInvalid, map.status().message());
  state.header = static_cast<HeapHeader*>(map->data());
  std::memset(state.header, 0, sizeof(HeapHeader));

  std::vector<shm::Mapping> data_maps;
  for (size_t i = 0; i < spec->data_files.size(); ++i) {
    const std::string& name = spec->data_files[i];
    auto file = shm::Segment::Adopt(UniqueFd(kHelperFirstDataFd + static_cast<int>(i)), name);
    auto where = [&](const absl::Status& s) {
      return absl::StrCat("module '", module, "': data file '", name, "': ", s.message());
    };
    if (!file.ok()) Report(BuildOutcome::kInvalid, where(file.status()));
    DataFile& df = state.data_files[name];
    if (file->size() > 0) {
      auto m = shm::Mapping::Map(file->fd(), file->size(), PROT_READ, MAP_PRIVATE, name);
      if (!m.ok()) Report(BuildOutcome::kInvalid, where(m.status()));
      df.data = m->data();
      df.size = m->size();
      data_maps.push_back(*std::move(m));
    } else {
      df.data = "";
    }
  }
  // The data files stay mapped; their descriptors go with every other one.
  if (auto s = EnterLoadSandbox({HelperRole::kBuilder, spec->layers, spec->address_space_bytes,
                                 {2, kHelperSocketFd, kHelperPluginFd}});
      !s.ok()) {
    Report(BuildOutcome::kInvalid,
           absl::StrCat("module '", module, "': entering the sandbox: ", s.message()));
  }
  // Module code runs from here on: the plugin's constructors, then build.
  auto loaded = LoadPluginFromFd(module, kHelperPluginFd, spec->plugin_path);
  ::close(kHelperPluginFd);
  if (!loaded.ok()) Report(BuildOutcome::kInvalid, loaded.status().message());
  if (auto s = EnterLoadedSandbox(spec->layers); !s.ok()) Report(BuildOutcome::kInvalid, s.message());

  state.ctx.data = map->bytes() + shm::kHeapHeaderBytes;
  state.ctx.capacity = map->size() - shm::kHeapHeaderBytes;
  state.ctx.set_root = &SetRoot;
  state.ctx.set_used = &SetUsed;
  state.ctx.option = &Option;
  state.ctx.fail = &Fail;
  state.ctx.data_file = &GetDataFile;
  state.ctx.host = &state;
  const int rc = loaded->module->build(&state.ctx);
  if (rc != 0) {
    Report(BuildOutcome::kFailed,
           absl::StrCat("module '", module, "': build failed: ",
                        state.failure.empty() ? "(no reason given)" : state.failure));
  }
  for (const auto& [key, value] : state.options) {
    if (state.options_asked.count(key) == 0) {
      Report(BuildOutcome::kInvalid, absl::StrCat("module '", module, "': unknown option '", key,
                                                  "' (the module never reads it)"));
    }
  }
  if (!state.used_set) state.header->data_bytes = state.ctx.capacity;  // a C module may not say
  const char* version = loaded->module->version ? loaded->module->version : "";
  Report(BuildOutcome::kOk, std::string(version, strnlen(version, 31)));
}

}  // namespace
}  // namespace mp::microproc

int main(int argc, char** argv) {
  using namespace mp::microproc;
  const std::string title(argc > 0 ? argv[0] : "mphost: builder");
  SetProcessTitle(argc, argv, absl::StrReplaceAll(title, {{"mphost: ", "mphost: init "}}));
  RunHelperInit(
      [&] {
        SetProcessTitle(argc, argv, title);
        return Stage();
      },
      {.exit_with_stage = true});
}
