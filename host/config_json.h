// Reading the config file: a strict JSON parser that remembers where every value is, and a
// decoder that fills a Cap'n Proto message of schemas/config.capnp from it by reflection.
// Errors name the JSON path and the line: "modules[1].workers: expected a whole number from 1
// to 256, got -1 (line 7)". Duplicate keys, unknown fields and values of the wrong type (a
// string where a number goes) are refused; nothing is coerced.
#pragma once

#include <capnp/dynamic.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mp::host {

struct JsonMember;

struct JsonNode {
  enum class Kind { kNull, kBool, kNumber, kString, kArray, kObject };
  Kind kind = Kind::kNull;
  int line = 0;
  bool boolean = false;
  double number = 0;
  std::string text;          // kString; kNumber: the literal as written
  std::vector<JsonNode> items;                            // kArray
  std::vector<JsonMember> members;  // kObject, in file order
};

// One "key": value of an object. (Not a std::pair: a pair of an incomplete JsonNode is not
// allowed, and clang's libstdc++ checks say so.)
struct JsonMember {
  std::string key;
  JsonNode value;
};

// Parses `text` (RFC 8259, nesting at most 32 deep). Refuses trailing data and duplicate keys,
// naming the line.
absl::StatusOr<JsonNode> ParseJson(absl::string_view text);

// Where each decoded value was: JSON path ("modules[1].workers") → line.
using JsonLines = std::map<std::string, int>;

// Fills `out` from `node`, field by field by the schema's (camelCase) names. A field of type
// List(Option) — {key, value} pairs — is written in JSON as an object {"key": value, ...} whose
// values may be strings, numbers or booleans. Records each value's line in `*lines`.
absl::Status DecodeJson(const JsonNode& node, capnp::DynamicStruct::Builder out,
                        JsonLines* lines, const std::string& path = "");

}  // namespace mp::host
