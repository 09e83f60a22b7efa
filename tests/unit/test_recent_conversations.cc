#include <simdjson.h>

#include <catch2/catch.hpp>
#include <string>

#include "router/recent_conversations.h"

using cg::RecentConversations;

namespace {

simdjson::dom::element parse(simdjson::dom::parser &p, const std::string &json) {
  return p.parse(json).value();
}

}  // namespace

TEST_CASE("RecentConversations keeps the most recent, bounded, and reuses the oldest", "[admin]") {
  RecentConversations r(false);
  const size_t n = RecentConversations::kMaxConversations;
  for (size_t i = 0; i < n + 5; ++i) {
    r.record("api", "c" + std::to_string(i), "q", "a", false, 7, 1000 + static_cast<int64_t>(i), 1);
  }
  r.record("api", "c2", "q", "a", true, 9, 5000, 2);  // c2 was evicted: back as new
  r.record("web", "c200", "q", "a", false, 3, 5001, 1);
  simdjson::dom::parser p;
  const std::string json = r.to_json("");
  const auto list = parse(p, json)["conversations"].get_array().value();
  CHECK(list.size() == n);
  CHECK(std::string_view(list.at(0)["channel"].get_string().value()) == "web");
  CHECK(std::string_view(list.at(1)["conversation"].get_string().value()) == "c2");
  CHECK(int64_t(list.at(1)["messages"].get_int64().value()) == 1);  // a fresh entry, not c0's
  CHECK(int64_t(list.at(1)["failed"].get_int64().value()) == 1);
  CHECK(int64_t(list.at(1)["turns"].get_int64().value()) == 2);
  // c0..c4 went for c200..c204, c5 and c6 for c2 and web/c200: c7 is the oldest left.
  CHECK(std::string_view(list.at(n - 1)["conversation"].get_string().value()) == "c7");
  CHECK(json.find("\"question\"") == std::string::npos);  // content off
  // A channel filter, and a reset that drops the turn count.
  r.reset("api", "c2");
  const std::string only_api = r.to_json("api");
  CHECK(only_api.find("\"web\"") == std::string::npos);
  CHECK(only_api.find("\"conversation\":\"c2\",\"messages\":1,\"failed\":1,\"turns\":0") !=
        std::string::npos);
}

TEST_CASE("RecentConversations keeps text only when asked, cut at a UTF-8 boundary", "[admin]") {
  RecentConversations r(true);
  std::string long_answer(RecentConversations::kMaxTextBytes - 1, 'x');
  long_answer += "\xe4\xbd\xa0";  // a 3-byte character across the limit
  r.record("api", "u", "hello", long_answer, false, 1, 1, 1);
  simdjson::dom::parser p;
  const std::string json = r.to_json("");
  const auto e = parse(p, json)["conversations"].get_array().value().at(0);
  CHECK(std::string_view(e["question"].get_string().value()) == "hello");
  CHECK(std::string_view(e["answer"].get_string().value()).size() ==
        RecentConversations::kMaxTextBytes - 1);
}
