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

// Collects bytes as they arrive and hands out each complete event's data,
// as the server-sent events format defines it (WHATWG HTML, "Server-sent
// events"): lines end with CR LF, LF or CR (a CR LF cut between two chunks
// is still one line end); a line that starts with a colon is a comment;
// a field's value is what follows the colon, one leading space removed (a
// line without a colon is a field with an empty value); an event's `data`
// lines are joined with LF and handed out at the blank line that ends it.
// Other fields (event:, id:, retry:) are skipped: the chat completions
// stream uses data only. Nothing bounds a line's length here: the host's
// httpClient.maxResponseBytes bounds the whole body.
class SseLines {
 public:
  using OnData = std::function<void(std::string_view)>;
  void feed(std::string_view chunk, const OnData &on_data);
  // The end of the stream. The format drops an event that no blank line
  // ended; a service that omits the last blank line is forgiven: data whose
  // lines all ended is handed out. An unended last line is dropped.
  void finish(const OnData &on_data);
  void clear() {
    buf_.clear();
    data_.clear();
    skip_lf_ = false;
  }

 private:
  void line(std::string_view line, const OnData &on_data);
  void dispatch(const OnData &on_data);

  std::string buf_;       // the unended line so far
  std::string data_;      // the event's data lines so far, each followed by LF
  bool skip_lf_ = false;  // the last chunk ended with CR: an LF first ends no line
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
