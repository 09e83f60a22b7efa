// Stream mode: a ticket from {apiBase}/v1.0/gateway/connections/open, a
// WebSocket to the endpoint with it, JSON frames: robot messages (CALLBACK
// on /v1.0/im/bot/messages/get) acked with their messageId, SYSTEM pings
// answered with the same data, SYSTEM disconnect followed by a new ticket;
// WebSocket pings from the host every pingIntervalMs, reconnects with
// backoff and jitter.
#include <simdjson.h>

#include <chatgate/json.hpp>

#include "dingtalk_plugin.h"
#include "dingtalk_protocol.h"

namespace dingtalk {

namespace {

constexpr auto sv = chatgate::view;
constexpr auto cs = chatgate::str;
constexpr auto jstr = chatgate::json_string;
constexpr const char *kRobotTopic = "/v1.0/im/bot/messages/get";
constexpr uint64_t kBackoffBaseMs = 1000;
constexpr uint64_t kBackoffCapMs = 60000;

}  // namespace

struct Dingtalk::Stream {
  uint64_t ws_id = 0;
  bool connected = false;
  bool open = false;
  uint32_t attempts = 0;
  // quiesce (ABI 1.7): take no new message, close once every message taken
  // has been acked, and stay closed.
  bool quiesced = false;
  size_t handling = 0;  // messages handed to the router, their ack not yet sent
};

namespace {

void reconnect(Dingtalk *d, const std::string &why);

// Whether a Stream connection is still wanted: not after stop or quiesce.
bool wanted(const Dingtalk *d) { return !d->stopping && !d->stream_state->quiesced; }

void close_quiesced(Dingtalk *d) {
  Dingtalk::Stream &s = *d->stream_state;
  if (!s.quiesced || s.handling != 0 || !s.connected) return;
  d->log(CG_LOG_INFO,
         "closing the Stream connection: this process hands over (DingTalk "
         "delivers to the app's other connections)");
  d->api->ws_close(d->host, s.ws_id, 1000, cs("handing over"));
}

void send_text(Dingtalk *d, uint64_t ws_id, const std::string &frame) {
  if (d->stream_state->ws_id != ws_id || !d->stream_state->open) return;
  if (const int rc = d->api->ws_send(d->host, ws_id, CG_WS_TEXT, cs(frame)); rc != 0) {
    d->log(CG_LOG_WARN, std::string("cannot answer a Stream frame: ") + cg_strerror(rc));
  }
}

std::string ack(std::string_view message_id, int code, const std::string &data) {
  return "{\"code\":" + std::to_string(code) + ",\"headers\":{\"messageId\":" + jstr(message_id) +
         ",\"contentType\":\"application/json\"},\"message\":\"" + (code == 200 ? "OK" : "error") +
         "\",\"data\":" + jstr(data) + "}";
}

void on_frame(Dingtalk *d, std::string_view text) {
  StreamFrame f;
  if (std::string err = stream_frame_parse(text, &f); !err.empty()) {
    d->log(CG_LOG_WARN, "a malformed Stream frame (" + err + "): dropped");
    return;
  }
  const std::string_view type = f.type, topic = f.topic, message_id = f.message_id, data = f.data;
  const uint64_t ws_id = d->stream_state->ws_id;
  if (type == "SYSTEM") {
    if (topic == "ping") {
      // The same opaque data back says we are alive.
      send_text(d, ws_id, ack(message_id, 200, std::string(data)));
    } else if (topic == "disconnect") {
      // The gateway closes in 10 s: leave now, and come back with a new ticket.
      d->log(CG_LOG_INFO, "DingTalk asks to reconnect (SYSTEM disconnect): fetching a new ticket");
      d->api->ws_close(d->host, ws_id, 1000, cs("reconnecting"));
    }
    return;
  }
  // Quiesced: not acked, so DingTalk delivers it again, to another client.
  if (d->stream_state->quiesced) return;
  if (type == "CALLBACK" && topic == kRobotTopic) {
    const std::string id(message_id);
    RobotMessage m;
    if (std::string err = robot_message_parse(data, &m); !err.empty()) {
      // Acked, so that DingTalk does not push a message nobody can read.
      d->log(CG_LOG_WARN, "a malformed robot message (" + err + "): acked and dropped");
      return send_text(d, ws_id, ack(id, 200, R"({"response":null})"));
    }
    // Acked once the router holds it (ABI 1.5: from emit_message_durable's
    // done, a later turn); 500 when it did not take it, so DingTalk delivers
    // it again. An ack due on a connection since replaced is not sent: the
    // gateway redelivers there, and the router dedupes on msgId.
    d->stream_state->handling++;
    d->handle_message(m, [d, ws_id, id](bool ok) {
      send_text(d, ws_id, ok ? ack(id, 200, R"({"response":null})") : ack(id, 500, "{}"));
      d->stream_state->handling--;
      close_quiesced(d);
    });
    return;
  }
  if (type == "EVENT") {
    send_text(d, ws_id, ack(message_id, 200, R"({"status":"SUCCESS","message":"ignored"})"));
    return;
  }
  send_text(d, ws_id, ack(message_id, 404, "{}"));
}

void on_ws_event(void *arg, const cg_ws_event_t *ev) {
  auto *d = static_cast<Dingtalk *>(arg);
  Dingtalk::Stream &s = *d->stream_state;
  if (ev->ws_id != s.ws_id) return;
  if (ev->type == CG_WS_OPEN) {
    s.open = true;
    s.attempts = 0;
    d->log(CG_LOG_INFO, "Stream connection open");
    d->api->set_state(d->host, CG_STATE_RUNNING, cs("Stream connection open"));
    return;
  }
  if (ev->type == CG_WS_MESSAGE) {
    if (ev->opcode == CG_WS_TEXT) on_frame(d, sv(ev->data));
    return;
  }
  s.connected = false;
  s.open = false;
  d->in_flight--;
  if (d->stopping) return d->maybe_stopped();
  if (s.quiesced) return;
  std::string why = std::string(sv(ev->data));
  if (why.empty()) why = cg_strerror(ev->result);
  reconnect(d, "Stream connection closed (" + std::to_string(ev->close_code) + "): " + why);
}

void open_connection(Dingtalk *d) {
  const std::string body = "{\"clientId\":" + jstr(d->client_id) +
                           ",\"clientSecret\":" + jstr(d->client_secret) +
                           ",\"subscriptions\":[{\"type\":\"CALLBACK\",\"topic\":\"" + kRobotTopic +
                           "\"}],\"ua\":\"chatgate-dingtalk/0.1.0\",\"localIp\":\"\"}";
  const int rc = d->http(
      "POST", d->api_base + "/v1.0/gateway/connections/open",
      {{"Content-Type", "application/json; charset=utf-8"}, {"Accept", "application/json"}}, body,
      [d](int result, const cg_http_client_response_t *resp) {
        if (!wanted(d)) return;
        if (result != 0) {
          return reconnect(d, "Stream gateway unreachable: " +
                                  (resp && resp->error.len ? std::string(sv(resp->error))
                                                           : std::string(cg_strerror(result))));
        }
        const std::string_view text = sv(resp->body);
        simdjson::dom::parser parser;
        simdjson::dom::element doc;
        std::string_view endpoint, ticket, code, message;
        const bool json = parser.parse(text.data(), text.size()).get(doc) == simdjson::SUCCESS;
        if (json) {
          if (doc["code"].get(code) != simdjson::SUCCESS) code = "";
          if (doc["message"].get(message) != simdjson::SUCCESS) message = "";
        }
        if (resp->status == 400 || resp->status == 401 || resp->status == 403) {
          // Refused credentials do not fix themselves: no retry loop.
          const std::string why = "Stream connection refused: HTTP " +
                                  std::to_string(resp->status) + " " + std::string(code) + " " +
                                  std::string(message) +
                                  "; check clientId and clientSecret, and that the app "
                                  "receives robot messages by Stream mode";
          d->log(CG_LOG_ERROR, why);
          d->api->set_state(d->host, CG_STATE_FAILED, cs(why));
          return;
        }
        if (resp->status != 200 || !json || doc["endpoint"].get(endpoint) != simdjson::SUCCESS ||
            doc["ticket"].get(ticket) != simdjson::SUCCESS) {
          return reconnect(d, "Stream gateway answered HTTP " + std::to_string(resp->status) + " " +
                                  std::string(code) + " " + std::string(message));
        }
        const std::string url = std::string(endpoint) + "?ticket=" + url_encode(ticket);
        cg_ws_connect_t opts{};
        opts.struct_size = sizeof opts;
        opts.url = cs(url);
        opts.connect_timeout_ms = d->request_timeout_ms;
        opts.ping_interval_ms = d->ping_interval_ms;
        uint64_t id = 0;
        if (const int wrc = d->api->ws_connect(d->host, &opts, on_ws_event, d, &id); wrc != 0) {
          return reconnect(d,
                           std::string("cannot open the Stream connection: ") + cg_strerror(wrc));
        }
        d->stream_state->ws_id = id;
        d->stream_state->connected = true;
        d->in_flight++;
      });
  if (rc != 0 && wanted(d)) {
    reconnect(d, std::string("cannot reach the Stream gateway: ") + cg_strerror(rc));
  }
}

void reconnect(Dingtalk *d, const std::string &why) {
  Dingtalk::Stream &s = *d->stream_state;
  const uint64_t delay = d->api->backoff_ms(d->host, s.attempts, kBackoffBaseMs, kBackoffCapMs);
  s.attempts++;
  d->log(CG_LOG_WARN, why + "; reconnecting with a new ticket in " + std::to_string(delay) + " ms");
  d->api->set_state(d->host, CG_STATE_DEGRADED, cs(why + "; reconnecting"));
  d->after(delay, [d] {
    if (wanted(d)) open_connection(d);
  });
}

}  // namespace

Dingtalk::Dingtalk()
    : tokens(*this, 300,
             [this](const kit::TokenCache::Settle &settle) { return fetch_token(settle); }) {}
Dingtalk::~Dingtalk() = default;

void Dingtalk::stream_start() {
  stream_state = std::make_unique<Stream>();
  open_connection(this);
}

void Dingtalk::stream_quiesce() {
  if (!stream_state || stream_state->quiesced) return;
  stream_state->quiesced = true;
  close_quiesced(this);
}

void Dingtalk::stream_stop() {
  if (stream_state && stream_state->connected) {
    api->ws_close(host, stream_state->ws_id, 1000, cs("shutting down"));
  }
}

}  // namespace dingtalk
