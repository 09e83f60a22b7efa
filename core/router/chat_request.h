// The body of POST /api/chat (and the admin page's chat): parsed and
// checked apart from the HTTP exchange, so it can be tested and fuzzed on
// its own.
//
// THREAD: not thread-safe (the parser is the caller's).
#pragma once

#include <simdjson.h>

#include <string>
#include <string_view>

namespace cg {

// Views into the parser's document: valid until it parses again.
struct ChatRequest {
  std::string_view user_id, query, conversation_id, message_id;
  bool stream = false;
};

// "" with *out filled, or the message for a 400 ("body is not valid JSON",
// "\"userId\" is required and must be a non-empty string", ...).
std::string chat_request_parse(simdjson::dom::parser &parser, std::string_view body,
                               ChatRequest *out);

}  // namespace cg
