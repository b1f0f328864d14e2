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
/* Bumped on each compatible addition: fields are only ever appended to structs the host fills,
 * so a module built against an earlier minor loads and runs unchanged.
 *   1.0  build, handle
 *   1.1  mp_call.services: services brokered by the host (Redis, other modules) */
#define MP_MODULE_ABI_MINOR 1u

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

/* ---- Services (ABI 1.1): state and other modules, reached through the host ---- */

/* A worker holds no socket. A handler asks the host, which checks the request against the
 * module's grant (its config's "services"), performs it, and answers; the handler waits for
 * the answer. Time spent waiting counts against the call's deadline. See docs/services.md. */

typedef enum mp_value_type {
  MP_VALUE_NIL = 0,
  MP_VALUE_INTEGER = 1,
  MP_VALUE_STRING = 2, /* a bulk string: binary-safe */
  MP_VALUE_STATUS = 3, /* e.g. "OK" */
  MP_VALUE_ERROR = 4,  /* the server's error reply, e.g. "WRONGTYPE ..." */
  MP_VALUE_ARRAY = 5
} mp_value_type;

/* A Redis reply. */
typedef struct mp_value {
  int type; /* an mp_value_type */
  int64_t integer;
  mp_str str; /* STRING, STATUS and ERROR */
  const struct mp_value* elements; /* ARRAY */
  size_t element_count;
} mp_value;

/* Another module's answer. */
typedef struct mp_response {
  int status;
  const mp_header* headers;
  size_t header_count;
  mp_str body;
} mp_response;

struct mp_call;

typedef struct mp_services {
  uint32_t struct_size; /* sizeof(mp_services) as the host filled it; later minors append */
  /* Runs the Redis command argv[0..argc) on the module's service `service`. Returns 0 and sets
   * *reply (a Redis error reply is MP_VALUE_ERROR, and still 0), or -1 and sets *error when the
   * host refused the command (the message names the rule it broke) or could not perform it
   * (Redis down, the call's deadline, a limit). *reply and *error stay valid until the next
   * service request or the end of `handle`. */
  int (*redis)(const struct mp_services* services, mp_str service, const mp_str* argv,
               size_t argc, const mp_value** reply, mp_str* error);
  /* Calls the module behind service `service` with `request` (its method, path, query, headers
   * and body; request->services is ignored). Returns 0 and sets *response, whatever its status,
   * or -1 and sets *error (refused, the depth limit, the deadline). Valid as for redis. */
  int (*call)(const struct mp_services* services, mp_str service, const struct mp_call* request,
              const mp_response** response, mp_str* error);
  const void* host; /* opaque to the module */
} mp_services;

/* One call. Every pointer is valid until `handle` returns, and points into read-only memory. */
typedef struct mp_call {
  mp_str method;
  mp_str path; /* after the module prefix; starts with "/" */
  mp_str query;
  const mp_header* headers;
  size_t header_count;
  mp_str body;
  /* ABI 1.1: never NULL when the host fills it. A module built against 1.0 does not see it. */
  const mp_services* services;
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
