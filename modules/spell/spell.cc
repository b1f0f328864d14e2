// spell: checks the words of a text, with two services the host brokers (docs/services.md):
// `words`, the dict module, which knows the words and suggests others; and `cache`, a Redis
// where what dict said about each word is kept for `ttlSeconds`.
//
//   GET  /check?text=Teh+quick+brwn+fox   or   POST /check with the text as the body
//   -> {"words":4,"unknown":[{"word":"teh","suggestions":["the","tea","ten"]},...],
//       "cache":{"hits":2,"misses":2}}
//
// The cache is an optimisation: when Redis is down or refuses, the answer is still computed
// from dict, and says "cache":{"error":"..."}. When dict fails, the answer is a 502 naming it.
// Words are runs of ASCII letters, lower-cased; the first 24 distinct ones are checked (each
// costs at most three service requests, under the host's default maxRequests of 100).
#include <algorithm>
#include <cctype>
#include <stdexcept>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "mp/module.hpp"

namespace {

constexpr size_t kMaxWords = 24;
constexpr std::string_view kKeyPrefix = "spell:w:";

struct Settings {
  uint32_t ttl_seconds;
  uint32_t suggestions;
};

void AppendJson(std::string& out, std::string_view s) {
  out += '"';
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      static const char kHex[] = "0123456789abcdef";
      out += "\\u00";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  out += '"';
}

// Percent-decoding of a query value ('+' is a space).
std::string Decode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
               std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

// The distinct words of `text`, in order of appearance.
std::vector<std::string> Words(std::string_view text) {
  std::vector<std::string> words;
  std::string w;
  auto flush = [&] {
    if (!w.empty() && w.size() <= 64 && words.size() < kMaxWords &&
        std::find(words.begin(), words.end(), w) == words.end()) {
      words.push_back(w);
    }
    w.clear();
  };
  for (unsigned char c : text) {
    if (std::isalpha(c) && c < 0x80) {
      w += static_cast<char>(std::tolower(c));
    } else {
      flush();
    }
  }
  flush();
  return words;
}

// The "word" values of dict's /suggest answer.
std::vector<std::string> SuggestedWords(std::string_view json) {
  std::vector<std::string> out;
  constexpr std::string_view kField = "\"word\":\"";
  for (size_t at = json.find(kField); at != std::string_view::npos; at = json.find(kField, at)) {
    at += kField.size();
    const size_t end = json.find('"', at);
    if (end == std::string_view::npos) break;
    out.emplace_back(json.substr(at, end - at));
    at = end;
  }
  return out;
}

struct Spell {
  static void Build(mp::HeapBuilder& heap) {
    auto number = [&](const char* key, uint32_t fallback) -> uint32_t {
      auto v = heap.Option(key);
      if (!v) return fallback;
      const std::string s(*v);
      if (s.empty() || s.size() > 9 || s.find_first_not_of("0123456789") != std::string::npos) {
        throw std::invalid_argument(std::string("option '") + key + "' must be a whole number, got '" + s + "'");
      }
      return static_cast<uint32_t>(std::stoul(s));
    };
    heap.Construct<Settings>("settings", Settings{number("ttlSeconds", 300), number("suggestions", 3)});
  }

  static void Handle(const mp::Heap& heap, const mp::Call& call, mp::Reply& reply) {
    reply.AddHeader("Content-Type", "application/json");
    const Settings* settings = heap.Find<Settings>("settings");
    if (settings == nullptr || call.path() != "/check") {
      reply.SetStatus(404);
      reply.Write("{\"error\":\"spell: the route is GET /check?text=... or POST /check\"}\n");
      return;
    }
    std::string text;
    if (call.method() == "POST") {
      text = std::string(call.body());
    } else if (auto t = call.QueryParam("text")) {
      text = Decode(*t);
    }
    const std::vector<std::string> words = Words(text);
    const mp::Services services = call.services();

    // 1. What the cache knows: one MGET for every word.
    std::map<std::string, std::string> known;  // word -> "" (a word) or its suggestions, joined
    std::string cache_error;
    size_t hits = 0;
    if (!words.empty()) {
      std::vector<std::string> keys;
      for (const auto& w : words) keys.push_back(std::string(kKeyPrefix) + w);
      std::vector<std::string_view> args{"MGET"};
      for (const auto& k : keys) args.push_back(k);
      auto cached = services.RedisArgv("cache", args);
      if (!cached) {
        cache_error = cached.error();
      } else if (cached->type() == MP_VALUE_ERROR) {
        cache_error = cached->str();
      } else if (cached->type() == MP_VALUE_ARRAY) {
        for (size_t i = 0; i < cached->size() && i < words.size(); ++i) {
          mp::Value v = (*cached)[i];
          if (v.type() != MP_VALUE_STRING) continue;
          std::string_view s = v.str();
          if (s.empty() || s[0] != '=') continue;  // "=" + suggestions joined by ","
          known[words[i]] = std::string(s.substr(1));
          ++hits;
        }
      }
    }

    // 2. The rest, from dict; each answer goes to the cache.
    for (const std::string& w : words) {
      if (known.count(w)) continue;
      auto lookup = services.CallModule("words", "GET", "/lookup", "w=" + w);
      if (!lookup || (lookup->status() != 200 && lookup->status() != 404)) {
        reply.SetStatus(502);
        std::string body = "{\"error\":";
        AppendJson(body, "spell: dict could not check '" + w + "': " +
                             (lookup ? "status " + std::to_string(lookup->status())
                                     : std::string(lookup.error())));
        reply.Write(body + "}\n");
        return;
      }
      std::string suggestions;
      if (lookup->status() == 404) {
        auto suggest = services.CallModule(
            "words", "GET", "/suggest", "w=" + w + "&limit=" + std::to_string(settings->suggestions));
        if (suggest && suggest->status() == 200) {
          for (const std::string& s : SuggestedWords(suggest->body())) {
            suggestions += (suggestions.empty() ? "" : ",") + s;
          }
        }
        if (suggestions.empty()) suggestions = "-";  // unknown, and nothing near
      }
      known[w] = suggestions;
      if (cache_error.empty()) {
        const std::string key = std::string(kKeyPrefix) + w;
        const std::string value = "=" + suggestions;
        const std::string ttl = std::to_string(settings->ttl_seconds);
        auto stored = services.Redis("cache", {"SET", key, value, "EX", ttl});
        if (!stored) cache_error = stored.error();
      }
    }

    // 3. The answer.
    std::string body = "{\"words\":" + std::to_string(words.size()) + ",\"unknown\":[";
    bool first = true;
    for (const std::string& w : words) {
      const std::string& s = known[w];
      if (s.empty()) continue;  // a word
      body += first ? "" : ",";
      first = false;
      body += "{\"word\":";
      AppendJson(body, w);
      body += ",\"suggestions\":[";
      if (s != "-") {
        size_t start = 0;
        for (bool more = true; more;) {
          const size_t comma = s.find(',', start);
          more = comma != std::string::npos;
          if (start) body += ',';
          AppendJson(body, s.substr(start, more ? comma - start : std::string::npos));
          start = comma + 1;
        }
      }
      body += "]}";
    }
    body += "],\"cache\":{";
    if (cache_error.empty()) {
      body += "\"hits\":" + std::to_string(hits) + ",\"misses\":" + std::to_string(words.size() - hits);
    } else {
      body += "\"error\":";
      AppendJson(body, cache_error);
    }
    body += "}}\n";
    reply.Write(body);
  }
};

}  // namespace

MP_MODULE(Spell, "spell", "1.0.0")
