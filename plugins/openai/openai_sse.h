// The answer of an OpenAI-compatible service: server-sent events split
// into `data:` payloads and each payload's content deltas, or one whole
// chat.completion JSON body. Apart from the plugin so it can be tested and
// fuzzed on its own.
//
// THREAD: not thread-safe.
#pragma once

#include <simdjson.h>

#include <functional>
#include <string>
#include <string_view>

namespace cg::openai {

// Collects bytes as they arrive and hands out each complete `data:` line
// (a trailing CR and the one optional space after the colon removed).
// Other fields (event:, id:, comments) are skipped: the chat completions
// stream uses data lines only.
class SseLines {
 public:
  void feed(std::string_view chunk, const std::function<void(std::string_view)> &on_data);
  void clear() { buf_.clear(); }

 private:
  std::string buf_;
};

// One payload: "[DONE]" ends the stream; otherwise the text pieces of
// choices[].delta.content, in order. A payload that is no JSON, or has no
// choices, gives nothing (some services send keep-alive payloads).
struct SseDelta {
  bool done = false;
};
SseDelta sse_delta_parse(simdjson::dom::parser &parser, std::string_view data,
                         const std::function<void(std::string_view)> &on_piece);

// The answer of a whole (not streamed) chat.completion body:
// choices[0].message.content. False when the body is no JSON object or
// has no such string; *content then is untouched. *content points into
// `parser`'s memory: valid until its next parse.
bool completion_content_parse(simdjson::dom::parser &parser, std::string_view body,
                              std::string_view *content);

// True when a Content-Type value is application/json: type and subtype
// compared without case, parameters (`; charset=utf-8`) and surrounding
// blanks ignored. text/event-stream, application/problem+json and an empty
// value are not.
bool is_json_content_type(std::string_view value);

}  // namespace cg::openai
