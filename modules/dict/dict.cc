// dict: autocomplete and spelling suggestions over a word list (/usr/share/dict/words).
//
// Build (builder process): build_index.cc turns data file "words" (+ option synthetic_mb)
// into one sorted, deduplicated word array in the heap (dict_index.h).
// Handle (sandboxed microprocess): answers from the sealed heap, read-only; it only computes
// and allocates with malloc, as the seccomp policy allows. Routes (path after /m/dict):
//   GET /prefix?q=ab&limit=10   the first `limit` words starting with q, in byte-wise order
//   GET /lookup?w=word          found (200) or not (404)
//   GET /suggest?w=wrod&limit=10 words within edit distance 2, best first (suggest.h)
//   GET /stats                  number of words and their total bytes
// Matching is byte-wise and case-sensitive; parameter values are percent-decoded ('+' is a
// space). Every answer is JSON (application/json), errors included: {"error":"..."}.
#include <string>
#include <string_view>

#include "build_index.h"
#include "dict_index.h"
#include "json.h"
#include "mp/module.hpp"
#include "query.h"
#include "suggest.h"

namespace mp::dict {
namespace {

constexpr std::string_view kRoutes = "/prefix /lookup /suggest /stats";

void Send(Reply& reply, int status, const std::string& body) {
  reply.SetStatus(status);
  reply.AddHeader("Content-Type", "application/json");
  reply.Write(body);
}

void SendError(Reply& reply, int status, std::string_view message) {
  Send(reply, status, JsonError(message));
}

// The percent-decoded parameter `key`: nullopt if absent. Answers 400 and sets `failed` if the
// encoding is bad.
std::optional<std::string> Param(const Call& call, Reply& reply, std::string_view key,
                                 bool& failed) {
  const std::optional<std::string_view> raw = call.QueryParam(key);
  if (!raw) return std::nullopt;
  std::optional<std::string> value = PercentDecode(*raw);
  if (!value) {
    SendError(reply, 400,
              "dict: parameter '" + std::string(key) + "' has a bad percent-encoding (use %XX)");
    failed = true;
  }
  return value;
}

// The required parameter `key`, or nullopt after answering 400.
std::optional<std::string> RequiredParam(const Call& call, Reply& reply, std::string_view key) {
  bool failed = false;
  std::optional<std::string> value = Param(call, reply, key, failed);
  if (!value && !failed) {
    SendError(reply, 400, "dict: missing parameter '" + std::string(key) + "'");
  }
  return value;
}

// The `limit` parameter, or nullopt after answering 400.
std::optional<size_t> LimitParam(const Call& call, Reply& reply) {
  bool failed = false;
  std::optional<std::string> raw = Param(call, reply, "limit", failed);
  if (failed) return std::nullopt;
  std::optional<size_t> limit = ParseLimit(raw);
  if (!limit) {
    SendError(reply, 400,
              "dict: parameter 'limit' must be a whole number (at most " +
                  std::to_string(kMaxLimit) + " words are returned)");
  }
  return limit;
}

void HandlePrefix(const WordTable& words, const Call& call, Reply& reply) {
  const std::optional<std::string> q = RequiredParam(call, reply, "q");
  if (!q) return;
  const std::optional<size_t> limit = LimitParam(call, reply);
  if (!limit) return;
  std::string body = "{\"q\":";
  AppendJsonString(body, *q);
  body += ",\"words\":[";
  uint64_t i = words.LowerBound(*q);
  for (size_t n = 0; n < *limit && i < words.size(); ++n, ++i) {
    const std::string_view w = words.word(i);
    if (!w.starts_with(*q)) break;
    if (n > 0) body += ',';
    AppendJsonString(body, w);
  }
  body += "]}";
  Send(reply, 200, body);
}

void HandleLookup(const WordTable& words, const Call& call, Reply& reply) {
  const std::optional<std::string> w = RequiredParam(call, reply, "w");
  if (!w) return;
  const bool found = words.Contains(*w);
  std::string body = "{\"w\":";
  AppendJsonString(body, *w);
  body += found ? ",\"found\":true}" : ",\"found\":false}";
  Send(reply, found ? 200 : 404, body);
}

void HandleSuggest(const WordTable& words, const Call& call, Reply& reply) {
  const std::optional<std::string> w = RequiredParam(call, reply, "w");
  if (!w) return;
  const std::optional<size_t> limit = LimitParam(call, reply);
  if (!limit) return;
  if (w->size() > kMaxSuggestQueryBytes) {
    SendError(reply, 400,
              "dict: parameter 'w' is longer than " + std::to_string(kMaxSuggestQueryBytes) +
                  " bytes; /suggest does not search for it");
    return;
  }
  std::string body = "{\"w\":";
  AppendJsonString(body, *w);
  body += ",\"suggestions\":[";
  bool first = true;
  for (const Suggestion& s : Suggest(words, *w, *limit)) {
    if (!first) body += ',';
    first = false;
    body += "{\"word\":";
    AppendJsonString(body, words.word(s.word));
    body += ",\"distance\":";
    body += std::to_string(s.distance);
    body += '}';
  }
  body += "]}";
  Send(reply, 200, body);
}

void HandleStats(const WordTable& words, Reply& reply) {
  Send(reply, 200,
       "{\"words\":" + std::to_string(words.size()) +
           ",\"bytes\":" + std::to_string(words.bytes()) + "}");
}

struct Dict {
  static void Build(HeapBuilder& heap) { BuildIndex(heap); }

  static void Handle(const Heap& heap, const Call& call, Reply& reply) {
    const DictIndex* index = heap.Find<DictIndex>(kRootName);
    const std::optional<WordTable> words =
        index != nullptr ? WordTable::Open(*index) : std::nullopt;
    if (!words) {
      SendError(reply, 500,
                "dict: the heap has no valid 'dict' root (layout version " +
                    std::to_string(kLayoutVersion) + " expected); rebuild it");
      return;
    }
    const std::string_view path = call.path();
    const bool known =
        path == "/prefix" || path == "/lookup" || path == "/suggest" || path == "/stats";
    if (!known) {
      SendError(reply, 404,
                "dict: no route " + std::string(path) + "; routes: " + std::string(kRoutes));
      return;
    }
    if (call.method() != "GET" && call.method() != "HEAD") {
      reply.AddHeader("Allow", "GET, HEAD");
      SendError(reply, 405,
                "dict: " + std::string(path) + " answers GET, not " + std::string(call.method()));
      return;
    }
    if (path == "/prefix") {
      HandlePrefix(*words, call, reply);
    } else if (path == "/lookup") {
      HandleLookup(*words, call, reply);
    } else if (path == "/suggest") {
      HandleSuggest(*words, call, reply);
    } else {
      HandleStats(*words, reply);
    }
  }
};

}  // namespace
}  // namespace mp::dict

MP_MODULE(mp::dict::Dict, "dict", "1.0.0")
