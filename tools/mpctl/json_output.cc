#include "tools/mpctl/json_output.h"

#include <capnp/compat/json.h>
#include <capnp/message.h>

#include <algorithm>
#include <cctype>
#include <vector>

namespace mp::mpctl {
namespace {

void Convert(capnp::DynamicValue::Reader value, capnp::JsonValue::Builder out);

void ConvertStruct(capnp::DynamicStruct::Reader s, capnp::JsonValue::Builder out) {
  std::vector<capnp::StructSchema::Field> fields;
  for (auto f : s.getSchema().getFields()) {
    if (s.has(f, capnp::HasMode::NON_DEFAULT) || !f.getProto().isGroup()) fields.push_back(f);
  }
  // The order the schema's author wrote them in (ordinals only ever grow at the end).
  std::sort(fields.begin(), fields.end(), [](const auto& a, const auto& b) {
    return a.getProto().getCodeOrder() < b.getProto().getCodeOrder();
  });
  auto object = out.initObject(static_cast<unsigned>(fields.size()));
  for (size_t i = 0; i < fields.size(); ++i) {
    object[i].setName(SnakeCase(fields[i].getProto().getName()));
    Convert(s.get(fields[i]), object[i].initValue());
  }
}

void Convert(capnp::DynamicValue::Reader value, capnp::JsonValue::Builder out) {
  switch (value.getType()) {
    case capnp::DynamicValue::BOOL:
      out.setBoolean(value.as<bool>());
      return;
    case capnp::DynamicValue::INT:
      out.setNumber(static_cast<double>(value.as<int64_t>()));
      return;
    case capnp::DynamicValue::UINT:
      out.setNumber(static_cast<double>(value.as<uint64_t>()));
      return;
    case capnp::DynamicValue::FLOAT:
      out.setNumber(value.as<double>());
      return;
    case capnp::DynamicValue::TEXT:
      out.setString(value.as<capnp::Text>());
      return;
    case capnp::DynamicValue::DATA: {
      auto data = value.as<capnp::Data>();
      out.setString(kj::heapString(reinterpret_cast<const char*>(data.begin()), data.size()));
      return;
    }
    case capnp::DynamicValue::LIST: {
      auto list = value.as<capnp::DynamicList>();
      auto array = out.initArray(list.size());
      for (unsigned i = 0; i < list.size(); ++i) Convert(list[i], array[i]);
      return;
    }
    case capnp::DynamicValue::ENUM: {
      KJ_IF_MAYBE(e, value.as<capnp::DynamicEnum>().getEnumerant()) {
        out.setString(e->getProto().getName());
      } else {
        out.setNumber(value.as<capnp::DynamicEnum>().getRaw());
      }
      return;
    }
    case capnp::DynamicValue::STRUCT:
      ConvertStruct(value.as<capnp::DynamicStruct>(), out);
      return;
    default:
      out.setNull();
      return;
  }
}

}  // namespace

std::string SnakeCase(capnp::Text::Reader camel) {
  std::string out;
  for (char c : camel) {
    if (std::isupper(static_cast<unsigned char>(c))) {
      out += '_';
      out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    } else {
      out += c;
    }
  }
  return out;
}

std::string ToJson(capnp::DynamicStruct::Reader message) {
  capnp::MallocMessageBuilder tree;
  auto root = tree.initRoot<capnp::JsonValue>();
  ConvertStruct(message, root);
  capnp::JsonCodec codec;
  return std::string(codec.encodeRaw(root).cStr()) + "\n";
}

}  // namespace mp::mpctl
