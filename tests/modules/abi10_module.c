/* A module built against <mp/module.h> as it was at ABI 1.0 (abi-1.0/, frozen), in C: its
 * mp_call has no `services` field. The host of ABI 1.1 must load it and serve it unchanged. */
#include <string.h>

#include "mp/module.h"

static const char kGreeting[] = "built against ABI 1.0";

static int Build(mp_build_ctx* ctx) {
  if (ctx->capacity < sizeof kGreeting) {
    ctx->fail(ctx, "heap too small");
    return 1;
  }
  memcpy(ctx->data, kGreeting, sizeof kGreeting);
  if (ctx->set_root(ctx, "greeting", 0, sizeof kGreeting - 1) != 0) return 1;
  ctx->set_used(ctx, sizeof kGreeting);
  return 0;
}

static int Handle(const mp_heap* heap, const mp_call* call, mp_reply* reply) {
  uint64_t size = 0;
  const void* greeting = heap->find_root(heap, "greeting", &size);
  if (greeting == NULL) return MP_HANDLE_FAILED;
  mp_str type = {"Content-Type", 12}, text = {"text/plain", 10};
  reply->add_header(reply, type, text);
  reply->append_body(reply, greeting, (size_t)size);
  reply->append_body(reply, " ", 1);
  reply->append_body(reply, call->path.data, call->path.size);
  reply->append_body(reply, " ", 1);
  reply->append_body(reply, call->body.data, call->body.size);
  return MP_HANDLE_OK;
}

static const mp_module kModule = {MP_MODULE_ABI_VERSION, sizeof(mp_module), "abi10", "1.0.0",
                                  &Build, &Handle};

__attribute__((visibility("default"))) const mp_module* mp_module_entry(void) { return &kModule; }
