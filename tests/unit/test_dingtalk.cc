// Unit tests for dingtalk.so's protocol pieces (plugins/dingtalk): the
// signatures against ../shared/protocols.md's known-answer vector, URL
// encoding, and the robot message callback (text, richText, picture).
#include <catch2/catch.hpp>
#include <string>

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
