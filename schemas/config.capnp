# Host configuration, read from a JSON file with Cap'n Proto's JSON codec. Unknown fields are
# refused. Field names in JSON are the camelCase names below.
@0xead0d38c6c4709a1;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("mp::config");

struct Config {
  listen @0 :Text = "127.0.0.1:8080";   # HOST:PORT of the HTTP front door
  control @1 :Text;                      # Unix control socket path (default: see docs)
  modules @2 :List(Module);
  controlGroup @3 :Text;      # if set, the control socket is mode 0660 and owned by this group,
                              # whose members may use mpctl
  drainDelayMs @4 :UInt32;    # on SIGTERM or mpctl drain: /readyz is 503 this long before the
                              # listener closes (lets a load balancer notice first)
  headerTimeoutMs @5 :UInt32 = 15000;  # a client must send its request head within this time
  maxHeaderKb @6 :UInt32 = 64;         # request line and headers above this: 431
  routes @7 :List(Route);              # besides /m/<module>/..., which always works
  accessLog @8 :Bool;                  # one `event=access` line per call on stderr
  bodyTimeoutMs @9 :UInt32 = 30000;    # a request body not received within this time: 408
  drainTimeoutMs @10 :UInt32 = 10000;  # on SIGTERM, SIGINT, SIGQUIT or mpctl drain: calls in
                                       # flight get this long to finish (after drainDelayMs)
  accessLogFile @11 :Text;             # the access log goes to this file (implies accessLog);
                                       # SIGUSR1 reopens it (logrotate)
  logFile @12 :Text;                   # host events go to this file instead of stderr; SIGUSR1
                                       # reopens it
  trustedProxies @13 :List(Text);      # addresses or CIDRs (e.g. "10.0.0.0/8") whose
                                       # X-Forwarded-For the access log believes
  maxConnections @14 :UInt32 = 10000;  # open client connections at most; past it the oldest
                                       # idle keep-alive connection is closed (0: no limit)
}

# Requests whose path starts with `prefix` (and, if set, whose Host is `host`) go to `module`,
# which sees the rest of the path. The longest matching prefix wins.
struct Route {
  prefix @0 :Text;   # e.g. "/api/words/"; must start with "/"
  host @1 :Text;     # optional: match only this Host header (without port)
  module @2 :Text;
}

