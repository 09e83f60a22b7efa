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

// Views into storage the caller owns (see ContextCodec::decode).
struct ContextTurn {
  std::string_view user;
  std::string_view assistant;
};

class ContextCodec {
 public:
  // Parses `json` into *turns, whose views point into *storage (cleared and
  // refilled; it must outlive them and not change while they are used).
  // One buffer per conversation instead of two strings per turn: a reused
  // buffer makes loading a context allocation-free. Returns false for
  // anything that is not a version-1 context (the caller starts afresh and
  // logs it).
  bool decode(std::string_view json, std::string *storage, std::vector<ContextTurn> *turns);
  // Appends the last `max_turns` of `turns` to *out (cleared first).
  static void encode(const std::vector<ContextTurn> &turns, size_t max_turns, std::string *out);

 private:
  simdjson::dom::parser parser_;
};

}  // namespace cg
