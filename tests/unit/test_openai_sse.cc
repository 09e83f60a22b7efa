// openai.so's stream parser (plugins/openai/openai_sse.h) against the
// framings real servers use: LF, CR LF and CR line ends, comment lines
// (keep-alives), an event cut at any byte, several events in one chunk,
// multi-line data, `data:` without a space, long lines, and `[DONE]`.
#if __has_include("openai_sse.h")  // built only with the openai plugin

#include <catch2/catch.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "openai_sse.h"

using cg::openai::SseLines;

namespace {

// The data of each event the parser hands out for `chunks`, fed in order;
// with `finish`, the end of the stream is told too.
std::vector<std::string> events(const std::vector<std::string> &chunks, bool finish = false) {
  SseLines lines;
  std::vector<std::string> out;
  const auto take = [&](std::string_view data) { out.emplace_back(data); };
  for (const std::string &chunk : chunks) lines.feed(chunk, take);
  if (finish) lines.finish(take);
  return out;
}

using Events = std::vector<std::string>;

// The text pieces and [DONE] of a stream, as the plugin reads them.
struct Answer {
  std::string text;
  int done = 0;
};

Answer answer_of(const std::vector<std::string> &chunks) {
  simdjson::dom::parser parser;
  Answer a;
  SseLines lines;
  const auto take = [&](std::string_view data) {
    if (cg::openai::sse_delta_parse(parser, data, [&](std::string_view p) {
          a.text.append(p);
        }).done) {
      a.done++;
    }
  };
  for (const std::string &chunk : chunks) lines.feed(chunk, take);
  lines.finish(take);
  return a;
}

std::string delta(std::string_view piece) {
  return R"({"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":")" +
         std::string(piece) + R"("},"finish_reason":null}]})";
}

}  // namespace

TEST_CASE("openai sse: LF, CR LF and CR line ends", "[openai][sse]") {
  CHECK(events({"data: a\n\ndata: b\n\n"}) == Events{"a", "b"});
  CHECK(events({"data: a\r\n\r\ndata: b\r\n\r\n"}) == Events{"a", "b"});
  CHECK(events({"data: a\r\rdata: b\r\r"}) == Events{"a", "b"});
  // Mixed in one stream, as the format allows.
  CHECK(events({"data: a\r\n\ndata: b\r\rdata: c\n\r\n"}) == Events{"a", "b", "c"});
}

TEST_CASE("openai sse: a CR LF cut between two chunks is one line end", "[openai][sse]") {
  // Two data lines of one event: were the LF a second line end, the blank
  // line would end the event after "a".
  CHECK(events({"data: a\r", "\ndata: b\r\n\r\n"}) == Events{"a\nb"});
  // Empty chunks in between change nothing.
  CHECK(events({"data: a\r", "", "\n", "", "data: b\r", "\n\r", "", "\n"}) == Events{"a\nb"});
  // A CR at a chunk's end followed by another line: a CR line end.
  CHECK(events({"data: a\r", "\rdata: b\r", "\r"}) == Events{"a", "b"});
}

TEST_CASE("openai sse: comment lines are skipped", "[openai][sse]") {
  CHECK(events({": keep-alive\n\n"}).empty());
  CHECK(events({":\n\n: ping\r\n\r\n"}).empty());
  CHECK(events({": connected\n\n: keep-alive\ndata: a\n: inside an event\ndata: b\n\n"}) ==
        Events{"a\nb"});
  // Not a comment: a colon later in the line.
  CHECK(events({"x: y\ndata: z\n\n"}) == Events{"z"});
}

TEST_CASE("openai sse: fields other than data are skipped", "[openai][sse]") {
  CHECK(events({"event: message\nid: 7\nretry: 1000\ndata: a\n\n"}) == Events{"a"});
  CHECK(events({"event: ping\n\n"}).empty());  // an event without data gives nothing
  CHECK(events({"dat: a\n\ndata-x: b\n\nDATA: c\n\n data: d\n\n"}).empty());
}

