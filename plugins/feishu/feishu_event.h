// Feishu events as the plugin needs them: the callback and long-connection
// envelopes (schema 2.0 and v1), im.message.receive_v1 and
// card.action.trigger, and a message's content (text, post, image, file)
// flattened into text with attachments. Facts: ../shared/protocols.md.
//
// THREAD: safe (pure functions).
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace feishu {

struct Mention {
  std::string key;  // "@_user_1", as it appears in the text
  std::string open_id;
  std::string name;
};

struct Event {
  // kEncrypted: the body is {"encrypt": ...}; decrypt `encrypt` and parse again.
  enum class Kind { kUrlVerification, kMessage, kCardAction, kOther, kEncrypted };
  Kind kind = Kind::kOther;
  std::string encrypt;     // kEncrypted: the base64 ciphertext
  std::string token;       // verification token (header.token, or token for v1)
  std::string challenge;   // url_verification
  std::string event_id;    // header.event_id, or uuid for v1
  std::string event_type;  // "im.message.receive_v1"
  // im.message.receive_v1
  std::string message_id, chat_id, chat_type, thread_id, root_id, message_type, content;
  // The policy's view of chat_type, failing closed: a one-to-one chat only
  // for chat_type exactly the string "p2p"; "group", "topic_group", any
  // other value, another JSON type or no field at all is a group.
  bool direct = false;
  std::string sender_open_id, sender_type;
  int64_t create_time_ms = 0;
  std::vector<Mention> mentions;
  // card.action.trigger
  std::string action_value;  // action.value.value when a string, else action.value as JSON
  std::string operator_open_id, open_chat_id, open_message_id;
};

// Parses a decrypted callback body or a long-connection event payload.
// Returns "" or why it is not an event ("not JSON", "no event header"...).
std::string event_parse(std::string_view json, Event *out);

struct Attachment {
  enum class Kind { kImage, kFile, kOther };
  Kind kind = Kind::kOther;
  std::string key;   // image_key or file_key
  std::string name;  // file name, or empty
};

struct Content {
  bool supported = false;  // a type the plugin reads (text, post, image, file)
  bool mentioned = false;  // the bot was @-mentioned
  std::string text;        // mention keys resolved: the bot's removed, others "@Name"
  std::vector<Attachment> attachments;
};

// The content of an im.message.receive_v1 event. The bot counts as
// mentioned only when a mention whose key is in the text names the bot's
// open_id (mentions[].id.open_id == bot_open_id); a malformed mentions
// array or entry, a mention without an id, and an unknown bot id
// (`bot_open_id` empty: not learned yet) are no mention of the bot.
Content message_content(const Event &ev, std::string_view bot_open_id);

// What the channel's config says about inbound messages.
struct Policy {
  bool require_mention = true;
  bool allow_direct = true;
  const std::set<std::string> *allowed_chats = nullptr;  // null or empty: every group
};

// Why the policy drops a message event, or "" when it may be answered.
// Direct chats (ev.direct) need allow_direct; groups need an allowed
// chat_id and, while require_mention, the bot's mention in `content`.
std::string message_policy(const Event &ev, const Content &content, const Policy &policy);

}  // namespace feishu
