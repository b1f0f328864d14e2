#include "host/service_codec.h"

#include <capnp/message.h>
#include <capnp/serialize.h>

#include "absl/strings/str_cat.h"
#include "schemas/call.capnp.h"

namespace mp::host {
namespace {

std::string Bytes(capnp::Text::Reader t) { return std::string(t.begin(), t.size()); }
std::string Bytes(capnp::Data::Reader d) {
  return std::string(reinterpret_cast<const char*>(d.begin()), d.size());
}

bool IsToken(const std::string& s) {
  if (s.empty() || s.size() > 32) return false;
  for (unsigned char c : s) {
    if (c <= 0x20 || c >= 0x7f) return false;
  }
  return true;
}

bool HasControlBytes(const std::string& s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return true;
  }
  return false;
}

uint64_t ValueBytes(const RedisValue& v) {
  uint64_t n = 16 + v.str.size();
  for (const RedisValue& e : v.elements) n += ValueBytes(e);
  return n;
}

void FillValue(call::RedisValue::Builder out, const RedisValue& v) {
  switch (v.type) {
    case RedisValue::Type::kNil: out.setNil(); break;
    case RedisValue::Type::kInteger: out.setInteger(v.integer); break;
    case RedisValue::Type::kString:
      out.setString(kj::arrayPtr(reinterpret_cast<const kj::byte*>(v.str.data()), v.str.size()));
      break;
    case RedisValue::Type::kStatus: out.setStatus(v.str); break;
    case RedisValue::Type::kError: out.setError(v.str); break;
    case RedisValue::Type::kArray: {
      auto list = out.initArray(static_cast<unsigned>(v.elements.size()));
      for (unsigned i = 0; i < list.size(); ++i) FillValue(list[i], v.elements[i]);
      break;
    }
  }
}

}  // namespace

absl::StatusOr<ServiceRequestData> DecodeServiceRequest(kj::ArrayPtr<const capnp::word> words) {
  ServiceRequestData out;
  out.bytes = words.size() * sizeof(capnp::word);
  try {
    capnp::ReaderOptions limits;
    limits.traversalLimitInWords = words.size() * 2 + 64;
    limits.nestingLimit = 8;
    capnp::FlatArrayMessageReader message(words, limits);
    auto r = message.getRoot<call::ServiceRequest>();
    out.service = Bytes(r.getService());
    if (out.service.empty() || out.service.size() > 32 || HasControlBytes(out.service)) {
      return absl::InvalidArgumentError("a service request names no valid service");
    }
    switch (r.which()) {
      case call::ServiceRequest::REDIS:
        out.is_redis = true;
        for (auto arg : r.getRedis()) out.argv.push_back(Bytes(arg));
        if (out.argv.empty()) return absl::InvalidArgumentError("a Redis request with no command");
        break;
      case call::ServiceRequest::CALL: {
        auto c = r.getCall();
        out.call.method = Bytes(c.getMethod());
        out.call.path = Bytes(c.getPath());
        out.call.query = Bytes(c.getQuery());
        if (!IsToken(out.call.method)) {
          return absl::InvalidArgumentError("a module call whose method is not an HTTP token");
        }
        if (out.call.path.empty() || out.call.path[0] != '/' || HasControlBytes(out.call.path) ||
            HasControlBytes(out.call.query)) {
          return absl::InvalidArgumentError(
              "a module call whose path does not start with / or holds control bytes");
        }
        for (auto h : c.getHeaders()) {
          std::string name = Bytes(h.getName()), value = Bytes(h.getValue());
          if (name.empty() || name.size() > 256 || HasControlBytes(name) ||
              name.find_first_of(" :") != std::string::npos) {
            return absl::InvalidArgumentError("a module call with a malformed header name");
          }
          if (HasControlBytes(value)) {
            return absl::InvalidArgumentError("a module call with control bytes in a header");
          }
          out.call.headers.emplace_back(std::move(name), std::move(value));
        }
        out.call.body = Bytes(c.getBody());
        break;
      }
      default:
        return absl::InvalidArgumentError("a service request of an unknown kind");
    }
  } catch (const kj::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("a malformed service request: ", e.getDescription().cStr()));
  }
  return out;
}

const char* OutcomeName(ServiceAnswer::Outcome outcome) {
  switch (outcome) {
    case ServiceAnswer::Outcome::kOk: return "ok";
    case ServiceAnswer::Outcome::kRefused: return "refused";
    case ServiceAnswer::Outcome::kFailed: return "failed";
    case ServiceAnswer::Outcome::kTimeout: return "timeout";
  }
  return "failed";
}

ServiceAnswer FailedAnswer(ServiceAnswer::Outcome outcome, std::string message) {
  ServiceAnswer a;
  a.outcome = outcome;
  a.message = std::move(message);
  return a;
}

uint64_t AnswerBytes(const ServiceAnswer& answer) {
  if (answer.outcome != ServiceAnswer::Outcome::kOk) return 0;
  if (answer.is_redis) return ValueBytes(answer.redis);
  uint64_t n = answer.call.body.size();
  for (const auto& [name, value] : answer.call.headers) n += name.size() + value.size();
  return n;
}

kj::Array<capnp::word> EncodeServiceReply(const ServiceAnswer& answer) {
  capnp::MallocMessageBuilder message;
  auto r = message.initRoot<call::ServiceReply>();
  if (answer.outcome != ServiceAnswer::Outcome::kOk) {
    r.setFailed(answer.message);
  } else if (answer.is_redis) {
    FillValue(r.initRedis(), answer.redis);
  } else {
    auto c = r.initCall();
    c.setStatus(answer.call.status);
    auto hs = c.initHeaders(static_cast<unsigned>(answer.call.headers.size()));
    for (unsigned i = 0; i < hs.size(); ++i) {
      hs[i].setName(answer.call.headers[i].first);
      hs[i].setValue(answer.call.headers[i].second);
    }
    c.setBody(kj::arrayPtr(reinterpret_cast<const kj::byte*>(answer.call.body.data()),
                           answer.call.body.size()));
  }
  return capnp::messageToFlatArray(message);
}

}  // namespace mp::host
