#include <simdjson.h>

#include <catch2/catch.hpp>

#include "base/json.h"

using cg::json_quote;

TEST_CASE("json_quote escapes quotes, backslashes and control characters", "[json]") {
  CHECK(json_quote("plain") == "\"plain\"");
  CHECK(json_quote("a\"b\\c") == "\"a\\\"b\\\\c\"");
  CHECK(json_quote("l1\nl2\r\t") == "\"l1\\nl2\\r\\t\"");
  CHECK(json_quote(std::string_view("\x00\x01\x1f", 3)) == "\"\\u0000\\u0001\\u001f\"");
  CHECK(json_quote("\b\f") == "\"\\b\\f\"");
  CHECK(json_quote("") == "\"\"");
}

TEST_CASE("json_quote keeps valid UTF-8 and replaces invalid bytes", "[json]") {
  CHECK(json_quote("你好 👋") == "\"你好 👋\"");
  CHECK(json_quote("\xC3\xA9") == "\"\xC3\xA9\"");  // é
  CHECK(json_quote("a\xFF"
                   "b") ==
        "\"a\xEF\xBF\xBD"
        "b\"");                                                                     // stray byte
  CHECK(json_quote("\xC0\xAF") == "\"\xEF\xBF\xBD\xEF\xBF\xBD\"");                  // overlong '/'
  CHECK(json_quote("\xED\xA0\x80") == "\"\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\"");  // surrogate
  CHECK(json_quote("\xE4\xBD") == "\"\xEF\xBF\xBD\xEF\xBF\xBD\"");                  // truncated
}

TEST_CASE("json_quote output round-trips through simdjson", "[json]") {
  std::string nasty;
  for (int c = 0; c < 0x80; c++) nasty.push_back(static_cast<char>(c));
  nasty += "中文\"\\";
  const std::string doc = "{\"v\":" + json_quote(nasty) + "}";
  simdjson::dom::parser parser;
  std::string_view back;
  REQUIRE(parser.parse(doc).get_object()["v"].get_string().get(back) == simdjson::SUCCESS);
  CHECK(back == nasty);
}
