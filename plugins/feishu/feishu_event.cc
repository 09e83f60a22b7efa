#include "feishu_event.h"

#include <simdjson.h>

#include <cstdlib>

namespace feishu {
namespace {

using simdjson::dom::element;

// The string at `key`, or "" when absent or not a string.
std::string field(element e, std::string_view key) {
  std::string_view s;
  if (e[key].get(s) != simdjson::SUCCESS) return {};
  return std::string(s);
}

void parse_message(element event, Event *out) {
  element sender, message;
  if (event["sender"].get(sender) == simdjson::SUCCESS) {
    out->sender_type = field(sender, "sender_type");
    element id;
    if (sender["sender_id"].get(id) == simdjson::SUCCESS)
      out->sender_open_id = field(id, "open_id");
  }
  if (event["message"].get(message) != simdjson::SUCCESS) return;
  out->message_id = field(message, "message_id");
  out->chat_id = field(message, "chat_id");
  out->chat_type = field(message, "chat_type");
  out->direct = out->chat_type == "p2p";  // anything else is a group: fail closed
  out->thread_id = field(message, "thread_id");
  out->root_id = field(message, "root_id");
  out->message_type = field(message, "message_type");
  out->content = field(message, "content");
  out->create_time_ms = std::strtoll(field(message, "create_time").c_str(), nullptr, 10);
  simdjson::dom::array mentions;
  if (message["mentions"].get(mentions) == simdjson::SUCCESS) {
    for (element m : mentions) {
      Mention mention;
      mention.key = field(m, "key");
      mention.name = field(m, "name");
      element id;
      if (m["id"].get(id) == simdjson::SUCCESS) mention.open_id = field(id, "open_id");
      out->mentions.push_back(std::move(mention));
    }
  }
}

void parse_card_action(element event, Event *out) {
  element op, action, context, value;
  if (event["operator"].get(op) == simdjson::SUCCESS) out->operator_open_id = field(op, "open_id");
  if (event["context"].get(context) == simdjson::SUCCESS) {
    out->open_chat_id = field(context, "open_chat_id");
    out->open_message_id = field(context, "open_message_id");
  }
  if (event["action"].get(action) != simdjson::SUCCESS ||
      action["value"].get(value) != simdjson::SUCCESS) {
    return;
  }
  // A button made by chatgate carries {"value": "<text>"}; anything else is
  // routed as its JSON.
  std::string_view s;
  if (value.get(s) == simdjson::SUCCESS || value["value"].get(s) == simdjson::SUCCESS) {
    out->action_value = std::string(s);
  } else {
    out->action_value = simdjson::minify(value);
  }
}

}  // namespace

std::string event_parse(std::string_view json, Event *out) {
  // One parser per thread, kept: a fresh one allocates its buffers for
  // every callback (the fields are copied out before it parses again).
  thread_local simdjson::dom::parser parser;
  element doc;
  if (parser.parse(json.data(), json.size()).get(doc) != simdjson::SUCCESS || !doc.is_object()) {
    return "not a JSON object";
  }
  *out = Event{};
  if (std::string_view enc; doc["encrypt"].get(enc) == simdjson::SUCCESS) {
    out->kind = Event::Kind::kEncrypted;
    out->encrypt = std::string(enc);
    return {};
  }
  const std::string type = field(doc, "type");
  if (type == "url_verification") {
    out->kind = Event::Kind::kUrlVerification;
    out->token = field(doc, "token");
    out->challenge = field(doc, "challenge");
    return out->challenge.empty() ? "url_verification without a challenge" : "";
  }
  element event;
  if (doc["event"].get(event) != simdjson::SUCCESS || !event.is_object()) return "no event";
  element header;
  if (field(doc, "schema") == "2.0") {
    if (doc["header"].get(header) != simdjson::SUCCESS) return "schema 2.0 without a header";
    out->token = field(header, "token");
    out->event_id = field(header, "event_id");
    out->event_type = field(header, "event_type");
  } else if (!field(doc, "uuid").empty()) {
    // v1: {"uuid","ts","token","type":"event_callback","event":{"type":...}}
    out->token = field(doc, "token");
    out->event_id = field(doc, "uuid");
    out->event_type = field(event, "type");
  } else {
    return "neither a schema 2.0 nor a v1 envelope";
  }
  if (out->event_id.empty()) return "an event without an id";
  if (out->event_type == "im.message.receive_v1") {
    out->kind = Event::Kind::kMessage;
    parse_message(event, out);
    if (out->message_id.empty() || out->chat_id.empty()) return "a message without id or chat";
  } else if (out->event_type == "card.action.trigger") {
    out->kind = Event::Kind::kCardAction;
    parse_card_action(event, out);
  }
  return {};
}

namespace {

// Resolves mention keys in `text`: the bot's vanish (and set mentioned),
// other users' (and all of them while the bot's id is unknown) become
// "@Name".
void resolve_mentions(const Event &ev, std::string_view bot, std::string *text, bool *mentioned) {
  for (const Mention &m : ev.mentions) {
    if (m.key.empty()) continue;
    // Only an entry that names the bot's (known) open_id is the bot's.
    const bool is_bot = !bot.empty() && m.open_id == bot;
    for (size_t at = text->find(m.key); at != std::string::npos; at = text->find(m.key, at)) {
      // "@_user_1" must not match the start of "@_user_10".
      const size_t end = at + m.key.size();
      if (end < text->size() && (*text)[end] >= '0' && (*text)[end] <= '9') {
        at = end;
        continue;
      }
      const std::string with = is_bot ? std::string() : "@" + m.name;
      text->replace(at, m.key.size(), with);
      at += with.size();
      if (is_bot) *mentioned = true;
    }
  }
  // The bot's mention leaves a space behind ("@_user_1 hi" -> " hi").
  const size_t first = text->find_first_not_of(" \t\n");
  const size_t last = text->find_last_not_of(" \t\n");
  *text = first == std::string::npos ? std::string() : text->substr(first, last - first + 1);
}

// A post's paragraphs ([[{tag,...}]]) flattened: one line per paragraph.
void flatten_post(element post, Content *out) {
  std::string_view title;
  if (post["title"].get(title) == simdjson::SUCCESS && !title.empty()) {
    out->text.append(title).append("\n");
  }
  simdjson::dom::array paragraphs;
  if (post["content"].get(paragraphs) != simdjson::SUCCESS) return;
  for (element para : paragraphs) {
    simdjson::dom::array items;
    if (para.get(items) != simdjson::SUCCESS) continue;
    for (element item : items) {
      const std::string tag = field(item, "tag");
      if (tag == "text" || tag == "a" || tag == "md" || tag == "code_block") {
        out->text += field(item, "text");
      } else if (tag == "at") {
        // The user_id of a received post's @ is the mention key.
        out->text += field(item, "user_id");
      } else if (tag == "img") {
        out->attachments.push_back({Attachment::Kind::kImage, field(item, "image_key"), {}});
      } else if (tag == "media") {
        out->attachments.push_back({Attachment::Kind::kFile, field(item, "file_key"), {}});
      }
    }
    out->text += "\n";
  }
}

}  // namespace

Content message_content(const Event &ev, std::string_view bot_open_id) {
  Content out;
  thread_local simdjson::dom::parser parser;  // as event_parse's
  element content;
  if (parser.parse(ev.content.data(), ev.content.size()).get(content) != simdjson::SUCCESS) {
    return out;
  }
  if (ev.message_type == "text") {
    out.supported = true;
    out.text = field(content, "text");
  } else if (ev.message_type == "post") {
    out.supported = true;
    // Received posts come as {"title","content"}, or wrapped in a locale.
    element post = content;
    if (content["content"].error() == simdjson::NO_SUCH_FIELD) {
      simdjson::dom::object obj;
      if (content.get(obj) == simdjson::SUCCESS) {
        for (auto [locale, body] : obj) {
          post = body;
          break;
        }
      }
    }
    flatten_post(post, &out);
  } else if (ev.message_type == "image") {
    out.supported = true;
    out.attachments.push_back({Attachment::Kind::kImage, field(content, "image_key"), {}});
    out.text = "[image]";
  } else if (ev.message_type == "file") {
    out.supported = true;
    const std::string name = field(content, "file_name");
    out.attachments.push_back({Attachment::Kind::kFile, field(content, "file_key"), name});
    out.text = "[file: " + name + "]";
  } else {
    return out;
  }
  resolve_mentions(ev, bot_open_id, &out.text, &out.mentioned);
  return out;
}

std::string message_policy(const Event &ev, const Content &content, const Policy &policy) {
  if (ev.direct) return policy.allow_direct ? "" : "policy";
  if (policy.allowed_chats != nullptr && !policy.allowed_chats->empty() &&
      !policy.allowed_chats->contains(ev.chat_id)) {
    return "policy";
  }
  if (policy.require_mention && !content.mentioned) return "policy";
  return {};
}

}  // namespace feishu
