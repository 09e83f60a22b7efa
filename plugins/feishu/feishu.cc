// feishu.so: a Feishu / Lark bot as a chatgate channel. Two inbound modes:
// the long connection (default; no public address needed) and webhook
// callbacks on POST /webhook/<instance>. Replies go through the open
// platform's reply API as text, post, card or a streaming CardKit card.
// Operator guide: docs/channels/feishu.md.
#include <simdjson.h>

#include <algorithm>
#include <chatgate/json.hpp>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "feishu_crypto.h"
#include "feishu_plugin.h"

namespace feishu {
namespace {

constexpr auto sv = chatgate::view;
constexpr auto cs = chatgate::str;
constexpr size_t kMaxNonces = 100000;

const cg_config_field_t kFields[] = {
    {sizeof(cg_config_field_t), CG_CFG_STRING, CG_CFG_REQUIRED, "appId", nullptr,
     "the app's App ID (cli_...)", nullptr, 0, 0},
    {sizeof(cg_config_field_t), CG_CFG_STRING, CG_CFG_REQUIRED | CG_CFG_SECRET, "appSecret",
     nullptr, "the app's App Secret", nullptr, 0, 0},
    {sizeof(cg_config_field_t), CG_CFG_STRING, CG_CFG_SECRET, "verificationToken", "",
     "Verification Token of the event subscription (required in webhook mode)", nullptr, 0, 0},
    {sizeof(cg_config_field_t), CG_CFG_STRING, CG_CFG_SECRET, "encryptKey", "",
     "Encrypt Key of the event subscription: callbacks are then encrypted and signed", nullptr, 0,
     0},
    {sizeof(cg_config_field_t), CG_CFG_STRING, 0, "domain", "feishu",
     "feishu, lark, or a base URL such as https://open.feishu.cn", nullptr, 0, 0},
    {sizeof(cg_config_field_t), CG_CFG_ENUM, 0, "mode", "longconn",
     "longconn (a WebSocket to Feishu, no public address) or webhook", "longconn|webhook", 0, 0},
    {sizeof(cg_config_field_t), CG_CFG_BOOL, 0, "requireMention", "true",
     "in groups, answer only messages that @-mention the bot", nullptr, 0, 0},
    {sizeof(cg_config_field_t), CG_CFG_STRING_LIST, 0, "allowedChats", nullptr,
     "group chat ids (oc_...) to answer in; empty: every group the bot is in", nullptr, 0, 0},
    {sizeof(cg_config_field_t), CG_CFG_BOOL, 0, "directMessages", "true",
     "answer one-to-one (p2p) chats", nullptr, 0, 0},
    {sizeof(cg_config_field_t), CG_CFG_ENUM, 0, "replyStyle", "text",
     "how answers look: text, post, card, or streaming-card (CardKit, updated as the model writes)",
     "text|post|card|streaming-card", 0, 0},
    {sizeof(cg_config_field_t), CG_CFG_STRING, 0, "unsupportedReply", nullptr,
     "the answer to message types the bot does not read (audio, stickers...); unset: the "
     "message catalog's 'unsupported' in the instance's locale; empty: stay silent",
     nullptr, 0, 0},
    {sizeof(cg_config_field_t), CG_CFG_INT, 0, "timestampWindowSeconds", "300",
     "webhook mode: callbacks signed longer ago than this are refused", nullptr, 1, 86400},
    {sizeof(cg_config_field_t), CG_CFG_INT, 0, "streamUpdateMs", "500",
     "streaming-card: the least time between two updates of a card", nullptr, 100, 60000},
    {sizeof(cg_config_field_t), CG_CFG_INT, 0, "requestTimeoutMs", "10000",
     "one open-platform API request", nullptr, 100, 600000},
    {sizeof(cg_config_field_t), CG_CFG_INT, 0, "maxRetries", "3",
     "retries of an API call after 429, a rate-limit code, 5xx or a network error", nullptr, 0, 10},
};

// Checks X-Lark-Signature, the timestamp window and the nonce. "" or why not.
std::string check_signature(Feishu *f, const cg_http_request_t *req) {
  const std::string ts = kit::header_value(req, "X-Lark-Request-Timestamp");
  const std::string nonce = kit::header_value(req, "X-Lark-Request-Nonce");
  const std::string sig = kit::header_value(req, "X-Lark-Signature");
  if (ts.empty() || nonce.empty() || sig.empty()) return "missing X-Lark-Signature headers";
  if (!equal_constant_time(signature(ts, nonce, f->encrypt_key, sv(req->body)), sig)) {
    return "bad signature";
  }
  if (!kit::timestamp_fresh(ts, 1000, f->timestamp_window_ms)) {
    return "timestamp outside the window of timestampWindowSeconds";
  }
  const uint64_t mono = f->api->now_ms(f->host);
  const uint64_t expires = mono + f->timestamp_window_ms * 2;
  while (!f->nonce_order.empty() &&
         (f->nonce_order.front().first <= mono || f->nonces.size() >= kMaxNonces)) {
    auto &[when, key] = f->nonce_order.front();
    // A key seen again later has a later expiry: only its last entry removes it.
    if (auto old = f->nonces.find(key); old != f->nonces.end() && old->second == when) {
      f->nonces.erase(old);
    }
    f->nonce_order.pop_front();
  }
  std::string key = ts + ":" + nonce;
  auto [it, fresh] = f->nonces.try_emplace(key, expires);
  if (!fresh && it->second > mono) return "replayed nonce";
  it->second = expires;
  f->nonce_order.emplace_back(expires, std::move(key));
  return {};
}

void on_webhook(void *arg, cg_http_exchange_t *ex, const cg_http_request_t *req) {
  auto *f = static_cast<Feishu *>(arg);
  if (f->verification_token.empty()) {
    return f->refuse_callback(ex, 403,
                              "webhook callbacks are off: set verificationToken to take them", req);
  }
  Event ev;
  if (std::string err = event_parse(sv(req->body), &ev); !err.empty()) {
    return f->refuse_callback(ex, 400, "malformed callback: " + err, req);
  }
  if (ev.kind == Event::Kind::kEncrypted) {
    if (f->encrypt_key.empty()) {
      return f->refuse_callback(ex, 400, "an encrypted callback, but no encryptKey is configured",
                                req);
    }
    std::string plain;
    if (!decrypt(f->encrypt_key, ev.encrypt, &plain)) {
      return f->refuse_callback(ex, 400, "cannot decrypt the callback (is encryptKey right?)", req);
    }
    std::string err = event_parse(plain, &ev);
    if (err.empty() && ev.kind == Event::Kind::kEncrypted) err = "encrypted twice";
    if (!err.empty()) return f->refuse_callback(ex, 400, "malformed callback: " + err, req);
  }
  if (!equal_constant_time(ev.token, f->verification_token)) {
    return f->refuse_callback(ex, 401, "verification token mismatch", req);
  }
  if (ev.kind == Event::Kind::kUrlVerification) {
    // The SDKs skip the signature for the challenge: the console sends none.
    f->log(CG_LOG_INFO, "webhook: answered Feishu's URL verification");
    return f->respond_json(ex, 200, "{\"challenge\":" + chatgate::json_string(ev.challenge) + "}");
  }
  if (!f->encrypt_key.empty()) {
    if (std::string err = check_signature(f, req); !err.empty()) {
      return f->refuse_callback(ex, 401, err, req);
    }
  }
  const bool card = ev.kind == Event::Kind::kCardAction;
  f->handle_event(ev, [f, ex, card](bool ok) {
    if (!ok) {
      f->respond_json(ex, 503, R"({"msg":"busy, retry"})");
    } else if (card) {
      f->respond_json(ex, 200, f->card_toast_json());
    } else {
      f->respond_json(ex, 200, R"({"msg":"success"})");
    }
  });
}

// ---- inbound ----

void route(Feishu *f, const Event &ev, const std::function<void(bool)> &done) {
  cg_message_t m{};
  m.struct_size = sizeof m;
  std::string conversation, reply_token, text;
  std::vector<cg_attachment_t> atts;
  Content content;
  if (ev.kind == Event::Kind::kCardAction) {
    // A button press: its value is what the user "says".
    m.conversation_type = CG_CONV_DIRECT;
    m.id = cs(ev.event_id);
    conversation = ev.open_chat_id;
    m.sender_id = cs(ev.operator_open_id);
    text = ev.action_value;
    reply_token = ev.open_message_id;
  } else {
    if (ev.sender_type == "app") return done(true);  // a bot's message, maybe our own
    const bool direct = ev.direct;
    content = message_content(ev, f->bot_open_id);
    std::string why =
        message_policy(ev, content, {f->require_mention, f->allow_direct, &f->allowed_chats});
    if (why.empty() && !content.supported) {
      why = "unsupported";
      const std::string reply = f->unsupported_reply(f->unsupported_reply_setting);
      if (!reply.empty()) f->reply_text(ev.message_id, !ev.thread_id.empty(), reply);
    }
    if (!why.empty()) {
      f->api->message_dropped(f->host, cs(why));
      return done(true);
    }
    m.conversation_type = direct ? CG_CONV_DIRECT : CG_CONV_GROUP;
    m.id = cs(ev.message_id);
    // Each topic of a topic group is its own conversation.
    conversation = ev.thread_id.empty() ? ev.chat_id : ev.chat_id + ":" + ev.thread_id;
    m.sender_id = cs(ev.sender_open_id);
    m.mentioned = content.mentioned ? 1 : 0;
    m.timestamp_ms = ev.create_time_ms;
    text = content.text;
    reply_token = ev.thread_id.empty() ? ev.message_id : ev.message_id + "|t";
    for (const Attachment &a : content.attachments) {
      cg_attachment_t c{};
      c.struct_size = sizeof c;
      c.kind = a.kind == Attachment::Kind::kImage  ? CG_ATTACH_IMAGE
               : a.kind == Attachment::Kind::kFile ? CG_ATTACH_FILE
                                                   : CG_ATTACH_OTHER;
      c.key = cs(a.key);
      c.name = cs(a.name);
      atts.push_back(c);
    }
  }
  m.conversation_id = cs(conversation);
  m.text = cs(text);
  m.reply_token = cs(reply_token);
  m.attachment_count = static_cast<uint32_t>(atts.size());
  m.attachments = atts.empty() ? nullptr : atts.data();
  // The router dedupes on the event id: a re-push, a reconnect's replay or
  // a second instance sharing the cache never answers twice.
  m.dedupe_key = cs(ev.event_id);
  // Acknowledged only once the router holds it (ABI 1.5; kit emit).
  f->emit(m, "event " + ev.event_id, "Feishu is told to push event " + ev.event_id + " again",
          done);
}

}  // namespace

bool Feishu::can_stop() {
  // Answers that never got their FINAL (the router stopped first) go, but
  // only once no call of theirs is out: its completion still uses them.
  std::erase_if(answers, [](const auto &kv) {
    const Answer &a = *kv.second;
    return a.done == nullptr && !a.updating && !a.closing && a.card != Answer::Card::kCreating;
  });
  return answers.empty();
}

void Feishu::handle_event(const Event &ev, const std::function<void(bool)> &done) {
  if (ev.kind != Event::Kind::kMessage && ev.kind != Event::Kind::kCardAction) {
    log(CG_LOG_DEBUG, "ignored event " + ev.event_type);
    return done(true);
  }
  if (stopping) return done(false);
  route(this, ev, done);
}

namespace {

int fs_init(const cg_host_api_t *api, cg_host_t *host, const cg_config_t *cfg, void **state) {
  if (api->abi_minor < 3) {
    api->set_error(host, cs("feishu.so needs chatgate's plugin ABI 1.3 or newer"));
    return CG_ENOTSUP;
  }
  auto f = std::make_unique<Feishu>();
  f->api = api;
  f->host = host;
  f->name = std::string(sv(api->instance_name(host)));
  f->app_id = kit::config_string(api, cfg, "appId");
  f->app_secret = kit::config_string(api, cfg, "appSecret");
  f->verification_token = kit::config_string(api, cfg, "verificationToken");
  f->encrypt_key = kit::config_string(api, cfg, "encryptKey");
  const std::string domain = kit::config_string(api, cfg, "domain");
  if (domain == "feishu") {
    f->base_url = "https://open.feishu.cn";
  } else if (domain == "lark") {
    f->base_url = "https://open.larksuite.com";
  } else if (domain.starts_with("https://") || domain.starts_with("http://")) {
    f->base_url = domain;
    while (f->base_url.ends_with("/")) f->base_url.pop_back();
  } else {
    api->set_error(host, cs("domain must be feishu, lark, or a base URL (https://...)"));
    return CG_ECONFIG;
  }
  f->longconn = kit::config_string(api, cfg, "mode") == "longconn";
  if (!f->longconn && f->verification_token.empty()) {
    api->set_error(host, cs("webhook mode needs verificationToken (the event subscription's "
                            "Verification Token): without it anyone could post events"));
    return CG_ECONFIG;
  }
  f->require_mention = kit::config_bool(api, cfg, "requireMention");
  f->allow_direct = kit::config_bool(api, cfg, "directMessages");
  size_t n = 0;
  if (api->config_list_size(cfg, "allowedChats", &n) == 0) {
    for (size_t i = 0; i < n; ++i) {
      cg_str_t s{};
      if (api->config_list_item(cfg, "allowedChats", i, &s) == 0) {
        f->allowed_chats.emplace(sv(s));
      }
    }
  }
  const std::string style = kit::config_string(api, cfg, "replyStyle");
  f->style = style == "post"             ? Style::kPost
             : style == "card"           ? Style::kCard
             : style == "streaming-card" ? Style::kStreamingCard
                                         : Style::kText;
  f->unsupported_reply_setting = kit::config_string_if_set(api, cfg, "unsupportedReply");
  f->timestamp_window_ms =
      static_cast<uint64_t>(kit::config_int(api, cfg, "timestampWindowSeconds")) * 1000;
  f->stream_update_ms = static_cast<uint64_t>(kit::config_int(api, cfg, "streamUpdateMs"));
  f->request_timeout_ms = static_cast<uint64_t>(kit::config_int(api, cfg, "requestTimeoutMs"));
  f->max_retries = static_cast<int>(kit::config_int(api, cfg, "maxRetries"));
  if (api->abi_minor >= 4) {
    // Only the streaming card shows partial answers: the router sends the
    // other styles each answer's FINAL reply alone.
    uint64_t caps = CG_CHANNEL_CAP_MARKDOWN;
    if (f->style == Style::kStreamingCard) caps |= CG_CHANNEL_CAP_STREAMING;
    if (const int rc = api->set_capabilities(host, caps); rc != 0) return rc;
  }
  *state = f.release();
  return 0;
}

int fs_start(void *state) {
  auto *f = static_cast<Feishu *>(state);
  // Both modes take callbacks: card actions come by HTTP when the card
  // callback URL is set, even with the long connection for messages.
  const std::string path = "/webhook/" + f->name;
  if (const int rc = f->api->http_route_add(f->host, cs("POST"), cs(path), 0, on_webhook, f);
      rc != 0) {
    f->api->set_error(f->host, cs("cannot register " + path + ": " + cg_strerror(rc)));
    return rc;
  }
  f->fetch_bot_info();
  if (f->longconn) {
    f->api->set_state(f->host, CG_STATE_STARTING, cs("opening the long connection"));
    f->ws_start();
  }
  return 0;
}

void fs_stop(void *state, cg_done_cb done, void *arg) {
  auto *f = static_cast<Feishu *>(state);
  f->stopping = true;
  f->ws_stop();
  f->stop_io();
  f->begin_stop(done, arg);
}

void fs_destroy(void *state) { delete static_cast<Feishu *>(state); }

int fs_send(void *state, const cg_reply_t *reply, cg_done_cb done, void *arg) {
  return static_cast<Feishu *>(state)->send(*reply, done, arg);
}

void fs_quiesce(void *state) {
  auto *f = static_cast<Feishu *>(state);
  if (f->longconn) f->ws_quiesce();
}

const cg_channel_ops_t kOps = {sizeof(cg_channel_ops_t), fs_send, fs_quiesce};

const cg_plugin_t kPlugin = {
    sizeof(cg_plugin_t),
    CG_ABI_MAJOR,
    3,
    CG_KIND_CHANNEL,
    "feishu",
    "0.1.0",
    "Feishu / Lark bot: long connection or webhook, text, post, card and streaming-card replies",
    CG_CHANNEL_CAP_STREAMING | CG_CHANNEL_CAP_MARKDOWN,
    kFields,
    sizeof(kFields) / sizeof(kFields[0]),
    0,
    fs_init,
    fs_start,
    fs_stop,
    fs_destroy,
    &kOps,
};

}  // namespace
}  // namespace feishu

extern "C" CG_EXPORT const cg_plugin_t *cg_plugin_entry(uint32_t host_major, uint32_t host_minor) {
  if (host_major != CG_ABI_MAJOR || host_minor < 3) return nullptr;
  return &feishu::kPlugin;
}
