# The operator's interface: served by mphost over its Unix control socket with Cap'n Proto RPC
# (two-party, the host is the server). mpctl is its client.
@0xeddf62d34ba531af;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("mp::control");

using Call = import "call.capnp";

struct WorkerInfo {
  pid @0 :Int32;
  module @1 :Text;
  generation @2 :UInt64;
  state @3 :Text;          # ready | busy | cancelling | stopping | killed
  calls @4 :UInt64;        # calls answered by this worker
  errors @5 :UInt64;       # calls this worker failed
  startedUnixMs @6 :Int64;
  sandbox @7 :List(Text);  # sandbox layers in force, e.g. "seccomp", "no_new_privs"
  # Memory, from /proc/PID/smaps_rollup and smaps (bytes; 0 if unreadable).
  rssBytes @8 :UInt64;
  pssBytes @9 :UInt64;
  ussBytes @10 :UInt64;              # Private_Clean + Private_Dirty
  heapResidentBytes @11 :UInt64;     # Rss of its heap mapping
  heapPrivatizedBytes @12 :UInt64;   # Anonymous of its heap mapping: pages a write copied
  restarts @13 :UInt64;              # workers of its module restarted before it started
  serviceRequests @14 :UInt64;       # service requests its handlers made (docs/services.md)
}

struct HeapInfo {
  module @0 :Text;
  version @1 :Text;
  generation @2 :UInt64;
  current @3 :Bool;          # new calls go to this generation
  segmentBytes @4 :UInt64;
  dataBytes @5 :UInt64;
  checksum @6 :Text;         # FNV-1a 64 of the heap, hex
  seals @7 :List(Text);      # "seal", "shrink", "grow", "write"
  mappers @8 :UInt32;        # processes that map it (workers and the zygote)
  residentBytes @9 :UInt64;  # sum of the mapping's Rss over mappers
  pssBytes @10 :UInt64;      # sum of Pss: the heap's actual share of RAM
  privatizedBytes @11 :UInt64;  # sum of Anonymous: bytes copied out of sharing
}

struct HostStatus {
  version @0 :Text;
  pid @1 :Int32;
  uptimeMs @2 :UInt64;
  listen @3 :Text;
  control @4 :Text;
  draining @5 :Bool;
  modules @6 :UInt32;
  modulesFailed @7 :UInt32;
  workers @8 :UInt32;
  workersBusy @9 :UInt32;
  calls @10 :UInt64;
  hostPssBytes @11 :UInt64;     # the supervisor itself
  workerPssBytes @12 :UInt64;   # all workers
  heapBytes @13 :UInt64;        # all current heap segments
  ready @14 :Bool;              # what /readyz says
  # Client connections (the HTTP listener).
  connectionsOpen @15 :UInt64;
  connectionsAccepted @16 :UInt64;
  connectionsShed @17 :UInt64;         # idle ones closed to make room
  connectionLimitReached @18 :UInt64;  # times maxConnections left clients in the backlog
  acceptResourceErrors @19 :UInt64;    # accept failed for want of descriptors or memory
  acceptOtherErrors @20 :UInt64;
  configReloadsOk @21 :UInt64;
  configReloadsFailed @22 :UInt64;
  # The supervisor process (Prometheus' process_* metrics).
  cpuSeconds @23 :Float64;
  residentBytes @24 :UInt64;
  virtualBytes @25 :UInt64;
  openFds @26 :UInt64;
  maxFds @27 :UInt64;
  startTimeSeconds @28 :Float64;       # since the epoch
}

