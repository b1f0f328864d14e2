// mpctl's --json: any answer of the control schema as one line of JSON, from the schema itself
// (Cap'n Proto reflection) and encoded by Cap'n Proto's JSON codec. Field names are the
// schema's in snake_case, in the order the schema lists them; integers are numbers (exact up
// to 2^53, beyond any count or size the host reports); Data fields are text.
#pragma once

#include <capnp/dynamic.h>

#include <string>

namespace mp::mpctl {

std::string ToJson(capnp::DynamicStruct::Reader message);

// "heapPrivatizedBytes" → "heap_privatized_bytes".
std::string SnakeCase(capnp::Text::Reader camel);

}  // namespace mp::mpctl
