/* FROZEN: <mp/module.h> as it was at ABI 1.0 (mphost 0.2.0). tests/abi builds a module against it to
 * show that modules built before ABI 1.1 keep loading. Never edit. */
/* The mphost module ABI: the only contract between a module (a shared library) and the host.
 *
 * A module exports one C function, MP_MODULE_ENTRY_SYMBOL, returning a pointer to a static
 * mp_module. The host never runs module code in the supervisor: `build` runs in a sandboxed
 * builder process, `handle` in sandboxed microprocesses forked from a zygote.
 *
 * Plain C so that a module can be written in any language with a C FFI. C++ authors use the
 * helpers in <mp/module.hpp> instead of these structs. */
#ifndef MP_MODULE_H_
#define MP_MODULE_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped on any incompatible change to the structs below. The host refuses a module whose
 * abi_version differs from its own and names both numbers. */
#define MP_MODULE_ABI_VERSION 1u

#define MP_MODULE_ENTRY_SYMBOL "mp_module_entry"

#define MP_HANDLE_OK 0
#define MP_HANDLE_FAILED 1
#define MP_HANDLE_OUT_OF_MEMORY 2

/* A byte string that is not NUL-terminated. Valid for the duration of the callback only. */
typedef struct mp_str {
  const char* data;
  size_t size;
} mp_str;

typedef struct mp_header {
  mp_str name;
  mp_str value;
} mp_header;

/* ---- Build (in the builder process, once per heap generation) ---- */

/* The heap under construction. `data` is the start of the writable data region; the module
 * owns [data, data + capacity) and must store offsets, never pointers (the heap is mapped at a
 * different address in every reader). */
typedef struct mp_build_ctx {
  void* data;
  uint64_t capacity;
  /* Records a named root object at [offset, offset + size) of the data region. Returns 0, or
   * -1 if the table is full or the name is longer than 47 bytes. */
  int (*set_root)(struct mp_build_ctx* ctx, const char* name, uint64_t offset, uint64_t size);
  /* Declares how many bytes of the data region are in use (a prefix); the rest is released. */
  void (*set_used)(struct mp_build_ctx* ctx, uint64_t bytes);
  /* The module's option `key` from the host config, NUL-terminated, or NULL if absent.
   * An option in the config that the build never asks for fails the build ("unknown
   * option"), so a typo in a config cannot pass silently. */
  const char* (*option)(struct mp_build_ctx* ctx, const char* key);
  /* Explains a failure; call before returning non-zero from build. */
  void (*fail)(struct mp_build_ctx* ctx, const char* message);
  /* The module's data file `name` from the host config ("dataFiles"), mapped read-only for the
   * duration of the build. Returns 0 and sets *data / *size, or -1 if no such file is configured.
   * The builder cannot open files itself: the supervisor opens them and passes descriptors. */
  int (*data_file)(struct mp_build_ctx* ctx, const char* name, const void** data, uint64_t* size);
  void* host; /* opaque to the module */
} mp_build_ctx;

/* ---- Handle (in a microprocess, once per call) ---- */

/* The sealed heap as the microprocess sees it: read-only, at an address of its own. */
typedef struct mp_heap {
  const void* data;
  uint64_t size;
  /* The root `name` recorded at build time; NULL if absent. `*size` receives its size. */
  const void* (*find_root)(const struct mp_heap* heap, const char* name, uint64_t* size);
  const void* host; /* opaque to the module */
} mp_heap;

/* One call. Every pointer is valid until `handle` returns, and points into read-only memory. */
typedef struct mp_call {
  mp_str method;
  mp_str path; /* after the module prefix; starts with "/" */
  mp_str query;
  const mp_header* headers;
  size_t header_count;
  mp_str body;
} mp_call;

/* The answer under construction. Defaults: status 200, no headers, empty body. */
typedef struct mp_reply {
  void (*set_status)(struct mp_reply* reply, int status);
  void (*add_header)(struct mp_reply* reply, mp_str name, mp_str value);
  void (*append_body)(struct mp_reply* reply, const void* data, size_t size);
  /* Non-zero once the host has given up on this call (its deadline passed). A long handler may
   * poll it and return early; one that does not stop within the grace period is killed. */
  int (*cancelled)(struct mp_reply* reply);
  void* host; /* opaque to the module */
} mp_reply;

typedef struct mp_module {
  uint32_t abi_version;  /* MP_MODULE_ABI_VERSION */
  uint32_t struct_size;  /* sizeof(mp_module) */
  const char* name;      /* must equal the name the host config gives the module */
  const char* version;   /* free text, e.g. "1.2.0" */
  /* Fills the heap. Returns 0 on success; otherwise calls ctx->fail and returns non-zero. */
  int (*build)(mp_build_ctx* ctx);
  /* Answers one call from the heap. Returns 0; MP_HANDLE_OUT_OF_MEMORY if it ran out of memory
   * (the worker then exits and is replaced: its heap may be exhausted or fragmented); any other
   * non-zero value if the call failed (the client gets a 500 naming the module). Must not write
   * to the heap. */
  int (*handle)(const mp_heap* heap, const mp_call* call, mp_reply* reply);
} mp_module;

typedef const mp_module* (*mp_module_entry_fn)(void);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif /* MP_MODULE_H_ */