struct ModuleInfo {
  name @0 :Text;
  version @1 :Text;
  generation @2 :UInt64;
  state @3 :Text;            # starting | serving | reloading | failed | stopping
  reason @4 :Text;           # why it failed, or why the last reload failed
  heapBytes @5 :UInt64;
  workersReady @6 :UInt32;
  workersBusy @7 :UInt32;
  workersMin @8 :UInt32;     # the pool's minimum
  workersMax @11 :UInt32;    # ... and maximum
  calls @9 :UInt64;
  restarts @10 :UInt64;
  # Cumulative call latency histogram: counts of calls answered within each bound, seconds
  # (the last count, bound +Inf, is every call given to a worker).
  latencyBounds @12 :List(Float64);
  latencyCounts @13 :List(UInt64);
  generations @14 :UInt32;          # live heap generations (the current one and any retiring)
  callsPerSecond @15 :Float64;      # over the last second
  queueDepth @16 :UInt32;           # calls waiting for a worker
  workersStarting @17 :UInt32;
  workersStopping @18 :UInt32;      # told to stop, or being killed
  callsByStatus @19 :List(StatusCount);
  exitsByCause @20 :List(CauseCount);  # every cause, from the start
  latencySumSeconds @21 :Float64;
  breaker @22 :Text;                # closed | open | half-open (the crash-loop breaker)
  breakerTrips @23 :UInt64;
  breakerTrials @24 :UInt64;
  outputLines @25 :UInt64;          # module stderr lines logged
  outputDroppedLines @26 :UInt64;   # ... and dropped past the rate limit
  outputDroppedBytes @27 :UInt64;
  workerPssBytes @28 :UInt64;       # its workers, from /proc (0 if not read)
  workerUssBytes @29 :UInt64;
  heapPssBytes @30 :UInt64;         # its heaps' share of RAM over every process mapping them
  heapPrivatizedBytes @31 :UInt64;
  critical @32 :Bool;               # needed for /readyz
  ready @33 :Bool;                  # serving, with a worker that can take a call
  buildsOk @34 :UInt64;             # heap generations built (the first and every reload's)
  buildsFailed @35 :UInt64;
  buildBounds @36 :List(Float64);   # build duration histogram, seconds, as latency's
  buildCounts @37 :List(UInt64);
  buildSumSeconds @38 :Float64;
  reloadsOk @39 :UInt64;            # generations after the first
  reloadsFailed @40 :UInt64;
  unavailableByCause @41 :List(CauseCount);
  wakeupsToWorker @42 :UInt64;      # futex wakes the host made for its sleeping workers
  wakeupsToHost @43 :UInt64;        # doorbell rings its workers made for the sleeping host
  services @44 :List(ServiceInfo);  # what its handlers may reach through the host
  serviceRequests @45 :UInt64;      # service requests answered, every service together  # 503s the host gave itself: starting | draining | module_failed | queue_full | no_worker
}

# One service granted to a module, and what its handlers asked of it.
struct ServiceInfo {
  name @0 :Text;                 # "" collects refusals of services the module was not granted
  kind @1 :Text;                 # redis | module | none
  target @2 :Text;               # HOST:PORT, or the module called
  results @3 :List(CauseCount);  # ok | refused | failed | timeout
  refusedByRule @4 :List(CauseCount);
  latencyBounds @5 :List(Float64);  # as ModuleInfo's, for answered requests
  latencyCounts @6 :List(UInt64);
  latencySumSeconds @7 :Float64;
  connected @8 :UInt32;          # redis: connections up now
  reconnects @9 :UInt64;         # redis: connections made again after a loss
  connectFailures @10 :UInt64;   # redis: connects refused, failed, timed out or denied by AUTH
}

struct StatusCount {
  status @0 :UInt16;
  count @1 :UInt64;
}

struct CauseCount {
  cause @0 :Text;   # signal | seccomp | memory | deadline | protocol | operator | retired | ...
  count @1 :UInt64;
}

# Everything the host shows of itself, filled once: the answers of status, modules, ps and
# heap, and the source of /metrics.
struct Snapshot {
  status @0 :HostStatus;
  modules @1 :List(ModuleInfo);
  workers @2 :List(WorkerInfo);
  heaps @3 :List(HeapInfo);
}

interface Control {
  ps @0 () -> (workers :List(WorkerInfo));

  # One call to a module, as if it came over HTTP. A module that does not exist, or a call the
  # host cannot complete, is answered with an HTTP-style status and a JSON error body.
  call @1 (module :Text, method :Text, path :Text, query :Text,
           headers :List(Call.Header), body :Data, timeoutMs :UInt32)
       -> (reply :Call.Reply, workerPid :Int32, hostError :Bool);
  # hostError: the host answered itself (no such module, limits, a worker died, deadline),
  # rather than passing on the module's reply.

  # Builds and switches to a new generation of `module` (every module if empty); fails
  # (leaving the old one serving) with the reason.
  reload @2 (module :Text) -> (generation :UInt64);
  heap @3 (module :Text) -> (heaps :List(HeapInfo));  # module "" = every module
  modules @4 () -> (modules :List(ModuleInfo));

  # Clears a failed module and replaces its workers (rebuilds it if it never built).
  restart @5 (module :Text) -> (workers :UInt32);

  # Sets the module's pool to [min, max] workers.
  scale @6 (module :Text, min :UInt32, max :UInt32) -> ();

  status @7 () -> (status :HostStatus);
  # Ends one worker (SIGKILL); its call, if any, gets a 502 and the worker is replaced.
  kill @8 (pid :Int32) -> ();
  # Starts a graceful stop: /readyz turns 503, the listener closes after drainDelayMs, calls in
  # flight finish, the host exits 0.
  drain @9 () -> ();
  metrics @10 () -> (text :Text);  # the Prometheus text of /metrics
  # Everything above at once (status, modules, workers, heaps): what /metrics is rendered from.
  snapshot @11 () -> (snapshot :Snapshot);
  # Re-reads the config file and applies the difference, as SIGHUP does; fails, changing
  # nothing, if the file is invalid. One line per module, and what needs a restart.
  reloadConfig @12 () -> (changes :List(Text));
}
