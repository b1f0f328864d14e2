#include "host/config_json.h"

#include <cmath>
#include <cstdlib>
#include <limits>
#include <set>

#include "absl/strings/str_cat.h"
#include "host/cli.h"
#include "mp/utf8.hpp"

namespace mp::host {
namespace {

class Parser {
 public:
  explicit Parser(absl::string_view text) : text_(text) {}

  absl::StatusOr<JsonNode> Document() {
    JsonNode node;
    if (auto s = Value(&node, 0); !s.ok()) return s;
    SkipSpace();
    if (pos_ != text_.size()) return Error("unexpected text after the JSON value");
    return node;
  }

 private:
  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("not valid JSON: ", what, " (line ", line_, ")"));
  }

  void SkipSpace() {
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (c == '\n') ++line_;
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') return;
      ++pos_;
    }
  }

  bool Consume(absl::string_view word) {
    if (text_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }

  absl::Status Value(JsonNode* node, int depth) {
    if (depth > 32) return Error("nested more than 32 deep");
    SkipSpace();
    node->line = line_;
    if (pos_ >= text_.size()) return Error("a value is missing");
    const char c = text_[pos_];
    if (c == '{') return Object(node, depth);
    if (c == '[') return Array(node, depth);
    if (c == '"') {
      node->kind = JsonNode::Kind::kString;
      return String(&node->text);
    }
    if (Consume("true")) {
      node->kind = JsonNode::Kind::kBool;
      node->boolean = true;
      return absl::OkStatus();
    }
    if (Consume("false")) {
      node->kind = JsonNode::Kind::kBool;
      return absl::OkStatus();
    }
    if (Consume("null")) return absl::OkStatus();
    if (c == '-' || (c >= '0' && c <= '9')) return Number(node);
    return Error(absl::StrCat("unexpected character '", std::string(1, c), "'"));
  }

  absl::Status Number(JsonNode* node) {
    const size_t start = pos_;
    if (text_[pos_] == '-') ++pos_;
    auto digits = [&] {
      const size_t from = pos_;
      while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') ++pos_;
      return pos_ > from;
    };
    if (pos_ < text_.size() && text_[pos_] == '0') {
      ++pos_;
    } else if (!digits()) {
      return Error("a malformed number");
    }
    if (pos_ < text_.size() && text_[pos_] == '.') {
      ++pos_;
      if (!digits()) return Error("a malformed number");
    }
    if (pos_ < text_.size() && (text_[pos_] == 'e' || text_[pos_] == 'E')) {
      ++pos_;
      if (pos_ < text_.size() && (text_[pos_] == '+' || text_[pos_] == '-')) ++pos_;
      if (!digits()) return Error("a malformed number");
    }
    node->kind = JsonNode::Kind::kNumber;
    node->text = std::string(text_.substr(start, pos_ - start));
    node->number = std::strtod(node->text.c_str(), nullptr);
    return absl::OkStatus();
  }

  absl::Status String(std::string* out) {
    ++pos_;  // the opening quote
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (c == '"') {
        ++pos_;
        if (!IsValidUtf8(*out)) return Error("a string that is not UTF-8");
        return absl::OkStatus();
      }
      if (static_cast<unsigned char>(c) < 0x20) return Error("a control character in a string");
      if (c != '\\') {
        out->push_back(c);
        ++pos_;
        continue;
      }
      if (++pos_ >= text_.size()) break;
      const char e = text_[pos_++];
      switch (e) {
        case '"': out->push_back('"'); break;
        case '\\': out->push_back('\\'); break;
        case '/': out->push_back('/'); break;
        case 'b': out->push_back('\b'); break;
        case 'f': out->push_back('\f'); break;
        case 'n': out->push_back('\n'); break;
        case 'r': out->push_back('\r'); break;
        case 't': out->push_back('\t'); break;
        case 'u': {
          uint32_t cp = 0;
          if (!Hex4(&cp)) return Error("a malformed \\u escape");
          if (cp >= 0xD800 && cp <= 0xDBFF) {  // a surrogate pair
            uint32_t low = 0;
            if (!Consume("\\u") || !Hex4(&low) || low < 0xDC00 || low > 0xDFFF) {
              return Error("an unpaired surrogate in a \\u escape");
            }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            return Error("an unpaired surrogate in a \\u escape");
          }
          AppendUtf8(cp, out);
          break;
        }
        default:
          return Error(absl::StrCat("an unknown escape '\\", std::string(1, e), "'"));
      }
    }
    return Error("a string that does not end");
  }

  bool Hex4(uint32_t* out) {
    if (pos_ + 4 > text_.size()) return false;
    for (int i = 0; i < 4; ++i) {
      const char h = text_[pos_++];
      *out <<= 4;
      if (h >= '0' && h <= '9') {
        *out |= static_cast<uint32_t>(h - '0');
      } else if (h >= 'a' && h <= 'f') {
        *out |= static_cast<uint32_t>(h - 'a' + 10);
      } else if (h >= 'A' && h <= 'F') {
        *out |= static_cast<uint32_t>(h - 'A' + 10);
      } else {
        return false;
      }
    }
    return true;
  }

  static void AppendUtf8(uint32_t cp, std::string* out) {
    if (cp < 0x80) {
      out->push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  absl::Status Array(JsonNode* node, int depth) {
    node->kind = JsonNode::Kind::kArray;
    ++pos_;
    SkipSpace();
    if (Consume("]")) return absl::OkStatus();
    for (;;) {
      JsonNode item;
      if (auto s = Value(&item, depth + 1); !s.ok()) return s;
      node->items.push_back(std::move(item));
      SkipSpace();
      if (Consume("]")) return absl::OkStatus();
      if (!Consume(",")) return Error("expected ',' or ']' in an array");
    }
  }

  absl::Status Object(JsonNode* node, int depth) {
    node->kind = JsonNode::Kind::kObject;
    ++pos_;
    SkipSpace();
    if (Consume("}")) return absl::OkStatus();
    std::set<std::string> keys;
    for (;;) {
      SkipSpace();
      if (pos_ >= text_.size() || text_[pos_] != '"') return Error("expected a \"key\"");
      const int key_line = line_;
      std::string key;
      if (auto s = String(&key); !s.ok()) return s;
      if (!keys.insert(key).second) {
        return absl::InvalidArgumentError(
            absl::StrCat("key \"", key, "\" appears twice in one object (line ", key_line, ")"));
      }
      SkipSpace();
      if (!Consume(":")) return Error(absl::StrCat("expected ':' after \"", key, "\""));
      JsonNode value;
      if (auto s = Value(&value, depth + 1); !s.ok()) return s;
      node->members.push_back(JsonMember{std::move(key), std::move(value)});
      SkipSpace();
      if (Consume("}")) return absl::OkStatus();
      if (!Consume(",")) return Error("expected ',' or '}' in an object");
    }
  }

  absl::string_view text_;
  size_t pos_ = 0;
  int line_ = 1;
};

const char* KindName(JsonNode::Kind k) {
  switch (k) {
    case JsonNode::Kind::kNull: return "null";
    case JsonNode::Kind::kBool: return "a boolean";
    case JsonNode::Kind::kNumber: return "a number";
    case JsonNode::Kind::kString: return "a string";
    case JsonNode::Kind::kArray: return "an array";
    case JsonNode::Kind::kObject: return "an object";
  }
  return "a value";
}

std::string Shown(const JsonNode& n) {
  switch (n.kind) {
    case JsonNode::Kind::kNumber: return n.text;
    case JsonNode::Kind::kString: return absl::StrCat("\"", n.text.substr(0, 40), "\"");
    case JsonNode::Kind::kBool: return n.boolean ? "true" : "false";
    default: return KindName(n.kind);
  }
}

absl::Status At(const std::string& path, const JsonNode& n, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", problem, " (line ", n.line, ")"));
}

bool IsOptionList(capnp::Type type) {
  if (!type.isList()) return false;
  auto element = type.asList().getElementType();
  if (!element.isStruct()) return false;
  auto fields = element.asStruct().getFields();
  return fields.size() == 2 && fields[0].getProto().getName() == "key" &&
         fields[1].getProto().getName() == "value";
}

// A list of structs whose first field is `name`, written in JSON as an object keyed by the
// names: a module's "services" (the modules list stays an array, as documented).
bool IsNamedList(capnp::Type type, capnp::StructSchema::Field field) {
  if (field.getProto().getName() != "services" || !type.isList()) return false;
  auto element = type.asList().getElementType();
  if (!element.isStruct()) return false;
  auto fields = element.asStruct().getFields();
  return fields.size() > 1 && fields[0].getProto().getName() == "name" &&
         fields[0].getType().isText();
}

// A whole number in [lo, hi], or an error naming the range.
absl::StatusOr<int64_t> Whole(const std::string& path, const JsonNode& n, double lo, double hi) {
  if (n.kind != JsonNode::Kind::kNumber || n.number != std::floor(n.number) ||
      n.text.find_first_of(".eE") != std::string::npos || n.number < lo || n.number > hi) {
    return At(path, n, absl::StrCat("expected a whole number from ", static_cast<int64_t>(lo),
                                     " to ", static_cast<uint64_t>(hi), ", got ", Shown(n)));
  }
  return static_cast<int64_t>(n.number);
}

absl::Status SetField(const JsonNode& n, capnp::DynamicStruct::Builder out,
                      capnp::StructSchema::Field field, const std::string& path,
                      JsonLines* lines);

}  // namespace

