// Unit tests for dingtalk.so's protocol pieces (plugins/dingtalk): the
// signatures against ../shared/protocols.md's known-answer vector, URL
// encoding, the robot message callback (text, richText, picture), and the
// mention policy failing closed on every field it reads.
#include <catch2/catch.hpp>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "dingtalk_protocol.h"

TEST_CASE("dingtalk: the sign vector, and its URL encoding") {
  const std::string sign = dingtalk::robot_sign("1577262236757", "this is secret");
  CHECK(sign == "hmPWwU+7lVdm3ZZz0r9tSfx0L4Q26jWOZr9+Gs6EZQM=");
  CHECK(dingtalk::url_encode(sign) == "hmPWwU%2B7lVdm3ZZz0r9tSfx0L4Q26jWOZr9%2BGs6EZQM%3D");
  // The callback's sign is the same construction, keyed with the app secret.
  CHECK(dingtalk::callback_sign("1577262236757", "this is secret") == sign);
  CHECK(dingtalk::callback_sign("1577262236758", "this is secret") != sign);
  CHECK(dingtalk::equal_constant_time(sign, sign));
  CHECK_FALSE(dingtalk::equal_constant_time(sign, sign.substr(1)));
}

TEST_CASE("dingtalk: a text robot message") {
  dingtalk::RobotMessage m;
  REQUIRE(dingtalk::robot_message_parse(
              R"({"conversationId":"cid1","atUsers":[{"dingtalkId":"$:bot"}],"msgId":"msg1",)"
              R"("senderNick":"Ann","senderStaffId":"staff1","senderId":"$:ann",)"
              R"("sessionWebhookExpiredTime":1700000090000,"createAt":1700000000000,)"
              R"("conversationType":"2","isInAtList":true,"sessionWebhook":"https://x/s",)"
              R"("robotCode":"dingabc","msgtype":"text","text":{"content":" hello "}})",
              &m) == "");
  CHECK(m.msg_id == "msg1");
  CHECK(m.conversation_id == "cid1");
  CHECK(m.conversation_type == "2");
  CHECK(m.in_at_list);
  CHECK(m.sender_staff_id == "staff1");
  CHECK(m.sender_nick == "Ann");
  CHECK(m.session_webhook == "https://x/s");
  CHECK(m.session_expires_ms == 1700000090000);
  CHECK(m.supported);
  CHECK(m.text == "hello");
}

TEST_CASE("dingtalk: richText, picture, unsupported and broken messages") {
  dingtalk::RobotMessage m;
  REQUIRE(dingtalk::robot_message_parse(
              R"({"conversationId":"c","msgId":"m","senderStaffId":"s","conversationType":"1",)"
              R"("msgtype":"richText","content":{"richText":[{"text":"see "},)"
              R"({"type":"picture","downloadCode":"dc1"},{"text":"this"}]}})",
              &m) == "");
  CHECK(m.text == "see this");
  REQUIRE(m.attachments.size() == 1);
  CHECK(m.attachments[0].download_code == "dc1");
  REQUIRE(dingtalk::robot_message_parse(
              R"({"conversationId":"c","msgId":"m","senderStaffId":"s","conversationType":"1",)"
              R"("msgtype":"picture","content":{"downloadCode":"dc2"}})",
              &m) == "");
  CHECK(m.text == "[image]");
  CHECK(m.attachments.at(0).download_code == "dc2");
  REQUIRE(dingtalk::robot_message_parse(
              R"({"conversationId":"c","msgId":"m","senderStaffId":"s","msgtype":"audio"})", &m) ==
          "");
  CHECK_FALSE(m.supported);
  CHECK(dingtalk::robot_message_parse("nope", &m) == "not a JSON object");
  CHECK(dingtalk::robot_message_parse(R"({"msgId":"m"})", &m) == "no msgId or conversationId");
  CHECK(dingtalk::robot_message_parse(R"({"msgId":"m","conversationId":"c"})", &m) == "no sender");
}

// ---- the policy fails closed ----
//
// Every field the mention policy reads, missing, of another JSON type or
// with an unknown value, makes the message the stricter case: a group
// message that does not mention the robot, dropped while requireMention.

