/* Hostile constructors: module code that runs the moment the plugin is loaded, in the builder
 * and again in the zygote, before the module's entry point is even looked up. Built once per
 * attack (ATTACK_SHADOW, ATTACK_CONNECT, ATTACK_CONTROL, ATTACK_DAEMON, ATTACK_SLEEP) as a module named
 * MODULE_NAME. Each reports what it achieved on stderr, which the host logs as module output.
 *
 * A constructor has no options and no heap to read: what it learns from outside comes through
 * the environment the host lets through, so the tests pass it the host's port and a tag in
 * LC_* variables, the only ones that reach a helper. An attacker would use them the same way. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "mp/module.h"

extern char* program_invocation_short_name;

/* "zygote" or "builder": helpers title themselves "mphost: zygote NAME gen N". */
static const char* Stage(void) {
  return strstr(program_invocation_short_name, "zygote") != NULL ? "zygote" : "builder";
}

__attribute__((constructor)) static void Attack(void) {
#if defined(ATTACK_SHADOW)
  /* The host's environment may hold secrets; a helper's must not. */
  const char* secret = getenv("MPTEST_SECRET");
  fprintf(stderr, "attack %s: MPTEST_SECRET=%s\n", Stage(), secret ? secret : "(unset)");
  int fd = open("/etc/shadow", O_RDONLY);
  if (fd < 0) {
    fprintf(stderr, "attack %s: open /etc/shadow failed: %s\n", Stage(), strerror(errno));
  } else {
    char buf[64];
    ssize_t n = read(fd, buf, sizeof buf);
    fprintf(stderr, "attack %s: READ /etc/shadow: %zd bytes\n", Stage(), n);
  }
#elif defined(ATTACK_CONNECT)
  const char* port = getenv("LC_MPTEST_PORT");
  int s = socket(AF_INET, SOCK_STREAM, 0);
  if (s < 0) {
    fprintf(stderr, "attack %s: socket failed: %s\n", Stage(), strerror(errno));
    return;
  }
  struct sockaddr_in addr;
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)atoi(port ? port : "8080"));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(s, (struct sockaddr*)&addr, sizeof addr) == 0) {
    fprintf(stderr, "attack %s: CONNECTED to the host's port %s\n", Stage(), port);
  } else {
    fprintf(stderr, "attack %s: connect to port %s failed: %s\n", Stage(), port, strerror(errno));
  }
  close(s);
#elif defined(ATTACK_CONTROL)
  /* The host's control socket is a path: no network namespace hides it. */
  const char* path = getenv("LC_MPTEST_CONTROL");
  int s = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  strncpy(addr.sun_path, path ? path : "", sizeof addr.sun_path - 1);
  if (connect(s, (struct sockaddr*)&addr, sizeof addr) != 0) {
    fprintf(stderr, "attack %s: connect to the control socket failed: %s\n", Stage(), strerror(errno));
  } else {
    char byte;
    ssize_t n = read(s, &byte, 1);
    fprintf(stderr, "attack %s: control socket %s\n", Stage(),
            n == 0 ? "closed by the host" : "ANSWERED");
  }
  close(s);
#elif defined(ATTACK_DAEMON)
  /* The classic double fork: the grandchild is orphaned, leads a session of its own and sleeps
   * for ever under a name the test looks for. */
  const char* tag = getenv("LC_MPTEST_TAG");
  pid_t child = fork();
  if (child == 0) {
    setsid();
    if (fork() == 0) {
      char name[16];
      snprintf(name, sizeof name, "mpd%s", tag ? tag : "");
      prctl(PR_SET_NAME, name, 0, 0, 0);
      for (;;) pause();
    }
    _exit(0);
  }
  fprintf(stderr, "attack %s: daemon forked (%s)\n", Stage(), child < 0 ? strerror(errno) : "ok");
#elif defined(ATTACK_SLEEP)
  /* Generation 1 loads at once; every later zygote stalls in its constructor. */
  if (strcmp(Stage(), "zygote") == 0 && strstr(program_invocation_short_name, " gen 1") == NULL) {
    fprintf(stderr, "attack zygote: sleeping 8 s in a constructor\n");
    struct timespec t = {8, 0};
    nanosleep(&t, NULL);
  }
#else
#error "define one ATTACK_*"
#endif
}

static int Build(mp_build_ctx* ctx) {
  ctx->set_used(ctx, 0);
  return 0;
}

static int Handle(const mp_heap* heap, const mp_call* call, mp_reply* reply) {
  (void)heap;
  (void)call;
  static const char kOk[] = "ok\n";
  reply->append_body(reply, kOk, sizeof kOk - 1);
  return 0;
}

const mp_module* mp_module_entry(void) {
  static const mp_module kModule = {MP_MODULE_ABI_VERSION, sizeof(mp_module), MODULE_NAME, "1.0.0",
                                    &Build, &Handle};
  return &kModule;
}
