// A service request's and answer's wire format, host side (schemas/call.capnp ServiceRequest
// and ServiceReply). The request is worker-written: decoded from a private copy with
// ReaderOptions limits, and every field checked here before the broker sees it.
#pragma once

#include <capnp/common.h>
#include <kj/array.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "host/call.h"
#include "host/redis_client.h"

namespace mp::host {

struct ServiceRequestData {
  std::string service;
  bool is_redis = false;
  std::vector<std::string> argv;  // is_redis
  CallRequest call;               // !is_redis
  uint64_t bytes = 0;             // the request's size on the wire (serviceLimits.maxBytesOutKb)
};

// Fails naming the problem: malformed Cap'n Proto, a service name that is not one, neither
// kind, a method or path that could not be an HTTP request's.
absl::StatusOr<ServiceRequestData> DecodeServiceRequest(kj::ArrayPtr<const capnp::word> words);

// The host's answer to one service request.
struct ServiceAnswer {
  enum class Outcome : uint8_t { kOk, kRefused, kFailed, kTimeout };
  Outcome outcome = Outcome::kOk;
  std::string message;  // not kOk: what the handler is told
  bool is_redis = false;
  RedisValue redis;
  CallResult call;
};
// "ok", "refused", "failed", "timeout": the result label of mphost_service_requests_total.
const char* OutcomeName(ServiceAnswer::Outcome outcome);

ServiceAnswer FailedAnswer(ServiceAnswer::Outcome outcome, std::string message);

// Serialized ServiceReply; `*reply_bytes` gets the bytes of the answer's payload (values,
// bodies), which serviceLimits.maxBytesInKb counts.
kj::Array<capnp::word> EncodeServiceReply(const ServiceAnswer& answer);
uint64_t AnswerBytes(const ServiceAnswer& answer);

}  // namespace mp::host
