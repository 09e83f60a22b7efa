// The long connection: the endpoint from {domain}/callback/ws/endpoint, a
// WebSocket through the host's client, protobuf Frames (frame.proto):
// pings at the server's interval (its pong carries a ClientConfig to
// apply), data frames reassembled by message_id, every event acked with
// biz_rt, and reconnects on the server's policy with jitter.
#include <simdjson.h>

#include <chatgate/json.hpp>
#include <random>

#include "feishu_crypto.h"
#include "feishu_plugin.h"
#include "frame.pb.h"

namespace feishu {

namespace {

constexpr auto sv = chatgate::view;
constexpr auto cs = chatgate::str;
constexpr int32_t kControl = 0;
constexpr int32_t kData = 1;
constexpr uint64_t kMinReconnectMs = 200;
constexpr uint64_t kLimitRetryMs = 60000;
constexpr size_t kMaxPartial = 64;  // messages being reassembled at once

std::string frame_header(const pb::Frame &f, std::string_view key) {
  for (const pb::Header &h : f.headers()) {
    if (h.key() == key) return h.value();
  }
  return {};
}

}  // namespace

struct Feishu::Ws {
  uint64_t ws_id = 0;
  bool connected = false;  // a connection exists (until its CLOSED)
  bool open = false;
  int32_t service = 0;
  uint64_t ping_ms = 120000;
  uint64_t ping_loop = 0;  // the running ping loop; a new interval starts a new one
  int64_t reconnect_count = -1;
  uint64_t reconnect_interval_ms = 120000;
  uint64_t reconnect_nonce_ms = 30000;
  int64_t attempts = 0;  // reconnects since the last open connection
  bool given_up = false;
  struct Partial {
    std::vector<std::string> parts;
    std::vector<bool> have;
    uint64_t started_ms = 0;
  };
  std::map<std::string, Partial> partial;
  // quiesce (ABI 1.7): take no new event, close once every event taken has
  // been acked, and stay closed.
  bool quiesced = false;
  size_t handling = 0;  // events handed to the router, their ack not yet sent
};

namespace {

void ws_connect_to(Feishu *f, const std::string &url);
void schedule_reconnect(Feishu *f, const std::string &why);

// Whether a long connection is still wanted: not after stop or quiesce.
bool wanted(const Feishu *f) { return !f->stopping && !f->ws->quiesced; }

void close_quiesced(Feishu *f) {
  Feishu::Ws &ws = *f->ws;
  if (!ws.quiesced || ws.handling != 0 || !ws.connected) return;
  f->log(CG_LOG_INFO,
         "closing the long connection: this process hands over (Feishu delivers "
         "to the app's other clients)");
  f->api->ws_close(f->host, ws.ws_id, 1000, cs("handing over"));
}

// Applies a ClientConfig (seconds) from the endpoint or a pong.
void apply_config(Feishu *f, simdjson::dom::element cfg) {
  Feishu::Ws &ws = *f->ws;
  int64_t v = 0;
  if (cfg["PingInterval"].get(v) == simdjson::SUCCESS && v > 0) ws.ping_ms = uint64_t(v) * 1000;
  if (cfg["ReconnectCount"].get(v) == simdjson::SUCCESS) ws.reconnect_count = v;
  if (cfg["ReconnectInterval"].get(v) == simdjson::SUCCESS && v >= 0) {
    ws.reconnect_interval_ms = uint64_t(v) * 1000;
  }
  if (cfg["ReconnectNonce"].get(v) == simdjson::SUCCESS && v >= 0) {
    ws.reconnect_nonce_ms = uint64_t(v) * 1000;
  }
}

int send_frame(Feishu *f, const pb::Frame &frame) {
  std::string bytes;
  if (!frame.SerializeToString(&bytes)) return CG_EINVAL;
  return f->api->ws_send(f->host, f->ws->ws_id, CG_WS_BINARY, cs(bytes));
}

void ping_loop(Feishu *f, uint64_t loop) {
  const uint64_t id = f->ws->ws_id;
  f->after(f->ws->ping_ms, [f, id, loop] {
    if (f->stopping || !f->ws->open || f->ws->ws_id != id || f->ws->ping_loop != loop) return;
    pb::Frame ping;
    ping.set_seqid(0);
    ping.set_logid(0);
    ping.set_service(f->ws->service);
    ping.set_method(kControl);
    pb::Header *h = ping.add_headers();
    h->set_key("type");
    h->set_value("ping");
    send_frame(f, ping);
    ping_loop(f, loop);
  });
}

// Acks a data frame: the frame itself, with biz_rt and a response payload.
void ack(Feishu *f, uint64_t ws_id, pb::Frame frame, uint64_t started_ms, int code,
         const std::string &data_b64) {
  if (f->ws->ws_id != ws_id || !f->ws->open) return;  // gone: the server pushes again
  pb::Header *h = frame.add_headers();
  h->set_key("biz_rt");
  h->set_value(std::to_string(f->api->now_ms(f->host) - started_ms));
  std::string payload = "{\"code\":" + std::to_string(code) + ",\"headers\":null,\"data\":";
  payload += data_b64.empty() ? "null" : chatgate::json_string(data_b64);
  payload += "}";
  frame.set_payload(payload);
  if (const int rc = send_frame(f, frame); rc != 0) {
    f->log(CG_LOG_WARN, std::string("cannot ack a long-connection event: ") + cg_strerror(rc));
  }
}

void on_data_frame(Feishu *f, pb::Frame frame) {
  const uint64_t started = f->api->now_ms(f->host);
  const std::string type = frame_header(frame, "type");
  const std::string message_id = frame_header(frame, "message_id");
  const long sum = std::strtol(frame_header(frame, "sum").c_str(), nullptr, 10);
  const long seq = std::strtol(frame_header(frame, "seq").c_str(), nullptr, 10);
  std::string payload = frame.payload();
  if (sum > 1) {
    Feishu::Ws &ws = *f->ws;
    if (seq < 0 || seq >= sum || sum > 1024) {
      f->log(CG_LOG_WARN, "a long-connection frame with seq " + std::to_string(seq) + " of " +
                              std::to_string(sum) + ": dropped");
      return;
    }
    if (!ws.partial.contains(message_id) && ws.partial.size() >= kMaxPartial) {
      ws.partial.erase(std::min_element(
          ws.partial.begin(), ws.partial.end(),
          [](const auto &a, const auto &b) { return a.second.started_ms < b.second.started_ms; }));
    }
    Feishu::Ws::Partial &p = ws.partial[message_id];
    if (p.parts.empty()) {
      p.parts.resize(static_cast<size_t>(sum));
      p.have.resize(static_cast<size_t>(sum));
      p.started_ms = started;
    }
    if (p.parts.size() != static_cast<size_t>(sum)) return;
    p.parts[static_cast<size_t>(seq)] = std::move(payload);
    p.have[static_cast<size_t>(seq)] = true;
    if (std::find(p.have.begin(), p.have.end(), false) != p.have.end()) return;
    payload.clear();
    for (const std::string &part : p.parts) payload += part;
    ws.partial.erase(message_id);
  }
  const uint64_t ws_id = f->ws->ws_id;
  // Quiesced: not answered, so Feishu pushes it again, to another client.
  if (f->ws->quiesced) return;
  if (type != "event" && type != "card") {
    return ack(f, ws_id, std::move(frame), started, 200, {});
  }
  Event ev;
  if (std::string err = event_parse(payload, &ev); !err.empty()) {
    f->log(CG_LOG_WARN, "a malformed long-connection event (" + err + "): acked and dropped");
    return ack(f, ws_id, std::move(frame), started, 200, {});
  }
  const bool card = ev.kind == Event::Kind::kCardAction;
  f->ws->handling++;
  f->handle_event(ev, [f, ws_id, frame = std::move(frame), started, card](bool ok) {
    std::string data;
    if (ok && card) data = base64(f->card_toast_json());
    // 500 makes Feishu push the event again later.
    ack(f, ws_id, frame, started, ok ? 200 : 500, data);
    f->ws->handling--;
    close_quiesced(f);
  });
}

void on_ws_event(void *arg, const cg_ws_event_t *ev) {
  auto *f = static_cast<Feishu *>(arg);
  Feishu::Ws &ws = *f->ws;
  if (ev->ws_id != ws.ws_id) return;
  if (ev->type == CG_WS_OPEN) {
    ws.open = true;
    ws.attempts = 0;
    f->log(CG_LOG_INFO, "long connection open");
    f->api->set_state(f->host, CG_STATE_RUNNING, cs("long connection open"));
    ping_loop(f, ++ws.ping_loop);
    return;
  }
  if (ev->type == CG_WS_MESSAGE) {
    if (ev->opcode != CG_WS_BINARY) return;
    pb::Frame frame;
    if (!frame.ParseFromArray(ev->data.ptr, static_cast<int>(ev->data.len))) {
      f->log(CG_LOG_WARN, "an undecodable long-connection frame: dropped");
      return;
    }
    if (frame.method() == kControl) {
      if (frame_header(frame, "type") == "pong" && !frame.payload().empty()) {
        simdjson::dom::parser parser;
        simdjson::dom::element cfg;
        const uint64_t interval = ws.ping_ms;
        if (parser.parse(frame.payload()).get(cfg) == simdjson::SUCCESS) apply_config(f, cfg);
        // A new interval counts from now, not after the ping already due.
        if (ws.ping_ms != interval) ping_loop(f, ++ws.ping_loop);
      }
      return;
    }
    if (frame.method() == kData) on_data_frame(f, std::move(frame));
    return;
  }
  // CLOSED
  ws.connected = false;
  ws.open = false;
  ws.partial.clear();
  f->in_flight--;
  if (f->stopping) return f->maybe_stopped();
  if (ws.quiesced) return;
  std::string why = std::string(sv(ev->data));
  if (why.empty()) why = cg_strerror(ev->result);
  schedule_reconnect(f, "long connection closed (" + std::to_string(ev->close_code) + "): " + why);
}

void ws_connect_to(Feishu *f, const std::string &url) {
  Feishu::Ws &ws = *f->ws;
  const size_t at = url.find("service_id=");
  ws.service = at == std::string::npos ? 0 : std::atoi(url.c_str() + at + 11);
  cg_ws_connect_t opts{};
  opts.struct_size = sizeof opts;
  opts.url = cs(url);
  opts.connect_timeout_ms = f->request_timeout_ms;
  uint64_t id = 0;
  if (const int rc = f->api->ws_connect(f->host, &opts, on_ws_event, f, &id); rc != 0) {
    return schedule_reconnect(f,
                              std::string("cannot open the long connection: ") + cg_strerror(rc));
  }
  ws.ws_id = id;
  ws.connected = true;
  f->in_flight++;
}

void fetch_endpoint(Feishu *f) {
  const std::string body = "{\"AppID\":" + chatgate::json_string(f->app_id) +
                           ",\"AppSecret\":" + chatgate::json_string(f->app_secret) + "}";
  const int rc = f->http(
      "POST", f->base_url + "/callback/ws/endpoint",
      {{"Content-Type", "application/json; charset=utf-8"}, {"locale", "zh"}}, body,
      [f](int result, const cg_http_client_response_t *resp) {
        if (!wanted(f)) return;
        if (result != 0) {
          return schedule_reconnect(f, "long-connection endpoint unreachable: " +
                                           (resp && resp->error.len ? std::string(sv(resp->error))
                                                                    : cg_strerror(result)));
        }
        const std::string_view body = sv(resp->body);
        simdjson::dom::parser parser;
        simdjson::dom::element doc;
        int64_t code = -1;
        std::string_view msg, url;
        if (parser.parse(body.data(), body.size()).get(doc) != simdjson::SUCCESS ||
            doc["code"].get(code) != simdjson::SUCCESS) {
          return schedule_reconnect(f, "long-connection endpoint answered HTTP " +
                                           std::to_string(resp->status) + " without JSON");
        }
        if (doc["msg"].get(msg) != simdjson::SUCCESS) msg = "";
        const std::string detail = std::string(msg) + " (code " + std::to_string(code) + ")";
        if (code == 403 || code == 514) {
          // Wrong credentials do not fix themselves: no retry loop.
          f->ws->given_up = true;
          const std::string why = "long connection refused: " + detail +
                                  "; check appId and appSecret, and that the app's events are "
                                  "delivered by long connection";
          f->log(CG_LOG_ERROR, why);
          f->api->set_state(f->host, CG_STATE_FAILED, cs(why));
          return;
        }
        if (code == 1000040350) {
          const std::string why = "long connection refused: " + detail +
                                  ": the app's connection limit is reached (other clients of "
                                  "this app are connected); retrying every 60 s";
          f->log(CG_LOG_ERROR, why);
          f->api->set_state(f->host, CG_STATE_FAILED, cs(why));
          f->after(kLimitRetryMs, [f] {
            if (wanted(f)) fetch_endpoint(f);
          });
          return;
        }
        if (code != 0 || doc["data"]["URL"].get(url) != simdjson::SUCCESS || url.empty()) {
          return schedule_reconnect(f, "long-connection endpoint: " + detail);
        }
        simdjson::dom::element cfg;
        if (doc["data"]["ClientConfig"].get(cfg) == simdjson::SUCCESS) apply_config(f, cfg);
        ws_connect_to(f, std::string(url));
      });
  if (rc != 0 && wanted(f)) {
    schedule_reconnect(
        f, std::string("cannot reach the long-connection endpoint: ") + cg_strerror(rc));
  }
}

void schedule_reconnect(Feishu *f, const std::string &why) {
  Feishu::Ws &ws = *f->ws;
  if (ws.reconnect_count >= 0 && ws.attempts >= ws.reconnect_count) {
    ws.given_up = true;
    const std::string line = why + "; gave up after " + std::to_string(ws.attempts) +
                             " reconnects (the server's ReconnectCount)";
    f->log(CG_LOG_ERROR, line);
    f->api->set_state(f->host, CG_STATE_FAILED, cs(line));
    return;
  }
  // The first retry comes after a random part of ReconnectNonce, so that
  // many clients dropped together do not return together; then every
  // ReconnectInterval.
  uint64_t delay = ws.reconnect_interval_ms;
  if (ws.attempts == 0) {
    static std::mt19937_64 gen(std::random_device{}());
    delay = ws.reconnect_nonce_ms > 0 ? gen() % ws.reconnect_nonce_ms : 0;
  }
  delay = std::max(delay, kMinReconnectMs);
  ws.attempts++;
  f->log(CG_LOG_WARN, why + "; reconnecting in " + std::to_string(delay) + " ms");
  f->api->set_state(f->host, CG_STATE_DEGRADED, cs(why + "; reconnecting"));
  f->after(delay, [f] {
    if (wanted(f)) fetch_endpoint(f);
  });
}

}  // namespace

Feishu::Feishu()
    : tokens(*this, 180,
             [this](const kit::TokenCache::Settle &settle) { return fetch_token(settle); }) {}
Feishu::~Feishu() = default;

void Feishu::ws_start() {
  ws = std::make_unique<Ws>();
  fetch_endpoint(this);
}

void Feishu::ws_quiesce() {
  if (!ws || ws->quiesced) return;
  ws->quiesced = true;
  close_quiesced(this);
}

void Feishu::ws_stop() {
  if (ws && ws->connected) api->ws_close(host, ws->ws_id, 1000, cs("shutting down"));
}

}  // namespace feishu
