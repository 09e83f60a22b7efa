// Unit tests for feishu.so's protocol pieces (plugins/feishu): decryption
// and signatures against the known-answer vectors of ../shared/protocols.md,
// envelope parsing (schema 2.0, v1, url_verification) and message content
// (mentions, posts, images, files).
#include <catch2/catch.hpp>
#include <string>

#include "feishu_crypto.h"
#include "feishu_event.h"

TEST_CASE("feishu: decrypts the node-sdk challenge vector") {
  std::string plain;
  REQUIRE(feishu::decrypt(
      "mazhe.nerd",
      "tT1xP+ovuc0T3b/rnZX3ax76exqAn0ANQ6/U45GcciC0mgNBc8JtvqOJGNAPMKpgRs2dVU1NYk9VDeqS8T4SYtU0hzN"
      "U54aS84WnxvZ3VFfDcy/RyABlNqlUiGyLDzFI0yxdCMT4KR/YEQXlt6nZi50KwRlZ+A75r645KesZuLMljezYyY8V"
      "eeXEVjPw35+e",
      &plain));
  CHECK(
      plain ==
      R"({"challenge":"5634b122-c042-4634-bc7f-b07a3c3e77ad","token":"iRdCP2WwXNBXRM3mGLqhrgch3cn0gbT6","type":"url_verification"})");
}

TEST_CASE("feishu: decrypts the documentation vector and refuses bad input") {
  std::string plain;
  REQUIRE(feishu::decrypt("test key", "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk=", &plain));
  CHECK(plain == "hello world");
  std::string untouched = "x";
  CHECK_FALSE(
      feishu::decrypt("wrong key", "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk=", &untouched));
  CHECK_FALSE(feishu::decrypt("test key", "not base64!", &untouched));
  CHECK_FALSE(feishu::decrypt("test key", "", &untouched));
  CHECK_FALSE(feishu::decrypt("test key", "AAAAAAAAAAAAAAAAAAAAAA==", &untouched));  // 16 bytes
  CHECK(untouched == "x");
}

TEST_CASE("feishu: encrypt round-trips through decrypt") {
  const std::string iv(16, '\x07');
  const std::string body = R"({"schema":"2.0","header":{"event_id":"e"},"event":{}})";
  std::string plain;
  REQUIRE(feishu::decrypt("k3y", feishu::encrypt("k3y", body, iv), &plain));
  CHECK(plain == body);
}

TEST_CASE("feishu: the signature vector") {
  CHECK(feishu::signature("1700000000", "abc", "test key",
                          R"({"encrypt":"P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk="})") ==
        "0c09d96c2aef2ad08179b3967ea410bbc91dab24ce3aec05af962cf1935844af");
  CHECK(feishu::equal_constant_time("abc", "abc"));
  CHECK_FALSE(feishu::equal_constant_time("abc", "abd"));
  CHECK_FALSE(feishu::equal_constant_time("abc", "ab"));
  CHECK(feishu::base64("hello") == "aGVsbG8=");
}

namespace {

std::string message_event(const std::string &chat_type, const std::string &type,
                          const std::string &content_json, const std::string &mentions) {
  std::string content;
  for (char c : content_json) {
    if (c == '"' || c == '\\') content += '\\';
    content += c;
  }
  return R"({"schema":"2.0","header":{"event_id":"ev1","event_type":"im.message.receive_v1",)"
         R"("create_time":"1700000000000","token":"vt","app_id":"cli","tenant_key":"tk"},)"
         R"("event":{"sender":{"sender_id":{"open_id":"ou_u"},"sender_type":"user"},)"
         R"("message":{"message_id":"om_1","chat_id":"oc_1","chat_type":")" +
         chat_type + R"(","message_type":")" + type + R"(","content":")" + content +
         R"(","create_time":"1700000000123","mentions":[)" + mentions + "]}}}";
}

}  // namespace

TEST_CASE("feishu: schema 2.0 message envelope") {
  feishu::Event ev;
  REQUIRE(feishu::event_parse(message_event("group", "text", R"({"text":"hi"})", ""), &ev) == "");
  CHECK(ev.kind == feishu::Event::Kind::kMessage);
  CHECK(ev.token == "vt");
  CHECK(ev.event_id == "ev1");
  CHECK(ev.message_id == "om_1");
  CHECK(ev.chat_id == "oc_1");
  CHECK(ev.chat_type == "group");
  CHECK(ev.sender_open_id == "ou_u");
  CHECK(ev.create_time_ms == 1700000000123);
}

