/* A plugin built against a future module ABI (2): everything else about it is well formed, so
 * the only reason to refuse it is the version. Used by plugin_test. */
#include "mp/module.h"

static int Build(mp_build_ctx* ctx) {
  (void)ctx;
  return 0;
}

static int Handle(const mp_heap* heap, const mp_call* call, mp_reply* reply) {
  (void)heap;
  (void)call;
  (void)reply;
  return 0;
}

const mp_module* mp_module_entry(void) {
  static const mp_module kModule = {2u, sizeof(mp_module), "abi2", "9.9.9", &Build, &Handle};
  return &kModule;
}
