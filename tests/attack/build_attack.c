/* A hostile build(): the module's build function, in the builder, goes after the supervisor
 * and the kernel, as option "attack" says:
 *   tgkill       SIGKILL the builder's parent (once the supervisor; now the helper's init)
 *   pidfd_getfd  copy a descriptor out of another process
 *   io_uring     io_uring_setup, an interface the builder has no use for
 *   unshare      new namespaces, to regain capabilities
 *   open_by_handle_at  open a file by handle, bypassing paths (how /etc/shadow was read)
 * Each must end the build, naming the syscall, and nothing else. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "mp/module.h"

static int Build(mp_build_ctx* ctx) {
  const char* attack = ctx->option(ctx, "attack");
  if (attack == NULL) attack = "none";
  if (strcmp(attack, "tgkill") == 0) {
    syscall(SYS_tgkill, getppid(), getppid(), SIGKILL);
  } else if (strcmp(attack, "pidfd_getfd") == 0) {
    syscall(SYS_pidfd_getfd, 0, 0, 0);
  } else if (strcmp(attack, "io_uring") == 0) {
    char params[120];
    memset(params, 0, sizeof params);
    syscall(SYS_io_uring_setup, 8, params);
  } else if (strcmp(attack, "unshare") == 0) {
    syscall(SYS_unshare, CLONE_NEWUSER | CLONE_NEWNS);
  } else if (strcmp(attack, "open_by_handle_at") == 0) {
    char handle[136];
    memset(handle, 0, sizeof handle);
    syscall(SYS_open_by_handle_at, AT_FDCWD, handle, O_RDONLY);
  }
  ctx->set_used(ctx, 0);
  return 0; /* reached only if the attack was let through */
}

static int Handle(const mp_heap* heap, const mp_call* call, mp_reply* reply) {
  (void)heap;
  (void)call;
  static const char kOk[] = "the build attack got through\n";
  reply->append_body(reply, kOk, sizeof kOk - 1);
  return 0;
}

const mp_module* mp_module_entry(void) {
  static const mp_module kModule = {MP_MODULE_ABI_VERSION, sizeof(mp_module), "build-attack",
                                    "1.0.0", &Build, &Handle};
  return &kModule;
}
