#include "dingtalk_protocol.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <simdjson.h>

#include <array>

namespace dingtalk {

std::string hmac_sha256_base64(std::string_view key, std::string_view message) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int n = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char *>(message.data()), message.size(), md.data(), &n);
  std::string out(static_cast<size_t>(n + 2) / 3 * 4, '\0');
  EVP_EncodeBlock(reinterpret_cast<unsigned char *>(out.data()), md.data(), static_cast<int>(n));
  return out;
}

std::string callback_sign(std::string_view timestamp_ms, std::string_view app_secret) {
  return hmac_sha256_base64(app_secret, std::string(timestamp_ms) + "\n" + std::string(app_secret));
}

std::string robot_sign(std::string_view timestamp_ms, std::string_view secret) {
  return hmac_sha256_base64(secret, std::string(timestamp_ms) + "\n" + std::string(secret));
}

std::string url_encode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '_' || c == '.' || c == '~') {
      out += ch;
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0xF];
    }
  }
  return out;
}

bool equal_constant_time(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

namespace {

std::string field(simdjson::dom::element e, std::string_view key) {
  std::string_view s;
  if (e[key].get(s) != simdjson::SUCCESS) return {};
  return std::string(s);
}

int64_t number(simdjson::dom::element e, std::string_view key) {
  int64_t v = 0;
  if (e[key].get(v) == simdjson::SUCCESS) return v;
  // Some fields come as strings.
  return std::strtoll(field(e, key).c_str(), nullptr, 10);
}

}  // namespace

std::string robot_message_parse(std::string_view json, RobotMessage *out) {
  thread_local simdjson::dom::parser parser;  // kept: a fresh one allocates per message
  simdjson::dom::element doc;
  if (parser.parse(json.data(), json.size()).get(doc) != simdjson::SUCCESS || !doc.is_object()) {
    return "not a JSON object";
  }
  *out = RobotMessage{};
  out->msg_id = field(doc, "msgId");
  out->msgtype = field(doc, "msgtype");
  out->conversation_id = field(doc, "conversationId");
  out->conversation_type = field(doc, "conversationType");
  // Fail closed: only the documented string "1" is a single chat. A number
  // (even 1), another string or no field is a group, the stricter case.
  out->group = out->conversation_type != "1";
  out->sender_staff_id = field(doc, "senderStaffId");
  out->sender_id = field(doc, "senderId");
  out->sender_nick = field(doc, "senderNick");
  out->robot_code = field(doc, "robotCode");
  out->session_webhook = field(doc, "sessionWebhook");
  out->session_expires_ms = number(doc, "sessionWebhookExpiredTime");
  out->create_at_ms = number(doc, "createAt");
  // Only the literal true is a mention ("true", 1 or a missing field is not).
  bool at = false;
  if (doc["isInAtList"].get(at) == simdjson::SUCCESS) out->in_at_list = at;
  if (out->msg_id.empty() || out->conversation_id.empty()) return "no msgId or conversationId";
  if (out->sender_staff_id.empty() && out->sender_id.empty()) return "no sender";
  simdjson::dom::element content;
  if (out->msgtype == "text") {
    out->supported = true;
    simdjson::dom::element text;
    if (doc["text"].get(text) == simdjson::SUCCESS) out->text = field(text, "content");
  } else if (out->msgtype == "picture") {
    out->supported = true;
    if (doc["content"].get(content) == simdjson::SUCCESS) {
      out->attachments.push_back({field(content, "downloadCode")});
    }
    out->text = "[image]";
  } else if (out->msgtype == "richText") {
    out->supported = true;
    simdjson::dom::array items;
    if (doc["content"].get(content) == simdjson::SUCCESS &&
        content["richText"].get(items) == simdjson::SUCCESS) {
      for (simdjson::dom::element item : items) {
        if (field(item, "type") == "picture") {
          out->attachments.push_back({field(item, "downloadCode")});
        } else {
          out->text += field(item, "text");
        }
      }
    }
  }
  // The @-mention of the bot arrives as leading or trailing spaces.
  const size_t first = out->text.find_first_not_of(" \t\n");
  const size_t last = out->text.find_last_not_of(" \t\n");
  out->text =
      first == std::string::npos ? std::string() : out->text.substr(first, last - first + 1);
  return {};
}

std::string robot_message_policy(const RobotMessage &m, bool require_mention) {
  if (m.group && require_mention && !m.in_at_list) return "policy";
  return {};
}

std::string stream_frame_parse(std::string_view text, StreamFrame *out) {
  thread_local simdjson::dom::parser parser;  // kept: a fresh one allocates per message
  simdjson::dom::element doc;
  std::string_view type, topic, message_id, data;
  if (parser.parse(text.data(), text.size()).get(doc) != simdjson::SUCCESS) return "not JSON";
  if (doc["type"].get(type) != simdjson::SUCCESS) return "no type";
  if (doc["headers"]["topic"].get(topic) != simdjson::SUCCESS) return "no headers.topic";
  if (doc["headers"]["messageId"].get(message_id) != simdjson::SUCCESS) {
    return "no headers.messageId";
  }
  if (doc["data"].get(data) != simdjson::SUCCESS) data = "";
  out->type = type;
  out->topic = topic;
  out->message_id = message_id;
  out->data = data;
  return {};
}

}  // namespace dingtalk
