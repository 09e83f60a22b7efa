// dingtalk.so's state, shared by its files:
//   dingtalk.cc           entry point, config, lifecycle, inbound, HTTP callback
//   dingtalk_api.cc       OpenAPI token, session-webhook replies, robot sends,
//                         AI cards, custom group robots
//   dingtalk_stream.cc    Stream mode (the WebSocket gateway)
//   dingtalk_protocol.cc  signatures and the robot message (pure)
//
// THREAD: everything runs on the host's loop thread.
#pragma once

#include <chatgate/chatgate.h>

#include <algorithm>
#include <cctype>
#include <chatgate/cpp.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "dingtalk_protocol.h"
#include "plugin_kit.h"

namespace dingtalk {

enum class Style { kText, kMarkdown, kAiCard };

struct Dingtalk;

// The outcome of one HTTP call to DingTalk.
struct ApiResult {
  int result = 0;  // 0: accepted; else CG_E*
  int http = 0;
  std::string code;  // the error code DingTalk gave ("InvalidAuthentication", "310000"), if any
  std::string msg;
  std::string body;
};
using ApiDone = std::function<void(const ApiResult &)>;

// Where a reply goes: what the inbound message carried (its reply token).
struct Target {
  std::string webhook;  // the session webhook, or empty
  int64_t webhook_expires_ms = 0;
  std::string staff_id;         // the sender (single chats; @-mentioned in groups)
  std::string conversation_id;  // openConversationId
  bool group = false;
  std::string robot;  // a custom group robot's name, for proactive sends to it
};

// One answer on its way out. Lives from its first reply to its FINAL's done.
struct Answer {
  Dingtalk *d = nullptr;
  uint64_t id = 0;
  Target target;
  std::string msg_id;  // the inbound message, for idempotency keys
  enum class Card { kNone, kCreating, kLive, kFailed } card = Card::kNone;
  std::string out_track_id;
  std::string latest, shown;
  bool updating = false, timer = false, final = false, error = false;
  // cg_reply_t.delivery: above 1, an earlier attempt (perhaps on an
  // instance that died) may have left its AI card typing: the card's
  // outTrackId is the message's, so it is streamed to, not created again.
  uint32_t delivery = 1;
  bool resuming = false;      // streaming to an earlier attempt's card, not yet confirmed
  bool resume_tried = false;  // once: no card of an earlier attempt, so one is created
  bool superseded = false;    // a later attempt took the card over: it ends quietly
  uint64_t last_update_ms = 0;
  cg_done_cb done = nullptr;
  void *done_arg = nullptr;
};

struct CustomRobot {
  std::string url;  // https://oapi.dingtalk.com/robot/send?access_token=...
  std::string secret;
};

struct Dingtalk : kit::PluginBase {
  Dingtalk();
  ~Dingtalk() override;  // in dingtalk_stream.cc, where Stream is complete
  Dingtalk(const Dingtalk &) = delete;
  Dingtalk &operator=(const Dingtalk &) = delete;

  // config
  std::string client_id, client_secret, robot_code, api_base;
  bool stream = true;
  bool require_mention = true;
  Style style = Style::kText;
  std::string card_template, card_key;
  std::optional<std::string> unsupported_reply_setting;  // unset: the catalog's
  std::map<std::string, CustomRobot> robots;
  uint64_t timestamp_window_ms = 300000;
  uint64_t stream_update_ms = 500;
  int max_retries = 3;
  uint64_t ping_interval_ms = 60000;  // Stream mode's WebSocket pings

  // the OpenAPI access token, refreshed 5 minutes before it expires
  kit::TokenCache tokens;

  std::unordered_map<uint64_t, std::unique_ptr<Answer>> answers;
  // Ids of the plugin's own replies in `answers`: the top bit set, so they
  // never meet the router's cg_reply_t.answer_id.
  uint64_t next_own_answer = uint64_t{1} << 63;
  void supersede(const std::string &msg_id);

  struct Stream;
  std::unique_ptr<Stream> stream_state;

  // ---- dingtalk.cc ----
  // Answers still streaming without their FINAL are dropped.
  bool can_stop() override;
  // A robot message from either mode: policy, then the router, which
  // dedupes on msgId.
  // done(ok): false when the router could not take it.
  void handle_message(const RobotMessage &m, const std::function<void(bool)> &done);

  // ---- dingtalk_api.cc ----
  // An OpenAPI call with the access token, retried on 401 (once, with a
  // fresh token), 429 and 5xx.
  void call(const std::string &method, const std::string &path, const std::string &body,
            const ApiDone &done, int attempt = 0, bool fresh_token = false);
  int send(const cg_reply_t &reply, cg_done_cb done, void *arg);
  // A plain-text reply of the plugin's own (not the router's) to the
  // message whose reply token (dingtalk.cc's reply_token) is `token`; a
  // failure is logged.
  void reply_plain(const std::string &token, const std::string &msg_id, const std::string &text);
  // Asks for an access token (the TokenCache's fetch).
  int fetch_token(const kit::TokenCache::Settle &settle);

  // ---- dingtalk_stream.cc ----
  void stream_start();
  void stream_stop();
  // Takes no new message, closes the connection once the messages taken
  // are acked, and does not reconnect (cg_channel_ops_t.quiesce).
  void stream_quiesce();
};

}  // namespace dingtalk
