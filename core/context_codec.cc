#include "context_codec.h"

#include "json.h"

namespace cg {

bool ContextCodec::decode(std::string_view json, std::vector<ContextTurn> *turns) {
  turns->clear();
  simdjson::dom::element doc;
  if (parser_.parse(json.data(), json.size()).get(doc) != simdjson::SUCCESS) return false;
  int64_t version = 0;
  if (doc["v"].get_int64().get(version) != simdjson::SUCCESS || version != 1) return false;
  simdjson::dom::array arr;
  if (doc["turns"].get_array().get(arr) != simdjson::SUCCESS) return false;
  for (simdjson::dom::element t : arr) {
    std::string_view u, a;
    if (t["u"].get_string().get(u) != simdjson::SUCCESS ||
        t["a"].get_string().get(a) != simdjson::SUCCESS) {
      turns->clear();
      return false;
    }
    turns->push_back({std::string(u), std::string(a)});
  }
  return true;
}

std::string ContextCodec::encode(const std::vector<ContextTurn> &turns, size_t max_turns) {
  const size_t first = turns.size() > max_turns ? turns.size() - max_turns : 0;
  std::string out = "{\"v\":1,\"turns\":[";
  for (size_t i = first; i < turns.size(); i++) {
    if (i > first) out += ',';
    out += "{\"u\":";
    json_append_string(out, turns[i].user);
    out += ",\"a\":";
    json_append_string(out, turns[i].assistant);
    out += '}';
  }
  out += "]}";
  return out;
}

}  // namespace cg
