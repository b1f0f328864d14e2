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
  state @3 :Text;          # starting | ready | busy | stopping
  calls @4 :UInt64;        # calls answered by this worker
  errors @5 :UInt64;       # calls this worker failed
  startedUnixMs @6 :Int64;
  sandbox @7 :List(Text);  # sandbox layers in force, e.g. "seccomp", "no_new_privs"
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
}
