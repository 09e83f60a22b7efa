// feishu.so's state, shared by its files:
//   feishu.cc          entry point, config, lifecycle, inbound events, webhook
//   feishu_api.cc      the open platform's HTTP API: tenant token, replies,
//                      CardKit streaming cards
//   feishu_ws.cc       the long connection (WebSocket, protobuf frames)
//   feishu_event.cc    envelopes and message content (pure)
//   feishu_crypto.cc   AES, signatures (pure)
//
// THREAD: everything runs on the host's loop thread.
#pragma once

#include <chatgate/chatgate.h>

#include <algorithm>
#include <cctype>
#include <chatgate/cpp.hpp>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "feishu_event.h"
#include "plugin_kit.h"

namespace feishu {

enum class Style { kText, kPost, kCard, kStreamingCard };

// The outcome of one open-platform API call.
struct ApiResult {
  int result = 0;    // 0: the platform answered with code 0; else CG_E*
  int http = 0;      // HTTP status, 0 when none came
  int64_t code = 0;  // the platform's code, -1 when the answer was not JSON
  std::string msg;   // the platform's msg, or the transport error
  std::string body;  // the whole answer (JSON)
};
using ApiDone = std::function<void(const ApiResult &)>;

struct Feishu;

// One answer on its way out: the target, and for a streaming card its
// state. Lives from the first reply of an answer to its FINAL's done.
struct Answer {
  Feishu *f = nullptr;
  uint64_t id = 0;
  std::string message_id;  // the message replied to, or empty (a proactive send)
  bool thread = false;
  std::string chat_id;  // for a proactive send
  enum class Card { kNone, kCreating, kLive, kFailed } card = Card::kNone;
  std::string card_id;
  int64_t sequence = 0;
  std::string latest;  // the newest text from the router
  std::string shown;   // what the card shows
  bool updating = false, timer = false, final = false, closing = false;
  // cg_reply_t.delivery: above 1, an earlier attempt (perhaps on an
  // instance that died) may have left a card typing: continued, not doubled.
  uint32_t delivery = 1;
  bool superseded = false;  // a later attempt took its card over: it ends quietly
  uint64_t last_update_ms = 0;
  cg_done_cb done = nullptr;  // the FINAL's
  void *done_arg = nullptr;
  int status = 0;

  // An idempotency key: the same for a retry of the same reply (in this
  // process or another), random for a proactive send.
  std::string uuid(std::string_view what, size_t part) const;
};

struct Feishu : kit::PluginBase {
  Feishu();
  ~Feishu() override;  // in feishu_ws.cc, where Ws is complete
  Feishu(const Feishu &) = delete;
  Feishu &operator=(const Feishu &) = delete;

  // config
  std::string app_id, app_secret, verification_token, encrypt_key, base_url;
  bool longconn = true;
  bool require_mention = true;
  bool allow_direct = true;
  std::set<std::string> allowed_chats;  // empty: every group
  Style style = Style::kText;
  std::optional<std::string> unsupported_reply_setting;  // unset: the catalog's
  uint64_t timestamp_window_ms = 300000;
  uint64_t stream_update_ms = 500;
  int max_retries = 3;

  // the tenant token, refreshed 3 minutes before it expires, as the SDKs do
  kit::TokenCache tokens;

  std::string bot_open_id;  // learned at start (bot/v3/info)

  // Webhook replay protection: "timestamp:nonce" -> when it expires, and
  // the same keys in the order they expire (every entry lives the same
  // time), so expiry costs O(1) a callback. At most kMaxNonces are kept;
  // past that the oldest go first (a replay older than that is still
  // caught by the router's dedupe on the event id).
  std::unordered_map<std::string, uint64_t> nonces;
  std::deque<std::pair<uint64_t, std::string>> nonce_order;

  // answers on their way out, by answer id
  std::unordered_map<uint64_t, std::unique_ptr<Answer>> answers;
  void supersede(const std::string &message_id);

  // long connection
  struct Ws;
  std::unique_ptr<Ws> ws;

  // ---- feishu.cc ----
  // Answers still streaming without their FINAL are dropped: nothing can
  // complete them once nothing is in flight.
  bool can_stop() override;
  // An inbound event from either mode: policy, then the router, which
  // dedupes on the event id.
  // done(ok): false when the router could not take it (tell the platform
  // to retry). With a 1.5 host (emit_message_durable) done runs on a later
  // loop turn, once the router holds the message; the caller acknowledges
  // the platform (webhook answer, long-connection ack) from done only.
  // Pending answers count in in_flight: stop waits for them.
  void handle_event(const Event &ev, const std::function<void(bool ok)> &done);

  // ---- feishu_api.cc ----
  // An open-platform call with the tenant token, retried on token errors
  // (once, with a fresh token), 429 / rate-limit codes and 5xx.
  void call(const std::string &method, const std::string &path, const std::string &body,
            const ApiDone &done, int attempt = 0, bool fresh_token = false);
  // Asks for a tenant token (the TokenCache's fetch).
  int fetch_token(const kit::TokenCache::Settle &settle);
  void fetch_bot_info();
  int send(const cg_reply_t &reply, cg_done_cb done, void *arg);
  // A plain text reply outside the router (the unsupported-type answer).
  void reply_text(const std::string &message_id, bool in_thread, const std::string &text);
  // The answer to a card button press: a toast in the user's language.
  std::string card_toast_json() const;

  // ---- feishu_ws.cc ----
  void ws_start();
  void ws_stop();
  // Takes no new event, closes the connection once the events taken are
  // acked, and does not reconnect (cg_channel_ops_t.quiesce).
  void ws_quiesce();
};

// Feishu's codes for a tenant token that is invalid or expired.
inline bool token_error(int64_t code) {
  return code == 99991663 || code == 99991664 || code == 99991671;
}

}  // namespace feishu
