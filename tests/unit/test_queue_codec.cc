// The durable queue's stored message: every field through a round trip,
// any byte in the text, and refusal of what this version cannot read.
#include <catch2/catch.hpp>
#include <string>

#include "host/inbound_message.h"
#include "router/queue_codec.h"

using cg::InboundMessage;

namespace {

InboundMessage sample() {
  InboundMessage m;
  m.conversation_type = CG_CONV_GROUP;
  m.mentioned = true;
  m.stream = true;
  m.timestamp_ms = 1764000000123;
  m.id = "om_1";
  m.conversation_id = "oc_9:thread";
  m.sender_id = "ou_7";
  m.sender_name = "Zhang San 张三";
  m.text = std::string("line\nnul\0inside 12:34 ", 22);
  m.reply_token = R"({"w":"https://x/y","e":1})";
  m.dedupe_key = "ev_1";
  m.attachments.push_back({CG_ATTACH_IMAGE, "https://img", "img_k", "image/png", "a.png"});
  m.attachments.push_back({CG_ATTACH_FILE, "", "file_k", "", ""});
  return m;
}

}  // namespace

TEST_CASE("queue codec: round trip keeps every field", "[queue]") {
  const InboundMessage m = sample();
  std::string data;
  cg::queue_message_encode(m, "fs", &data);
  InboundMessage out;
  std::string channel;
  REQUIRE(cg::queue_message_decode(data, &out, &channel));
  CHECK(channel == "fs");
  CHECK(out.conversation_type == m.conversation_type);
  CHECK(out.mentioned);
  CHECK(out.stream);
  CHECK(out.timestamp_ms == m.timestamp_ms);
  CHECK(out.id == m.id);
  CHECK(out.conversation_id == m.conversation_id);
  CHECK(out.sender_id == m.sender_id);
  CHECK(out.sender_name == m.sender_name);
  CHECK(out.text == m.text);
  CHECK(out.reply_token == m.reply_token);
  CHECK(out.dedupe_key == m.dedupe_key);
  REQUIRE(out.attachments.size() == 2);
  CHECK(out.attachments[0].kind == CG_ATTACH_IMAGE);
  CHECK(out.attachments[0].url == "https://img");
  CHECK(out.attachments[0].name == "a.png");
  CHECK(out.attachments[1].key == "file_k");
  CHECK(out.channel == nullptr);
  CHECK(out.queue_id.empty());
}

TEST_CASE("queue codec: an empty message survives too", "[queue]") {
  std::string data;
  cg::queue_message_encode(InboundMessage{}, "api", &data);
  InboundMessage out;
  std::string channel;
  REQUIRE(cg::queue_message_decode(data, &out, &channel));
  CHECK(channel == "api");
  CHECK(out.text.empty());
  CHECK(out.attachments.empty());
}

TEST_CASE("queue codec: truncated, foreign or corrupt entries are refused", "[queue]") {
  std::string data;
  cg::queue_message_encode(sample(), "fs", &data);
  InboundMessage out;
  std::string channel;
  // Every strict prefix is refused: a field cut anywhere is noticed.
  for (size_t n = 0; n < data.size(); ++n) {
    INFO("prefix of " << n << " bytes");
    CHECK_FALSE(cg::queue_message_decode(std::string_view(data).substr(0, n), &out, &channel));
  }
  CHECK_FALSE(cg::queue_message_decode("cgq2" + data.substr(4), &out, &channel));
  CHECK_FALSE(cg::queue_message_decode(R"({"text":"json"})", &out, &channel));
  CHECK_FALSE(cg::queue_message_decode("cgq199999999999999999999:x", &out, &channel));
  CHECK_FALSE(
      cg::queue_message_decode("cgq1"
                               "0:",
                               &out, &channel));  // no channel
  // A later version's extra fields at the end are ignored.
  CHECK(cg::queue_message_decode(data + "3:new", &out, &channel));
}
