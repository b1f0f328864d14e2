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