struct Module {
  name @0 :Text;            # [a-z0-9_-]{1,32}; served at /m/<name>/...
  plugin @1 :Text;          # path of the module's shared library (relative: to the config file)
  workers @2 :UInt32 = 2;   # microprocesses started for this module
  maxHeapMb @3 :UInt32 = 256;  # the build fails if the heap would grow past this
  options @4 :List(Option);  # in JSON: an object {"key": "value", ...}, handed to the build
  maxBodyKb @5 :UInt32 = 256;  # largest request body (413 beyond)
  callTimeoutMs @6 :UInt32 = 10000;  # a call not answered by then fails with 504
  dataFiles @7 :List(Option);  # in JSON: {"name": "path"}; opened read-only for the build
  buildTimeoutMs @8 :UInt32 = 60000;  # a build running longer is killed; the module fails
  heapMode @9 :Text = "readonly";  # "readonly", or "cow": private writable pages for scratch
                                   # writes, each copied into the writing worker only
  maxRestarts @10 :UInt32 = 5;         # restart intensity: workers that end before answering
  restartWindowMs @11 :UInt32 = 10000; # a call are replaced at once this many times within the
                                       # window, then with a backoff, then the breaker opens
  workerMemoryMb @12 :UInt32 = 1024;   # a worker's address space beyond its heap and rings
                                       # (RLIMIT_AS); a handler past it ends its worker
  cancelGraceMs @13 :UInt32 = 1000;    # after a missed deadline (504), the worker may finish
                                       # within this time; then it is killed and replaced
  # Pool: `workers` run always (the minimum); up to maxWorkers when calls queue.
  maxWorkers @14 :UInt32;              # 0: same as workers
  idleTimeoutMs @15 :UInt32 = 60000;   # workers above the minimum idle this long are stopped
  recycleAfterCalls @16 :UInt32;       # 0: never; else a worker is replaced after ~this many
                                       # calls (+0-10% jitter so workers do not recycle together)
  maxPrivateMb @17 :UInt32;            # 0: none; a worker whose USS passes it is replaced
  queueLimit @18 :UInt32 = 1024;       # calls waiting for a worker; beyond: 503 + Retry-After
  sandbox @19 :Sandbox;                # layers of the microprocess sandbox (all on by default)
  spinIterations @20 :UInt32 = 2000;   # ring checks a worker spins through before it sleeps on
                                       # its futex; 0 = never spin (more workers than cores)
  maxMessageKb @21 :UInt32;            # largest call or reply message, body included, up to
                                       # 65536; 0: max(1024, maxBodyKb + 64). Larger ones than
                                       # a ring frame travel in chunks.
  ringKb @22 :UInt32 = 256;            # each of a worker's two rings; a power of two, 16-65536
  critical @25 :Bool = true;           # false: a failed or starting module does not take the
                                       # host out of /readyz (its own calls still get 503)
  breakerMaxCooldownMs @24 :UInt32 = 60000;  # a module in a crash loop retries one worker
                                       # after 1 s, then 2, 4 ... up to this (half-open breaker)
  zygoteStartTimeoutMs @23 :UInt32 = 10000;  # a new generation's zygote must load the plugin
                                       # (its constructors included) and say hello within this
                                       # time, or the reload fails and the old one serves on
  pipelineDepth @26 :UInt32 = 2;       # when every worker is busy and the pool is at its size,
                                       # calls that may wait in a busy worker's ring behind the
                                       # one it runs (it takes them without a wake-up); 0-16
  services @27 :List(Service);         # in JSON: {"<name>": {"redis": {...}} or
                                       # {"<name>": {"module": "<module>"}}; what its handlers
                                       # may reach through the host (docs/services.md)
  serviceLimits @28 :ServiceLimits;    # per call, for all its service requests together
}

# A service brokered by the host for a module's handlers: exactly one of redis or module.
struct Service {
  name @0 :Text;            # the key in "services"; [a-z0-9_-]{1,32}
  redis @1 :RedisService;
  module @2 :Text;          # another module of this config, called through its pool
  timeoutMs @3 :UInt32 = 1000;  # each request at most this long (the call's deadline too)
}

struct RedisService {
  address @0 :Text;         # HOST:PORT of the Redis server, or unix:/PATH of its socket
  keyPrefix @1 :Text;       # required: every key argument must start with it
  commands @2 :List(Text);  # the commands the module may send (docs/services.md lists those
                            # the host knows the key positions of)
  connections @3 :UInt32 = 2;  # kept open, shared by the module's workers
  user @4 :Text;            # AUTH as this ACL user (Redis 6+); needs passwordFile
  passwordFile @5 :Text;    # AUTH with the password in this file (relative: to the config's
                            # directory), read when the config is loaded; never shown
}

struct ServiceLimits {
  maxRequests @0 :UInt32 = 100;     # service requests per call
  maxBytesOutKb @1 :UInt32 = 1024;  # request bytes per call (arguments, bodies)
  maxBytesInKb @2 :UInt32 = 4096;   # reply bytes per call
  maxDepth @3 :UInt32 = 4;          # module calls nested at most this deep (against cycles)
  maxRequestsPerSecond @4 :UInt32;  # the module's workers together, across calls (a token
                                    # bucket holding one second's worth); 0: no limit
}

# Each layer can be switched off for debugging, for the helpers that load the plugin (builder,
# zygote) and for the microprocesses alike; no_new_privs, closing every other descriptor and
# dropping capabilities are always on. docs/security.md says what each layer stops.
struct Sandbox {
  seccomp @0 :Bool = true;     # syscall allowlist
  landlock @1 :Bool = true;    # no filesystem access at all
  namespaces @2 :Bool = true;  # user, pid, net, ipc and mount namespaces
  rlimits @3 :Bool = true;     # address space, files, no core dumps
}

struct Option {
  key @0 :Text;
  value @1 :Text;
}
