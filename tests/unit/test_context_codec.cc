// The stored context format: round trip, bounds, and refusal of anything
// that is not a version-1 context.
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "router/context_codec.h"

using cg::ContextCodec;
using cg::ContextTurn;

TEST_CASE("context codec: round trip keeps text, escapes and order", "[context]") {
  const std::string u1 = "line\n\"quoted\" \\ 你好 \x01";
  const std::string a1 = "answer one";
  const std::string u2 = std::string("nul\0inside", 10);
  const std::string a2 = "two";
  std::string encoded;
  ContextCodec::encode({{u1, a1}, {u2, a2}}, 10, &encoded);

  ContextCodec codec;
  std::string storage;
  std::vector<ContextTurn> turns;
  REQUIRE(codec.decode(encoded, &storage, &turns));
  REQUIRE(turns.size() == 2);
  CHECK(turns[0].user == u1);
  CHECK(turns[0].assistant == a1);
  CHECK(turns[1].user == u2);
  CHECK(turns[1].assistant == a2);

  // The views survive another decode into other storage (the parser's own
  // buffers are reused; the views must not point into them).
  std::string other_storage;
  std::vector<ContextTurn> other;
  std::string encoded2;
  ContextCodec::encode({{"x", "y"}}, 10, &encoded2);
  REQUIRE(codec.decode(encoded2, &other_storage, &other));
  CHECK(turns[0].user == u1);
  CHECK(turns[1].assistant == a2);
}

TEST_CASE("context codec: encode keeps only the last max_turns", "[context]") {
  std::vector<std::string> texts;
  for (int i = 0; i < 5; i++) texts.push_back("q" + std::to_string(i));
  std::vector<ContextTurn> in;
  for (const std::string &t : texts) in.push_back({t, t});
  std::string encoded;
  ContextCodec::encode(in, 2, &encoded);
  ContextCodec codec;
  std::string storage;
  std::vector<ContextTurn> out;
  REQUIRE(codec.decode(encoded, &storage, &out));
  REQUIRE(out.size() == 2);
  CHECK(out[0].user == "q3");
  CHECK(out[1].user == "q4");
}

TEST_CASE("context codec: refuses what is not a version-1 context", "[context]") {
  ContextCodec codec;
  std::string storage;
  std::vector<ContextTurn> turns;
  for (const char *bad :
       {"", "not json", "[]", "{\"v\":2,\"turns\":[]}", "{\"turns\":[]}", "{\"v\":1}",
        "{\"v\":1,\"turns\":[{\"u\":\"a\"}]}", "{\"v\":1,\"turns\":[{\"u\":1,\"a\":\"b\"}]}"}) {
    INFO(bad);
    CHECK_FALSE(codec.decode(bad, &storage, &turns));
    CHECK(turns.empty());
  }
  CHECK(codec.decode("{\"v\":1,\"turns\":[]}", &storage, &turns));
  CHECK(turns.empty());
}

// The stored format is shared through the cache (Redis) by instances of
// different versions during a rolling upgrade: what this version writes
// is pinned byte for byte, and what it reads back is checked both ways.
// Changing the golden value means changing the format: bump "v" and keep
// reading version 1.
TEST_CASE("context codec: golden version-1 encoding", "[context]") {
  const std::string nul("nul \0 x", 7);
  const std::vector<std::string> texts = {
      "hello",
      "hi there",
      "quote \" backslash \\ slash / tab \t newline \n cr \r",
      "bs \b ff \f " + nul + " one \x01 us \x1f del \x7f",
      "\xe4\xbd\xa0\xe5\xa5\xbd \xc3\xa9 \xf0\x9f\x91\x8b",  // 你好 é 👋
      "",
      "bad \xff byte",
      "end",
  };
  std::vector<ContextTurn> in;
  for (size_t i = 0; i < texts.size(); i += 2) in.push_back({texts[i], texts[i + 1]});

  const std::string golden =
      "{\"v\":1,\"turns\":["
      "{\"u\":\"hello\",\"a\":\"hi there\"},"
      "{\"u\":\"quote \\\" backslash \\\\ slash / tab \\t newline \\n cr \\r\","
      "\"a\":\"bs \\b ff \\f nul \\u0000 x one \\u0001 us \\u001f del \x7f\"},"
      "{\"u\":\"\xe4\xbd\xa0\xe5\xa5\xbd \xc3\xa9 \xf0\x9f\x91\x8b\",\"a\":\"\"},"
      "{\"u\":\"bad \xef\xbf\xbd byte\",\"a\":\"end\"}"  // an invalid byte is written as U+FFFD
      "]}";
  std::string encoded;
  ContextCodec::encode(in, 10, &encoded);
  CHECK(encoded == golden);
  CHECK(encoded.starts_with("{\"v\":1,"));  // the version marker leads

  ContextCodec codec;
  std::string storage;
  std::vector<ContextTurn> out;
  REQUIRE(codec.decode(golden, &storage, &out));
  REQUIRE(out.size() == in.size());
  for (size_t i = 0; i < in.size(); i++) {
    INFO("turn " << i);
    CHECK(out[i].user == (i == 3 ? std::string_view("bad \xef\xbf\xbd byte") : in[i].user));
    CHECK(out[i].assistant == in[i].assistant);
  }

  // Only the last max_turns are written, oldest first.
  ContextCodec::encode(in, 1, &encoded);
  CHECK(encoded == "{\"v\":1,\"turns\":[{\"u\":\"bad \xef\xbf\xbd byte\",\"a\":\"end\"}]}");
  ContextCodec::encode({}, 10, &encoded);
  CHECK(encoded == "{\"v\":1,\"turns\":[]}");
}

TEST_CASE("context codec: reads any JSON spelling of a version-1 context", "[context]") {
  // Another writer of the same version may order keys differently, add
  // blanks or escape more (\/, \u00e9, a surrogate pair); an added key is
  // ignored. The text read is the same.
  const std::string other =
      "{ \"turns\" : [ { \"a\" : \"hi\\/there\", \"u\" : \"caf\\u00e9 \\ud83d\\udc4b\", "
      "\"t\" : 123 } ], \"v\" : 1, \"x\" : true }";
  ContextCodec codec;
  std::string storage;
  std::vector<ContextTurn> out;
  REQUIRE(codec.decode(other, &storage, &out));
  REQUIRE(out.size() == 1);
  CHECK(out[0].user == "caf\xc3\xa9 \xf0\x9f\x91\x8b");
  CHECK(out[0].assistant == "hi/there");
}