TEST_CASE("feishu: url_verification, v1 and broken envelopes") {
  feishu::Event ev;
  REQUIRE(feishu::event_parse(R"({"challenge":"c","token":"t","type":"url_verification"})", &ev) ==
          "");
  CHECK(ev.kind == feishu::Event::Kind::kUrlVerification);
  CHECK(ev.challenge == "c");
  REQUIRE(feishu::event_parse(
              R"({"uuid":"u1","ts":"1","token":"t","type":"event_callback","event":{"type":"x"}})",
              &ev) == "");
  CHECK(ev.event_id == "u1");
  CHECK(ev.event_type == "x");
  CHECK(ev.kind == feishu::Event::Kind::kOther);
  REQUIRE(feishu::event_parse(R"({"encrypt":"abc="})", &ev) == "");
  CHECK(ev.kind == feishu::Event::Kind::kEncrypted);
  CHECK(ev.encrypt == "abc=");
  CHECK(feishu::event_parse("not json", &ev) == "not a JSON object");
  CHECK(feishu::event_parse("[1]", &ev) == "not a JSON object");
  CHECK(feishu::event_parse(R"({"event":{}})", &ev) == "neither a schema 2.0 nor a v1 envelope");
  CHECK(feishu::event_parse(R"({"schema":"2.0","event":{}})", &ev) ==
        "schema 2.0 without a header");
  CHECK(feishu::event_parse(R"({"type":"url_verification"})", &ev) ==
        "url_verification without a challenge");
}

TEST_CASE("feishu: card.action.trigger") {
  feishu::Event ev;
  REQUIRE(
      feishu::event_parse(
          R"({"schema":"2.0","header":{"event_id":"e2","event_type":"card.action.trigger","token":"t"},)"
          R"("event":{"operator":{"open_id":"ou_op"},"action":{"value":{"value":"yes"},"tag":"button"},)"
          R"("context":{"open_message_id":"om_c","open_chat_id":"oc_c"}}})",
          &ev) == "");
  CHECK(ev.kind == feishu::Event::Kind::kCardAction);
  CHECK(ev.action_value == "yes");
  CHECK(ev.operator_open_id == "ou_op");
  CHECK(ev.open_chat_id == "oc_c");
  CHECK(ev.open_message_id == "om_c");
}

TEST_CASE("feishu: text mentions: the bot's removed, others named") {
  feishu::Event ev;
  const std::string mentions = R"({"key":"@_user_1","id":{"open_id":"ou_bot"},"name":"Bot"},)"
                               R"({"key":"@_user_10","id":{"open_id":"ou_x"},"name":"Xu"})";
  REQUIRE(feishu::event_parse(
              message_event("group", "text", R"({"text":"@_user_1 ask @_user_10 now"})", mentions),
              &ev) == "");
  feishu::Content c = feishu::message_content(ev, "ou_bot");
  CHECK(c.supported);
  CHECK(c.mentioned);
  CHECK(c.text == "ask @Xu now");
  // Another bot's id: this one was not mentioned.
  c = feishu::message_content(ev, "ou_other");
  CHECK_FALSE(c.mentioned);
  CHECK(c.text == "@Bot ask @Xu now");
  // Id unknown: any mention counts.
  CHECK(feishu::message_content(ev, "").mentioned);
}

TEST_CASE("feishu: post flattened, with and without a locale") {
  feishu::Event ev;
  const std::string post =
      R"({"title":"T","content":[[{"tag":"at","user_id":"@_user_1"},{"tag":"text","text":" look "},)"
      R"({"tag":"a","text":"here","href":"https://x"}],[{"tag":"img","image_key":"img_1"}]]})";
  REQUIRE(feishu::event_parse(
              message_event("group", "post", post,
                            R"({"key":"@_user_1","id":{"open_id":"ou_bot"},"name":"Bot"})"),
              &ev) == "");
  feishu::Content c = feishu::message_content(ev, "ou_bot");
  CHECK(c.supported);
  CHECK(c.mentioned);
  CHECK(c.text == "T\n look here");
  REQUIRE(c.attachments.size() == 1);
  CHECK(c.attachments[0].kind == feishu::Attachment::Kind::kImage);
  CHECK(c.attachments[0].key == "img_1");
  REQUIRE(
      feishu::event_parse(
          message_event("p2p", "post",
                        R"({"zh_cn":{"title":"","content":[[{"tag":"text","text":"x"}]]}})", ""),
          &ev) == "");
  CHECK(feishu::message_content(ev, "ou_bot").text == "x");
}

TEST_CASE("feishu: image, file and unsupported types") {
  feishu::Event ev;
  REQUIRE(feishu::event_parse(message_event("p2p", "image", R"({"image_key":"img_9"})", ""), &ev) ==
          "");
  feishu::Content c = feishu::message_content(ev, "ou_bot");
  CHECK(c.supported);
  CHECK(c.text == "[image]");
  CHECK(c.attachments.at(0).key == "img_9");
  REQUIRE(feishu::event_parse(
              message_event("p2p", "file", R"({"file_key":"f_1","file_name":"a.pdf"})", ""), &ev) ==
          "");
  c = feishu::message_content(ev, "ou_bot");
  CHECK(c.text == "[file: a.pdf]");
  CHECK(c.attachments.at(0).kind == feishu::Attachment::Kind::kFile);
  CHECK(c.attachments.at(0).name == "a.pdf");
  REQUIRE(feishu::event_parse(message_event("p2p", "audio", R"({"file_key":"x"})", ""), &ev) == "");
  CHECK_FALSE(feishu::message_content(ev, "ou_bot").supported);
}
