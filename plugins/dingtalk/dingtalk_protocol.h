// DingTalk's protocol pieces (pure): the callback and custom-robot
// signatures, URL encoding, and the robot message callback as the plugin
// needs it. Facts: ../shared/protocols.md ("DingTalk"), checked against its
// known-answer vectors in tests/unit/test_dingtalk.cc.
//
// THREAD: safe (pure functions).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace dingtalk {

// base64(HMAC-SHA256(key, message)).
std::string hmac_sha256_base64(std::string_view key, std::string_view message);

// The HTTP callback's `sign`: HMAC keyed with the app secret over
// timestamp + "\n" + app secret.
std::string callback_sign(std::string_view timestamp_ms, std::string_view app_secret);

// A custom group robot's `sign` (before URL encoding): HMAC keyed with the
// robot's secret over timestamp + "\n" + secret.
std::string robot_sign(std::string_view timestamp_ms, std::string_view secret);

// Percent-encodes everything but unreserved characters (RFC 3986).
std::string url_encode(std::string_view s);

bool equal_constant_time(std::string_view a, std::string_view b);

struct Attachment {
  std::string download_code;
};

// A robot message callback (HTTP callback body, or a stream CALLBACK's data).
//
// The fields the policy reads fail closed: whatever is missing, of another
// JSON type or unknown counts as the stricter case. `group` is false only
// for conversationType exactly the string "1" (a number 1 or 2, "2", "3",
// null or no field at all: a group); `in_at_list` is true only for
// isInAtList exactly the JSON literal true.
struct RobotMessage {
  std::string msg_id, msgtype, conversation_id;
  std::string conversation_type;  // as sent when a string ("1", "2"), else ""
  bool group = true;              // see above: a single chat only for "1"
  std::string sender_staff_id, sender_id, sender_nick, robot_code;
  std::string session_webhook;
  int64_t session_expires_ms = 0, create_at_ms = 0;
  bool in_at_list = false;
  bool supported = false;  // text, richText or picture
  std::string text;        // text content, or richText flattened
  std::vector<Attachment> attachments;
};

// "" or why the body is not a robot message.
std::string robot_message_parse(std::string_view json, RobotMessage *out);

// Why the mention policy drops `m`, or "" when it may be answered: a group
// message that does not @-mention the robot, while `require_mention`.
std::string robot_message_policy(const RobotMessage &m, bool require_mention);

// A Stream-mode frame: {"type", "headers": {"topic", "messageId"}, "data"}.
// `data` is empty when absent.
struct StreamFrame {
  std::string type, topic, message_id, data;
};

// "" with *out filled, or why the text is not a Stream frame.
std::string stream_frame_parse(std::string_view text, StreamFrame *out);

}  // namespace dingtalk