namespace {

// A robot text message: a direct chat that mentions the robot (the lenient
// case), with `key` set to the raw JSON `value`, or left out when `value`
// is nullptr.
std::string robot_body(const std::string &key, const char *value) {
  const std::vector<std::pair<std::string, std::string>> fields = {
      {"conversationId", R"("cid1")"},  {"msgId", R"("msg1")"},
      {"senderStaffId", R"("staff1")"}, {"senderId", R"("$:ann")"},
      {"conversationType", R"("1")"},   {"isInAtList", "true"},
      {"chatbotUserId", R"("$:bot")"},  {"atUsers", R"([{"dingtalkId":"$:bot"}])"},
      {"msgtype", R"("text")"},         {"text", R"({"content":"hi"})"},
  };
  std::string out = "{";
  bool seen = false;
  for (const auto &[k, v] : fields) {
    if (k == key) {
      seen = true;
      if (value == nullptr) continue;
    }
    if (out.size() > 1) out += ",";
    out += "\"" + k + "\":" + (k == key ? std::string(value) : v);
  }
  REQUIRE(seen);
  return out + "}";
}

dingtalk::RobotMessage parsed(const std::string &body) {
  dingtalk::RobotMessage m;
  REQUIRE(dingtalk::robot_message_parse(body, &m) == "");
  return m;
}

}  // namespace

TEST_CASE("dingtalk policy: the lenient baseline is a direct chat that mentions the robot") {
  const dingtalk::RobotMessage m = parsed(robot_body("conversationType", R"("1")"));
  CHECK_FALSE(m.group);
  CHECK(m.in_at_list);
  CHECK(dingtalk::robot_message_policy(m, true) == "");
  // A group message that mentions the robot is answered; one that does not
  // only when mentions are not required.
  const dingtalk::RobotMessage g = parsed(robot_body("conversationType", R"("2")"));
  CHECK(g.group);
  CHECK(dingtalk::robot_message_policy(g, true) == "");
  const dingtalk::RobotMessage quiet = parsed(robot_body("isInAtList", "false"));
  CHECK_FALSE(quiet.in_at_list);
  CHECK(dingtalk::robot_message_policy(quiet, true) == "");  // a direct chat
}

TEST_CASE("dingtalk policy: conversationType missing, of another type or unknown is a group") {
  const std::pair<const char *, const char *> shapes[] = {
      {"missing", nullptr},     {"the number 2", "2"},
      {"the number 1", "1"},    {"null", "null"},
      {"true", "true"},         {"an object", R"({"type":"1"})"},
      {"an array", R"(["1"])"}, {"unknown \"3\"", R"("3")"},
      {"empty \"\"", R"("")"},  {"\"1 \"", R"("1 ")"},
      {"\"01\"", R"("01")"},    {"\"single\"", R"("single")"},
  };
  for (const auto &[what, value] : shapes) {
    SECTION(what) {
      // isInAtList false: the group is one that does not mention the robot.
      std::string body = robot_body("conversationType", value);
      const size_t at = body.find("\"isInAtList\":true");
      REQUIRE(at != std::string::npos);
      body.replace(at, std::strlen("\"isInAtList\":true"), "\"isInAtList\":false");
      const dingtalk::RobotMessage m = parsed(body);
      CHECK(m.group);
      CHECK(dingtalk::robot_message_policy(m, true) == "policy");
      CHECK(dingtalk::robot_message_policy(m, false) == "");
    }
  }
}

TEST_CASE("dingtalk policy: isInAtList missing, of another type or unknown is no mention") {
  const std::pair<const char *, const char *> shapes[] = {
      {"missing", nullptr},  {"the string \"true\"", R"("true")"},
      {"the number 1", "1"}, {"null", "null"},
      {"an object", "{}"},   {"an array", "[true]"},
      {"false", "false"},
  };
  for (const auto &[what, value] : shapes) {
    SECTION(what) {
      // In a group, where the mention matters.
      std::string body = robot_body("isInAtList", value);
      const size_t at = body.find(R"("conversationType":"1")");
      REQUIRE(at != std::string::npos);
      body.replace(at, std::strlen(R"("conversationType":"1")"), R"("conversationType":"2")");
      const dingtalk::RobotMessage m = parsed(body);
      CHECK(m.group);
      CHECK_FALSE(m.in_at_list);
      CHECK(dingtalk::robot_message_policy(m, true) == "policy");
    }
  }
}

TEST_CASE("dingtalk policy: atUsers and chatbotUserId alone are no mention") {
  // The policy reads isInAtList only: the robot in atUsers (DingTalk's own
  // list) without isInAtList true does not make a mention.
  std::string body = robot_body("isInAtList", nullptr);
  const size_t at = body.find(R"("conversationType":"1")");
  REQUIRE(at != std::string::npos);
  body.replace(at, std::strlen(R"("conversationType":"1")"), R"("conversationType":"2")");
  const dingtalk::RobotMessage m = parsed(body);
  CHECK_FALSE(m.in_at_list);
  CHECK(dingtalk::robot_message_policy(m, true) == "policy");
}
