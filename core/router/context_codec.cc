#include "router/context_codec.h"

#include "base/json.h"

namespace cg {

bool ContextCodec::decode(std::string_view json, std::string *storage,
                          std::vector<ContextTurn> *turns) {
  turns->clear();
  storage->clear();
  simdjson::dom::element doc;
  if (parser_.parse(json.data(), json.size()).get(doc) != simdjson::SUCCESS) return false;
  int64_t version = 0;
  if (doc["v"].get_int64().get(version) != simdjson::SUCCESS || version != 1) return false;
  simdjson::dom::array arr;
  if (doc["turns"].get_array().get(arr) != simdjson::SUCCESS) return false;
  // Pass 1 checks every turn and sizes the buffer, so pass 2's appends never
  // reallocate under the views already taken.
  size_t total = 0;
  for (simdjson::dom::element t : arr) {
    std::string_view u, a;
    if (t["u"].get_string().get(u) != simdjson::SUCCESS ||
        t["a"].get_string().get(a) != simdjson::SUCCESS) {
      return false;
    }
    total += u.size() + a.size();
  }
  storage->reserve(total);
  for (simdjson::dom::element t : arr) {
    std::string_view u, a;
    if (t["u"].get_string().get(u) != simdjson::SUCCESS ||
        t["a"].get_string().get(a) != simdjson::SUCCESS) {
      return false;  // checked in pass 1; kept so no path reads an unset view
    }
    const size_t at = storage->size();
    storage->append(u).append(a);
    const std::string_view all(*storage);
    turns->push_back({all.substr(at, u.size()), all.substr(at + u.size(), a.size())});
  }
  return true;
}

void ContextCodec::encode(const std::vector<ContextTurn> &turns, size_t max_turns,
                          std::string *out) {
  const size_t first = turns.size() > max_turns ? turns.size() - max_turns : 0;
  out->assign("{\"v\":1,\"turns\":[");
  for (size_t i = first; i < turns.size(); i++) {
    if (i > first) *out += ',';
    *out += "{\"u\":";
    json_append_string(*out, turns[i].user);
    *out += ",\"a\":";
    json_append_string(*out, turns[i].assistant);
    *out += '}';
  }
  *out += "]}";
}

}  // namespace cg