absl::StatusOr<JsonNode> ParseJson(absl::string_view text) { return Parser(text).Document(); }

namespace {

absl::Status SetField(const JsonNode& n, capnp::DynamicStruct::Builder out,
                      capnp::StructSchema::Field field, const std::string& path,
                      JsonLines* lines) {
  (*lines)[path] = n.line;
  const capnp::Type type = field.getType();
  switch (type.which()) {
    case capnp::schema::Type::BOOL:
      if (n.kind != JsonNode::Kind::kBool) {
        return At(path, n, absl::StrCat("expected true or false, got ", Shown(n)));
      }
      out.set(field, n.boolean);
      return absl::OkStatus();
    case capnp::schema::Type::UINT16: {
      auto v = Whole(path, n, 0, 65535);
      if (!v.ok()) return v.status();
      out.set(field, static_cast<uint16_t>(*v));
      return absl::OkStatus();
    }
    case capnp::schema::Type::UINT32: {
      auto v = Whole(path, n, 0, 4294967295.0);
      if (!v.ok()) return v.status();
      out.set(field, static_cast<uint32_t>(*v));
      return absl::OkStatus();
    }
    case capnp::schema::Type::INT32: {
      auto v = Whole(path, n, -2147483648.0, 2147483647.0);
      if (!v.ok()) return v.status();
      out.set(field, static_cast<int32_t>(*v));
      return absl::OkStatus();
    }
    case capnp::schema::Type::TEXT:
      if (n.kind != JsonNode::Kind::kString) {
        return At(path, n, absl::StrCat("expected a string, got ", Shown(n)));
      }
      out.set(field, capnp::Text::Reader(n.text.c_str(), n.text.size()));
      return absl::OkStatus();
    case capnp::schema::Type::STRUCT:
      if (n.kind != JsonNode::Kind::kObject) {
        return At(path, n, absl::StrCat("expected an object, got ", Shown(n)));
      }
      return DecodeJson(n, out.init(field).as<capnp::DynamicStruct>(), lines, path);
    case capnp::schema::Type::LIST: {
      if (IsOptionList(type)) {
        // {"key": value, ...}
        if (n.kind != JsonNode::Kind::kObject) {
          return At(path, n, absl::StrCat("expected an object of \"name\": value, got ", Shown(n)));
        }
        auto list = out.init(field, static_cast<unsigned>(n.members.size())).as<capnp::DynamicList>();
        for (size_t i = 0; i < n.members.size(); ++i) {
          const auto& [key, value] = n.members[i];
          const std::string at = absl::StrCat(path, ".", key);
          (*lines)[at] = value.line;
          std::string text;
          if (value.kind == JsonNode::Kind::kString || value.kind == JsonNode::Kind::kNumber) {
            text = value.text;
          } else if (value.kind == JsonNode::Kind::kBool) {
            text = value.boolean ? "true" : "false";
          } else {
            return At(at, value, absl::StrCat("expected a string, number or boolean, got ", Shown(value)));
          }
          auto entry = list[static_cast<unsigned>(i)].as<capnp::DynamicStruct>();
          entry.set("key", capnp::Text::Reader(key.c_str(), key.size()));
          entry.set("value", capnp::Text::Reader(text.c_str(), text.size()));
        }
        return absl::OkStatus();
      }
      auto element = type.asList().getElementType();
      if (IsNamedList(type, field) && n.kind == JsonNode::Kind::kObject) {
        // {"<name>": {fields but name}, ...}
        auto list = out.init(field, static_cast<unsigned>(n.members.size())).as<capnp::DynamicList>();
        for (size_t i = 0; i < n.members.size(); ++i) {
          const auto& [key, value] = n.members[i];
          const std::string at = absl::StrCat(path, ".", key);
          (*lines)[at] = value.line;
          if (value.kind != JsonNode::Kind::kObject) {
            return At(at, value, absl::StrCat("expected an object, got ", Shown(value)));
          }
          for (const auto& member : value.members) {
            if (member.key == "name") return At(at + ".name", member.value, "the name is the key");
          }
          auto entry = list[static_cast<unsigned>(i)].as<capnp::DynamicStruct>();
          entry.set("name", capnp::Text::Reader(key.c_str(), key.size()));
          if (auto st = DecodeJson(value, entry, lines, at); !st.ok()) return st;
        }
        return absl::OkStatus();
      }
      if (n.kind != JsonNode::Kind::kArray) {
        return At(path, n, absl::StrCat("expected an array, got ", Shown(n)));
      }
      auto list = out.init(field, static_cast<unsigned>(n.items.size())).as<capnp::DynamicList>();
      for (size_t i = 0; i < n.items.size(); ++i) {
        const std::string at = absl::StrCat(path, "[", i, "]");
        const JsonNode& item = n.items[i];
        (*lines)[at] = item.line;
        if (element.isStruct()) {
          if (item.kind != JsonNode::Kind::kObject) {
            return At(at, item, absl::StrCat("expected an object, got ", Shown(item)));
          }
          if (auto s = DecodeJson(item, list[static_cast<unsigned>(i)].as<capnp::DynamicStruct>(), lines, at); !s.ok()) {
            return s;
          }
        } else if (element.isText()) {
          if (item.kind != JsonNode::Kind::kString) {
            return At(at, item, absl::StrCat("expected a string, got ", Shown(item)));
          }
          list.set(static_cast<unsigned>(i), capnp::Text::Reader(item.text.c_str(), item.text.size()));
        } else {
          return At(at, item, "this list's element type is not supported in a config");
        }
      }
      return absl::OkStatus();
    }
    default:
      return At(path, n, "this field's type is not supported in a config");
  }
}

}  // namespace

absl::Status DecodeJson(const JsonNode& node, capnp::DynamicStruct::Builder out,
                        JsonLines* lines, const std::string& path) {
  if (node.kind != JsonNode::Kind::kObject) {
    return At(path.empty() ? "the config" : path, node,
              absl::StrCat("expected an object, got ", Shown(node)));
  }
  const capnp::StructSchema schema = out.getSchema();
  for (const auto& [key, value] : node.members) {
    const std::string at = path.empty() ? key : absl::StrCat(path, ".", key);
    KJ_IF_MAYBE(field, schema.findFieldByName(kj::StringPtr(key.c_str()))) {
      if (auto s = SetField(value, out, *field, at, lines); !s.ok()) return s;
    } else {
      std::vector<std::string> known;
      for (auto f : schema.getFields()) known.emplace_back(f.getProto().getName().cStr());
      const std::string near = Nearest(key, known);
      return At(at, value, near.empty() ? std::string("unknown field")
                                        : absl::StrCat("unknown field; did you mean '", near, "'?"));
    }
  }
  return absl::OkStatus();
}

}  // namespace mp::host
