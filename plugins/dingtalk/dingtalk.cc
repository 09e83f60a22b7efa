// dingtalk.so: a DingTalk robot as a chatgate channel. Inbound by Stream
// mode (default; a WebSocket to DingTalk's gateway, no public address) or
// the HTTP callback on POST /webhook/<instance>. Replies through the
// message's session webhook while it lives, else the OpenAPI robot sends;
// AI cards stream the answer; custom group robots are send-only targets.
// Operator guide: docs/channels/dingtalk.md.
#include <simdjson.h>

#include <chatgate/json.hpp>
#include <cstdlib>
#include <ctime>

#include "dingtalk_plugin.h"
#include "dingtalk_protocol.h"

namespace dingtalk {
namespace {

constexpr auto sv = chatgate::view;
constexpr auto cs = chatgate::str;
constexpr auto jstr = chatgate::json_string;
constexpr int64_t kMaxWindowMs = 3600000;  // DingTalk's own limit: an hour

const cg_config_field_t kFields[] = {
    {sizeof(cg_config_field_t), CG_CFG_STRING, CG_CFG_REQUIRED, "clientId", nullptr,
     "the app's Client ID (AppKey)", nullptr, 0, 0},
    {sizeof(cg_config_field_t), CG_CFG_STRING, CG_CFG_REQUIRED | CG_CFG_SECRET, "clientSecret",
     nullptr, "the app's Client Secret (AppSecret)", nullptr, 0, 0},
    {sizeof(cg_config_field_t), CG_CFG_STRING, 0, "robotCode", "",
     "the robot's code; empty: the Client ID (what DingTalk uses for app robots)", nullptr, 0, 0},
    {sizeof(cg_config_field_t), CG_CFG_ENUM, 0, "mode", "stream",
     "stream (a WebSocket to DingTalk, no public address) or webhook (HTTP callback)",
     "stream|webhook", 0, 0},
    {sizeof(cg_config_field_t), CG_CFG_STRING, 0, "apiBase", "https://api.dingtalk.com",
     "the OpenAPI and Stream gateway base URL", nullptr, 0, 0},
    {sizeof(cg_config_field_t), CG_CFG_BOOL, 0, "requireMention", "true",
     "in groups, answer only messages that @-mention the robot", nullptr, 0, 0},
    {sizeof(cg_config_field_t), CG_CFG_ENUM, 0, "replyStyle", "text",
     "text, markdown, or ai-card (an AI card streamed as the model writes; needs cardTemplateId)",
     "text|markdown|ai-card", 0, 0},
    {sizeof(cg_config_field_t), CG_CFG_STRING, 0, "cardTemplateId", "",
     "ai-card: the card template's id (from the card platform)", nullptr, 0, 0},
    {sizeof(cg_config_field_t), CG_CFG_STRING, 0, "cardContentKey", "content",
     "ai-card: the template's streaming text variable", nullptr, 0, 0},
    {sizeof(cg_config_field_t), CG_CFG_STRING, 0, "unsupportedReply", nullptr,
     "the answer to message types the robot does not read (voice, video, files...); unset: the "
     "message catalog's 'unsupported' in the instance's locale; empty: stay silent",
     nullptr, 0, 0},
    {sizeof(cg_config_field_t), CG_CFG_STRING_LIST, CG_CFG_SECRET, "customRobots", nullptr,
     "send-only custom group robots, each \"NAME WEBHOOK_URL [SEC_SECRET]\"", nullptr, 0, 0},
    {sizeof(cg_config_field_t), CG_CFG_INT, 0, "timestampWindowSeconds", "300",
     "webhook mode: callbacks signed longer ago (or later) than this are refused (at most 3600)",
     nullptr, 1, 3600},
    {sizeof(cg_config_field_t), CG_CFG_INT, 0, "streamUpdateMs", "500",
     "ai-card: the least time between two streaming updates", nullptr, 100, 60000},
    {sizeof(cg_config_field_t), CG_CFG_INT, 0, "requestTimeoutMs", "10000",
     "one request to DingTalk", nullptr, 100, 600000},
    {sizeof(cg_config_field_t), CG_CFG_INT, 0, "maxRetries", "3",
     "retries after 429, 5xx or a network error", nullptr, 0, 10},
    {sizeof(cg_config_field_t), CG_CFG_INT, 0, "pingIntervalMs", "60000",
     "stream mode: the WebSocket ping interval; a connection silent for two is dropped", nullptr,
     1000, 600000},
};

void on_webhook(void *arg, cg_http_exchange_t *ex, const cg_http_request_t *req) {
  auto *d = static_cast<Dingtalk *>(arg);
  if (d->stream) {
    return d->refuse_callback(ex, 403,
                              "this instance takes messages by Stream mode, not by callback", req);
  }
  const std::string ts = kit::header_value(req, "timestamp");
  const std::string sign = kit::header_value(req, "sign");
  if (ts.empty() || sign.empty())
    return d->refuse_callback(ex, 401, "missing timestamp or sign", req);
  if (!equal_constant_time(callback_sign(ts, d->client_secret), sign)) {
    return d->refuse_callback(ex, 401, "bad sign", req);
  }
  if (!kit::timestamp_fresh(ts, 1, d->timestamp_window_ms)) {
    return d->refuse_callback(ex, 401, "timestamp outside the window of timestampWindowSeconds",
                              req);
  }
  RobotMessage m;
  if (std::string err = robot_message_parse(sv(req->body), &m); !err.empty()) {
    return d->refuse_callback(ex, 400, "malformed callback: " + err, req);
  }
  // The exchange stays open until the router holds the message (ABI 1.5:
  // emit_message_durable's done): 2xx only then, 503 when it did not take it.
  d->handle_message(m, [d, ex](bool ok) {
    d->respond_json(ex, ok ? 200 : 503, ok ? "{}" : R"({"msg":"busy, retry"})");
  });
}

std::string reply_token(const RobotMessage &m) {
  return "{\"w\":" + jstr(m.session_webhook) + ",\"e\":" + std::to_string(m.session_expires_ms) +
         ",\"u\":" + jstr(m.sender_staff_id.empty() ? m.sender_id : m.sender_staff_id) +
         ",\"c\":" + jstr(m.conversation_id) + ",\"g\":" + (m.group ? "true" : "false") + "}";
}

void route(Dingtalk *d, const RobotMessage &m, const std::function<void(bool)> &done) {
  const bool group = m.group;
  std::string why = robot_message_policy(m, d->require_mention);
  if (why.empty() && !m.supported) {
    why = "unsupported";
    const std::string reply = d->unsupported_reply(d->unsupported_reply_setting);
    if (!reply.empty()) d->reply_plain(reply_token(m), m.msg_id, reply);
  }
  if (!why.empty()) {
    d->api->message_dropped(d->host, cs(why));
    return done(true);
  }
  const std::string token = reply_token(m);
  const std::string sender = m.sender_staff_id.empty() ? m.sender_id : m.sender_staff_id;
  std::vector<cg_attachment_t> atts;
  for (const Attachment &a : m.attachments) {
    cg_attachment_t c{};
    c.struct_size = sizeof c;
    c.kind = CG_ATTACH_IMAGE;
    c.key = cs(a.download_code);
    atts.push_back(c);
  }
  cg_message_t msg{};
  msg.struct_size = sizeof msg;
  msg.conversation_type = group ? CG_CONV_GROUP : CG_CONV_DIRECT;
  msg.id = cs(m.msg_id);
  msg.conversation_id = cs(m.conversation_id);
  msg.sender_id = cs(sender);
  msg.sender_name = cs(m.sender_nick);
  msg.text = cs(m.text);
  msg.mentioned = m.in_at_list ? 1 : 0;
  msg.attachment_count = static_cast<uint32_t>(atts.size());
  msg.attachments = atts.empty() ? nullptr : atts.data();
  msg.timestamp_ms = m.create_at_ms;
  msg.reply_token = cs(token);
  // The router dedupes on msgId: DingTalk redelivers, also after an ack,
  // and a second instance sharing the cache must not answer it again.
  msg.dedupe_key = cs(m.msg_id);
  // Acknowledged only once the router holds it (ABI 1.5; kit emit).
  d->emit(msg, m.msg_id, "DingTalk is told to deliver " + m.msg_id + " again", done);
}

}  // namespace

bool Dingtalk::can_stop() {
  // Answers that never got their FINAL (the router stopped first) go, but
  // only once no call of theirs is out: its completion still uses them.
  std::erase_if(answers, [](const auto &kv) {
    const Answer &a = *kv.second;
    return a.done == nullptr && !a.updating && a.card != Answer::Card::kCreating;
  });
  return answers.empty();
}

void Dingtalk::handle_message(const RobotMessage &m, const std::function<void(bool)> &done) {
  if (stopping) return done(false);
  route(this, m, done);
}

namespace {

int dt_init(const cg_host_api_t *api, cg_host_t *host, const cg_config_t *cfg, void **state) {
  if (api->abi_minor < 3) {
    api->set_error(host, cs("dingtalk.so needs chatgate's plugin ABI 1.3 or newer"));
    return CG_ENOTSUP;
  }
  auto d = std::make_unique<Dingtalk>();
  d->api = api;
  d->host = host;
  d->name = std::string(sv(api->instance_name(host)));
  d->client_id = kit::config_string(api, cfg, "clientId");
  d->client_secret = kit::config_string(api, cfg, "clientSecret");
  d->robot_code = kit::config_string(api, cfg, "robotCode");
  if (d->robot_code.empty()) d->robot_code = d->client_id;
  d->stream = kit::config_string(api, cfg, "mode") == "stream";
  d->api_base = kit::config_string(api, cfg, "apiBase");
  while (d->api_base.ends_with("/")) d->api_base.pop_back();
  if (!d->api_base.starts_with("https://") && !d->api_base.starts_with("http://")) {
    api->set_error(host, cs("apiBase must be an http(s):// URL"));
    return CG_ECONFIG;
  }
  d->require_mention = kit::config_bool(api, cfg, "requireMention");
  const std::string style = kit::config_string(api, cfg, "replyStyle");
  d->style = style == "markdown"  ? Style::kMarkdown
             : style == "ai-card" ? Style::kAiCard
                                  : Style::kText;
  d->card_template = kit::config_string(api, cfg, "cardTemplateId");
  d->card_key = kit::config_string(api, cfg, "cardContentKey");
  d->unsupported_reply_setting = kit::config_string_if_set(api, cfg, "unsupportedReply");
  if (d->style == Style::kAiCard && d->card_template.empty()) {
    api->set_error(host, cs("replyStyle ai-card needs cardTemplateId (the AI card template)"));
    return CG_ECONFIG;
  }
  size_t n = 0;
  if (api->config_list_size(cfg, "customRobots", &n) == 0) {
    for (size_t i = 0; i < n; ++i) {
      cg_str_t item{};
      if (api->config_list_item(cfg, "customRobots", i, &item) != 0) continue;
      const std::string_view s = sv(item);
      const size_t a = s.find(' ');
      const size_t b = a == std::string_view::npos ? a : s.find(' ', a + 1);
      if (a == std::string_view::npos || !s.substr(a + 1).starts_with("http")) {
        // The item holds a secret: say which one, not what it says.
        api->set_error(host, cs("customRobots[" + std::to_string(i) +
                                "]: expected \"NAME WEBHOOK_URL [SECRET]\""));
        return CG_ECONFIG;
      }
      CustomRobot robot;
      robot.url = std::string(s.substr(a + 1, b == std::string_view::npos ? b : b - a - 1));
      if (b != std::string_view::npos) robot.secret = std::string(s.substr(b + 1));
      d->robots.emplace(std::string(s.substr(0, a)), std::move(robot));
    }
  }
  d->timestamp_window_ms = std::min<uint64_t>(
      static_cast<uint64_t>(kit::config_int(api, cfg, "timestampWindowSeconds")) * 1000,
      kMaxWindowMs);
  d->stream_update_ms = static_cast<uint64_t>(kit::config_int(api, cfg, "streamUpdateMs"));
  d->request_timeout_ms = static_cast<uint64_t>(kit::config_int(api, cfg, "requestTimeoutMs"));
  d->max_retries = static_cast<int>(kit::config_int(api, cfg, "maxRetries"));
  d->ping_interval_ms = static_cast<uint64_t>(kit::config_int(api, cfg, "pingIntervalMs"));
  if (api->abi_minor >= 4) {
    // Only the AI card shows partial answers: the router sends the other
    // styles each answer's FINAL reply alone.
    uint64_t caps = CG_CHANNEL_CAP_MARKDOWN;
    if (d->style == Style::kAiCard) caps |= CG_CHANNEL_CAP_STREAMING;
    if (const int rc = api->set_capabilities(host, caps); rc != 0) return rc;
  }
  *state = d.release();
  return 0;
}

int dt_start(void *state) {
  auto *d = static_cast<Dingtalk *>(state);
  const std::string path = "/webhook/" + d->name;
  if (const int rc = d->api->http_route_add(d->host, cs("POST"), cs(path), 0, on_webhook, d);
      rc != 0) {
    d->api->set_error(d->host, cs("cannot register " + path + ": " + cg_strerror(rc)));
    return rc;
  }
  if (d->stream) {
    d->api->set_state(d->host, CG_STATE_STARTING, cs("opening the Stream connection"));
    d->stream_start();
  }
  return 0;
}

void dt_stop(void *state, cg_done_cb done, void *arg) {
  auto *d = static_cast<Dingtalk *>(state);
  d->stopping = true;
  d->stream_stop();
  d->stop_io();
  d->begin_stop(done, arg);
}

void dt_destroy(void *state) { delete static_cast<Dingtalk *>(state); }

int dt_send(void *state, const cg_reply_t *reply, cg_done_cb done, void *arg) {
  return static_cast<Dingtalk *>(state)->send(*reply, done, arg);
}

void dt_quiesce(void *state) {
  auto *d = static_cast<Dingtalk *>(state);
  if (d->stream_state) d->stream_quiesce();
}

const cg_channel_ops_t kOps = {sizeof(cg_channel_ops_t), dt_send, dt_quiesce};

const cg_plugin_t kPlugin = {
    sizeof(cg_plugin_t),
    CG_ABI_MAJOR,
    3,
    CG_KIND_CHANNEL,
    "dingtalk",
    "0.1.0",
    "DingTalk robot: Stream mode or HTTP callback, session-webhook and OpenAPI replies, AI cards",
    CG_CHANNEL_CAP_STREAMING | CG_CHANNEL_CAP_MARKDOWN,
    kFields,
    sizeof(kFields) / sizeof(kFields[0]),
    0,
    dt_init,
    dt_start,
    dt_stop,
    dt_destroy,
    &kOps,
};

}  // namespace
}  // namespace dingtalk

extern "C" CG_EXPORT const cg_plugin_t *cg_plugin_entry(uint32_t host_major, uint32_t host_minor) {
  if (host_major != CG_ABI_MAJOR || host_minor < 3) return nullptr;
  return &dingtalk::kPlugin;
}
