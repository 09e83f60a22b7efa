#include "router/chat_request.h"

namespace cg {
namespace {

constexpr size_t kMaxIdBytes = 256;

// Reads an optional string member; false when present but not a string.
// A null member counts as absent, as JSON encoders write unset fields so.
bool optional_string(simdjson::dom::object obj, std::string_view key, std::string_view *out) {
  simdjson::dom::element el;
  if (obj[key].get(el) != simdjson::SUCCESS || el.is_null()) return true;  // absent
  return el.get_string().get(*out) == simdjson::SUCCESS;
}

}  // namespace

std::string chat_request_parse(simdjson::dom::parser &parser, std::string_view body,
                               ChatRequest *out) {
  simdjson::dom::element doc;
  if (const auto err = parser.parse(body.data(), body.size()).get(doc); err != simdjson::SUCCESS) {
    return err == simdjson::UTF8_ERROR ? "body is not valid UTF-8" : "body is not valid JSON";
  }
  simdjson::dom::object obj;
  if (doc.get_object().get(obj) != simdjson::SUCCESS) return "body must be a JSON object";
  ChatRequest r;
  if (!optional_string(obj, "userId", &r.user_id) || r.user_id.empty()) {
    return "\"userId\" is required and must be a non-empty string";
  }
  if (!optional_string(obj, "query", &r.query) || r.query.empty()) {
    return "\"query\" is required and must be a non-empty string";
  }
  if (!optional_string(obj, "conversationId", &r.conversation_id)) {
    return "\"conversationId\" must be a string";
  }
  if (!optional_string(obj, "messageId", &r.message_id)) return "\"messageId\" must be a string";
  if (r.user_id.size() > kMaxIdBytes || r.conversation_id.size() > kMaxIdBytes ||
      r.message_id.size() > kMaxIdBytes) {
    return "ids must be at most 256 bytes";
  }
  simdjson::dom::element stream_el;
  if (obj["stream"].get(stream_el) == simdjson::SUCCESS && !stream_el.is_null() &&
      stream_el.get_bool().get(r.stream) != simdjson::SUCCESS) {
    return "\"stream\" must be true or false";
  }
  *out = r;
  return {};
}

}  // namespace cg
