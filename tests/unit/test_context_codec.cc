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
