// Unit tests for feishu.so's protocol pieces (plugins/feishu): decryption
// and signatures against the known-answer vectors of ../shared/protocols.md,
// envelope parsing (schema 2.0, v1, url_verification) and message content
// (mentions, posts, images, files), and the message policy failing closed
// on every field it reads.
#include <catch2/catch.hpp>
#include <set>
#include <string>
#include <utility>
#include <vector>

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
  // Id unknown (not learned yet): no mention counts, the policy fails closed.
  c = feishu::message_content(ev, "");
  CHECK_FALSE(c.mentioned);
  CHECK(c.text == "@Bot ask @Xu now");
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

// ---- the policy fails closed ----
//
// Every field the mention, group or allowedChats policy reads, missing, of
// another JSON type or with an unknown value, makes the message the
// stricter case: a group message that does not mention the bot. The
// webhook and the long connection both parse with event_parse and decide
// with message_policy (feishu.cc's route).

namespace {

constexpr const char *kBot = "ou_bot";

// An im.message.receive_v1 event: a group text "@_user_1 hi" whose
// mentions name the bot (the lenient case), with the message's `key` set
// to the raw JSON `value`, or left out when `value` is nullptr.
std::string group_event(const std::string &key, const char *value) {
  const std::vector<std::pair<std::string, std::string>> fields = {
      {"message_id", R"("om_1")"},
      {"chat_id", R"("oc_1")"},
      {"chat_type", R"("group")"},
      {"message_type", R"("text")"},
      {"content", R"("{\"text\":\"@_user_1 hi\"}")"},
      {"mentions", R"([{"key":"@_user_1","id":{"open_id":"ou_bot"},"name":"Bot"}])"},
  };
  std::string message = "{";
  bool seen = false;
  for (const auto &[k, v] : fields) {
    if (k == key) {
      seen = true;
      if (value == nullptr) continue;
    }
    if (message.size() > 1) message += ",";
    message += "\"" + k + "\":" + (k == key ? std::string(value) : v);
  }
  REQUIRE(seen);
  return R"({"schema":"2.0","header":{"event_id":"ev1","event_type":"im.message.receive_v1",)"
         R"("token":"vt"},"event":{"sender":{"sender_id":{"open_id":"ou_u"},)"
         R"("sender_type":"user"},"message":)" +
         message + "}}}";
}

feishu::Event parsed(const std::string &body) {
  feishu::Event ev;
  REQUIRE(feishu::event_parse(body, &ev) == "");
  REQUIRE(ev.kind == feishu::Event::Kind::kMessage);
  return ev;
}

std::string verdict(const feishu::Event &ev, feishu::Policy policy = {}) {
  return feishu::message_policy(ev, feishu::message_content(ev, kBot), policy);
}

}  // namespace

TEST_CASE("feishu policy: the lenient baseline is answered") {
  const feishu::Event ev = parsed(group_event("chat_type", R"("group")"));
  CHECK_FALSE(ev.direct);
  CHECK(feishu::message_content(ev, kBot).mentioned);
  CHECK(verdict(ev) == "");
  const std::set<std::string> allowed = {"oc_1"}, other = {"oc_2"}, none;
  CHECK(verdict(ev, {true, true, &allowed}) == "");
  CHECK(verdict(ev, {true, true, &none}) == "");
  CHECK(verdict(ev, {true, true, &other}) == "policy");
  // A p2p chat needs no mention, only directMessages.
  const feishu::Event p2p = parsed(group_event("chat_type", R"("p2p")"));
  CHECK(p2p.direct);
  const feishu::Event quiet_p2p = parsed(group_event("mentions", nullptr));
  CHECK(feishu::message_policy(p2p, feishu::message_content(quiet_p2p, kBot), {}) == "");
  CHECK(verdict(p2p, {true, false, nullptr}) == "policy");
}

TEST_CASE("feishu policy: chat_type missing, of another type or unknown is a group") {
  const std::pair<const char *, const char *> shapes[] = {
      {"missing", nullptr},
      {"null", "null"},
      {"a number", "1"},
      {"true", "true"},
      {"an object", R"({"type":"p2p"})"},
      {"an array", R"(["p2p"])"},
      {"\"group\"", R"("group")"},
      {"\"topic_group\"", R"("topic_group")"},
      {"\"P2P\"", R"("P2P")"},
      {"\"p2p \"", R"("p2p ")"},
      {"empty \"\"", R"("")"},
      {"\"private\"", R"("private")"},
  };
  for (const auto &[what, value] : shapes) {
    SECTION(what) {
      // Without the bot's mention: as a group, dropped while requireMention.
      std::string body = group_event("chat_type", value);
      const std::string mention = R"("id":{"open_id":"ou_bot"})";
      const size_t at = body.find(mention);
      REQUIRE(at != std::string::npos);
      body.replace(at, mention.size(), R"("id":{"open_id":"ou_someone"})");
      const feishu::Event ev = parsed(body);
      CHECK_FALSE(ev.direct);
      CHECK_FALSE(feishu::message_content(ev, kBot).mentioned);
      CHECK(verdict(ev) == "policy");
      // As a group it also answers to allowedChats, not to directMessages.
      const std::set<std::string> other = {"oc_2"};
      CHECK(verdict(ev, {false, true, &other}) == "policy");
      CHECK(verdict(ev, {false, false, nullptr}) == "");
    }
  }
}

TEST_CASE("feishu policy: mentions malformed or not naming the bot is no mention") {
  const std::pair<const char *, const char *> shapes[] = {
      {"missing", nullptr},
      {"null", "null"},
      {"an object, not an array", R"({"key":"@_user_1","id":{"open_id":"ou_bot"}})"},
      {"a string", R"("@_user_1")"},
      {"empty", "[]"},
      {"entries not objects", R"(["@_user_1","ou_bot",1,null])"},
      {"key missing", R"([{"id":{"open_id":"ou_bot"},"name":"Bot"}])"},
      {"key not a string", R"([{"key":1,"id":{"open_id":"ou_bot"},"name":"Bot"}])"},
      {"key not in the text", R"([{"key":"@_user_2","id":{"open_id":"ou_bot"},"name":"Bot"}])"},
      {"id missing", R"([{"key":"@_user_1","name":"Bot"}])"},
      {"id null", R"([{"key":"@_user_1","id":null,"name":"Bot"}])"},
      {"id a string", R"([{"key":"@_user_1","id":"ou_bot","name":"Bot"}])"},
      {"id.open_id missing",
       R"([{"key":"@_user_1","id":{"union_id":"ou_bot","user_id":"ou_bot"},"name":"Bot"}])"},
      {"id.open_id not a string", R"([{"key":"@_user_1","id":{"open_id":["ou_bot"]}}])"},
      {"id.open_id empty", R"([{"key":"@_user_1","id":{"open_id":""},"name":"Bot"}])"},
      {"id.open_id another", R"([{"key":"@_user_1","id":{"open_id":"ou_bot2"},"name":"B"}])"},
      {"name only", R"([{"key":"@_user_1","name":"ou_bot"}])"},
  };
  for (const auto &[what, value] : shapes) {
    SECTION(what) {
      const feishu::Event ev = parsed(group_event("mentions", value));
      CHECK_FALSE(ev.direct);
      CHECK_FALSE(feishu::message_content(ev, kBot).mentioned);
      CHECK(verdict(ev) == "policy");
      CHECK(verdict(ev, {false, true, nullptr}) == "");
    }
  }
}

TEST_CASE("feishu policy: the bot's id not known yet is no mention") {
  const feishu::Event ev = parsed(group_event("chat_type", R"("group")"));
  const feishu::Content c = feishu::message_content(ev, "");
  CHECK_FALSE(c.mentioned);
  CHECK(feishu::message_policy(ev, c, {}) == "policy");
  // A mention entry without an open_id does not match an unknown id either.
  const feishu::Event no_id = parsed(group_event("mentions", R"([{"key":"@_user_1"}])"));
  CHECK_FALSE(feishu::message_content(no_id, "").mentioned);
}

TEST_CASE("feishu policy: chat_id missing or of another type is refused, unknown not allowed") {
  feishu::Event ev;
  // Without a chat id nothing is routed (the webhook answers 400, the long
  // connection acks and drops).
  CHECK(feishu::event_parse(group_event("chat_id", nullptr), &ev) ==
        "a message without id or chat");
  CHECK(feishu::event_parse(group_event("chat_id", "1"), &ev) == "a message without id or chat");
  CHECK(feishu::event_parse(group_event("chat_id", R"(["oc_1"])"), &ev) ==
        "a message without id or chat");
  CHECK(feishu::event_parse(group_event("chat_id", "null"), &ev) == "a message without id or chat");
  CHECK(feishu::event_parse(group_event("chat_id", R"("")"), &ev) ==
        "a message without id or chat");
  // A chat id not on allowedChats (nor a case variant of one) is dropped.
  const std::set<std::string> allowed = {"oc_1"};
  CHECK(verdict(parsed(group_event("chat_id", R"("oc_9")")), {true, true, &allowed}) == "policy");
  CHECK(verdict(parsed(group_event("chat_id", R"("OC_1")")), {true, true, &allowed}) == "policy");
}