TEST_CASE("openai sse: the space after the colon is optional and only one is removed",
          "[openai][sse]") {
  CHECK(events({"data:a\n\n"}) == Events{"a"});
  CHECK(events({"data:  a\n\n"}) == Events{" a"});
  CHECK(events({"data:\tA\n\n"}) == Events{"\tA"});
  CHECK(events({"data:[DONE]\n\n"}) == Events{"[DONE]"});
  // `data` without a colon and `data:` alone are data lines with no text.
  CHECK(events({"data\n\n"}) == Events{""});
  CHECK(events({"data:\n\n"}) == Events{""});
}

TEST_CASE("openai sse: an event's data lines are joined with LF", "[openai][sse]") {
  CHECK(events({"data: a\ndata:\ndata: b\n\n"}) == Events{"a\n\nb"});
  // JSON spread over lines is one payload, read whole.
  const Answer a =
      answer_of({"data: {\"choices\":\ndata:  [{\"delta\":\ndata: "
                 "{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n"});
  CHECK(a.text == "hi");
  CHECK(a.done == 1);
}

TEST_CASE("openai sse: several events in one chunk come out in order", "[openai][sse]") {
  std::string all;
  for (const char *piece : {"one", " two", " three", " four"})
    all += "data: " + delta(piece) + "\n\n";
  all += "data: [DONE]\n\n";
  const Answer a = answer_of({all});
  CHECK(a.text == "one two three four");
  CHECK(a.done == 1);
  CHECK(events({"data: 1\n\ndata: 2\n\ndata: 3\n\n"}) == Events{"1", "2", "3"});
}

TEST_CASE("openai sse: an event cut at any byte gives the same events", "[openai][sse]") {
  const std::string eol = GENERATE(std::string("\n"), std::string("\r\n"), std::string("\r"));
  INFO("line end " << (eol == "\n" ? "LF" : eol == "\r\n" ? "CR LF" : "CR"));
  const std::string stream = ": keep-alive" + eol + eol + "data: " + delta("Hel") + eol + eol +
                             "event: x" + eol + "data:" + delta("lo") + eol + ": ping" + eol + eol +
                             "data: {\"choices\":" + eol + "data: [{\"delta\":{\"content\":" + eol +
                             "data: \"!\"}}]}" + eol + eol + "data: [DONE]" + eol + eol;
  const Events whole = events({stream});
  REQUIRE(whole.size() == 4);
  CHECK(answer_of({stream}).text == "Hello!");
  for (size_t i = 0; i <= stream.size(); i++) {
    INFO("cut at " << i);
    REQUIRE(events({stream.substr(0, i), stream.substr(i)}) == whole);
  }
  // Two cuts, every pair of places.
  for (size_t i = 0; i <= stream.size(); i += 3) {
    for (size_t j = i; j <= stream.size(); j += 2) {
      INFO("cuts at " << i << " and " << j);
      REQUIRE(events({stream.substr(0, i), stream.substr(i, j - i), stream.substr(j)}) == whole);
    }
  }
  // One byte at a time.
  std::vector<std::string> bytes;
  for (char ch : stream) bytes.emplace_back(1, ch);
  CHECK(events(bytes) == whole);
  const Answer a = answer_of(bytes);
  CHECK(a.text == "Hello!");
  CHECK(a.done == 1);
}

