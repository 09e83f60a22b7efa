// A conversation's context as stored in the cache: the last N turns, each a
// user message and the assistant's answer, as compact JSON
// {"v":1,"turns":[{"u":"...","a":"..."}]}.
//
// THREAD: not thread-safe (the decoder keeps a reusable parser).
#pragma once

#include <simdjson.h>

#include <string>
#include <string_view>
#include <vector>

namespace cg {

struct ContextTurn {
  std::string user;
  std::string assistant;
};

class ContextCodec {
 public:
  // Parses `json` into *turns. Returns false for anything that is not a
  // version-1 context (the caller starts afresh and logs it).
  bool decode(std::string_view json, std::vector<ContextTurn> *turns);
  // Encodes the last `max_turns` of `turns`.
  static std::string encode(const std::vector<ContextTurn> &turns, size_t max_turns);

 private:
  simdjson::dom::parser parser_;
};

}  // namespace cg
