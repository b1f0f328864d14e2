# The first message the supervisor sends a helper (mp-builder or mp-zygote) on its control
# socket: what to load and how to confine it. Typed so that both ends agree; a helper refuses a
# spec it cannot honour. Everything else on that socket is a fixed-size struct
# (microproc/helper_protocol.h).
@0xd29936fe27cdc122;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("mp::helper");

struct HelperSpec {
  module @0 :Text;
  generation @1 :UInt64;
  layers @2 :SandboxLayers;
  addressSpaceBytes @3 :UInt64;  # RLIMIT_AS of the process that loads the plugin (0: none)
  heapCopyOnWrite @4 :Bool;      # zygote: map the heap private and writable ("cow" heapMode)
  options @5 :List(Option);      # builder: the module's options, for mp_build_ctx.option
  dataFiles @6 :List(Text);      # builder: data file names; their fds follow kHelperFirstDataFd
  pluginPath @7 :Text;           # for messages only: the plugin is read from kHelperPluginFd
}

# The layers of the sandbox, each switchable in the config for debugging
# (schemas/config.capnp, Sandbox). no_new_privs, closed descriptors and dropped capabilities
# are always on.
struct SandboxLayers {
  seccomp @0 :Bool = true;
  landlock @1 :Bool = true;
  namespaces @2 :Bool = true;
  rlimits @3 :Bool = true;
}

struct Option {
  key @0 :Text;
  value @1 :Text;
}
