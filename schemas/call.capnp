# Messages between the supervisor and a microprocess, one per ring frame (see shm/ring_layout.h
# for the frame kinds). The worker reads Call in place in the ring; the host copies Reply and
# Error out of the ring before it decodes them with ReaderOptions limits.
@0xf045a806f4b2a9ac;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("mp::call");

struct Header {
  name @0 :Text;
  value @1 :Text;
}

# One HTTP-shaped request to a module. `path` is what follows /m/<module> (or the route
# prefix), always starting with "/"; `query` excludes the "?".
struct Call {
  method @0 :Text;
  path @1 :Text;
  query @2 :Text;
  headers @3 :List(Header);
  body @4 :Data;
}

struct Reply {
  status @0 :UInt16;
  headers @1 :List(Header);
  body @2 :Data;
}

# The worker could not answer: the module's handler failed, or the call was malformed.
struct Error {
  code @0 :Code;
  message @1 :Text;
  enum Code {
    handlerFailed @0;   # the module's handle function returned an error
    badCall @1;         # the worker could not decode the call frame
    replyTooLarge @2;   # the reply does not fit in the response ring
    cancelled @3;
  }
}

# ---- Services: the host brokers I/O for a handler (ABI 1.1) ----
# A handler asks through its response ring (frame kind kServiceRequest, the id of the call it
# serves); the host checks the request against the module's grant, performs it on its event
# loop, and answers on the request ring (kServiceReply, same id). One request at a time per
# call: the handler waits for each answer.

struct ServiceRequest {
  service @0 :Text;      # the name the module's config gives the service
  union {
    redis @1 :List(Data);  # a Redis command as its argument vector
    call @2 :Call;         # a call to another module
  }
}

struct RedisValue {
  union {
    nil @0 :Void;
    integer @1 :Int64;
    string @2 :Data;
    status @3 :Text;
    error @4 :Text;
    array @5 :List(RedisValue);
  }
}

struct ServiceReply {
  union {
    # The host refused the request, or could not perform it: the message names the rule it
    # broke or the failure (Redis unreachable, deadline, ...).
    failed @0 :Text;
    redis @1 :RedisValue;
    call @2 :Reply;
  }
}