TEST_CASE("openai sse: [DONE] ends the stream; other payloads are read as JSON", "[openai][sse]") {
  simdjson::dom::parser parser;
  std::vector<std::string> pieces;
  const auto take = [&](std::string_view p) { pieces.emplace_back(p); };
  CHECK(cg::openai::sse_delta_parse(parser, "[DONE]", take).done);
  CHECK_FALSE(cg::openai::sse_delta_parse(parser, " [DONE]", take).done);
  CHECK_FALSE(cg::openai::sse_delta_parse(parser, "[DONE]\n", take).done);
  CHECK_FALSE(cg::openai::sse_delta_parse(parser, delta("x"), take).done);
  CHECK(pieces == std::vector<std::string>{"x"});
  pieces.clear();
  // No JSON, no choices, a role-only or empty delta, a finish chunk: nothing.
  for (const char *nothing :
       {"", "not json", "{}", "{\"choices\":[]}", "{\"choices\":{}}",
        R"({"choices":[{"delta":{"role":"assistant"}}]})",
        R"({"choices":[{"delta":{"content":""}}]})", R"({"choices":[{"delta":{"content":null}}]})",
        R"({"choices":[{"delta":{},"finish_reason":"stop"}]})"}) {
    INFO(nothing);
    CHECK_FALSE(cg::openai::sse_delta_parse(parser, nothing, take).done);
  }
  CHECK(pieces.empty());
  // Several choices: each piece in order.
  cg::openai::sse_delta_parse(
      parser, R"({"choices":[{"delta":{"content":"a"}},{"delta":{"content":"b"}}]})", take);
  CHECK(pieces == std::vector<std::string>{"a", "b"});
}

TEST_CASE("openai sse: the end of the stream forgives only a missing blank line", "[openai][sse]") {
  // Every data line ended, the blank line did not come: handed out at the end.
  CHECK(events({"data: a\n\ndata: [DONE]\n"}) == Events{"a"});
  CHECK(events({"data: a\n\ndata: [DONE]\n"}, true) == Events{"a", "[DONE]"});
  CHECK(events({"data: x\r\ndata: y\r\n"}, true) == Events{"x\ny"});
  // An unended last line is not: the body stopped mid-line.
  CHECK(events({"data: a\n\ndata: [DO"}, true) == Events{"a"});
  CHECK(events({"data: x\ndata: y"}, true) == Events{"x"});
  // After finish (and after clear) the parser starts afresh.
  SseLines lines;
  Events out;
  const auto take = [&](std::string_view d) { out.emplace_back(d); };
  lines.feed("data: old\ndata: par", take);
  lines.finish(take);
  lines.feed("tial\n\n", take);
  CHECK(out == Events{"old"});
  lines.feed("data: a\n", take);
  lines.clear();  // a new attempt: the old event's data is gone
  lines.feed("\ndata: b\n\n", take);
  CHECK(out == Events{"old", "b"});
}

TEST_CASE("openai sse: lines have no length limit of their own", "[openai][sse]") {
  // The parser bounds nothing: the host's httpClient.maxResponseBytes bounds
  // the whole body. A long line arriving in small pieces comes out whole.
  const std::string text(1 << 20, 'x');
  const std::string stream = "data: " + delta(text) + "\r\n\r\ndata: [DONE]\r\n\r\n";
  std::vector<std::string> chunks;
  for (size_t at = 0; at < stream.size(); at += 997) chunks.push_back(stream.substr(at, 997));
  const Events out = events(chunks);
  REQUIRE(out.size() == 2);
  CHECK(out[0] == delta(text));
  const Answer a = answer_of(chunks);
  CHECK(a.text == text);
  CHECK(a.done == 1);
}

TEST_CASE("openai sse: a whole completion and its Content-Type", "[openai][sse]") {
  simdjson::dom::parser parser;
  std::string_view content = "untouched";
  CHECK(cg::openai::completion_content_parse(
      parser, R"({"choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}]})",
      &content));
  CHECK(content == "hi");
  content = "untouched";
  for (const char *bad :
       {"", "[]", "{}", R"({"choices":[]})", R"({"choices":[{"message":{"content":null}}]})"}) {
    INFO(bad);
    CHECK_FALSE(cg::openai::completion_content_parse(parser, bad, &content));
    CHECK(content == "untouched");
  }
  for (const char *json : {"application/json", "Application/JSON", " application/json ",
                           "application/json; charset=utf-8", "application/json;charset=UTF-8"}) {
    INFO(json);
    CHECK(cg::openai::is_json_content_type(json));
  }
  for (const char *other : {"", "text/event-stream", "application/problem+json",
                            "application/jsonx", "text/json", "application/json-seq"}) {
    INFO(other);
    CHECK_FALSE(cg::openai::is_json_content_type(other));
  }
}

#endif
