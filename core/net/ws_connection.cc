#include "net/ws_connection.h"

#include <openssl/rand.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chatgate/cpp.hpp>
#include <cstdlib>
#include <utility>

#include "base/loop.h"
#include "net/ws_url.h"

namespace cg {

using namespace ws_internal;

namespace {

struct WriteReq {
  uv_write_t req{};
  std::string data;
  WsClient::Conn *conn = nullptr;
};

struct UpgradeParse {
  std::string field, value;
  bool in_value = false;
  std::vector<std::pair<std::string, std::string>> headers;
  void flush() {
    if (!field.empty()) headers.emplace_back(std::move(field), std::move(value));
    field.clear();
    value.clear();
    in_value = false;
  }
};

const llhttp_settings_t &upgrade_settings() {
  static const llhttp_settings_t settings = [] {
    llhttp_settings_t s;
    llhttp_settings_init(&s);
    s.on_header_field = [](llhttp_t *p, const char *at, size_t n) {
      auto *u = static_cast<UpgradeParse *>(p->data);
      if (u->in_value) u->flush();
      u->field.append(at, n);
      return 0;
    };
    s.on_header_value = [](llhttp_t *p, const char *at, size_t n) {
      auto *u = static_cast<UpgradeParse *>(p->data);
      u->in_value = true;
      u->value.append(at, n);
      return 0;
    };
    s.on_headers_complete = [](llhttp_t *p) {
      static_cast<UpgradeParse *>(p->data)->flush();
      return 0;
    };
    return s;
  }();
  return settings;
}

}  // namespace

Loop &WsClient::Conn::loop() const { return client->loop_; }

void WsClient::Conn::emit_open() {
  cg_ws_event_t ev{};
  ev.struct_size = sizeof ev;
  ev.type = CG_WS_OPEN;
  ev.ws_id = id;
  opened = true;
  client->count(owner, "open");
  cb(arg, &ev);
}

void WsClient::Conn::emit_message(uint8_t opcode, std::string_view payload) {
  cg_ws_event_t ev{};
  ev.struct_size = sizeof ev;
  ev.type = CG_WS_MESSAGE;
  ev.ws_id = id;
  ev.opcode = opcode;
  ev.data = chatgate::str(payload);
  cb(arg, &ev);
}

void WsClient::Conn::emit_closed() {
  cg_ws_event_t ev{};
  ev.struct_size = sizeof ev;
  ev.type = CG_WS_CLOSED;
  ev.ws_id = id;
  client->count(owner, opened ? "closed" : "failed");
  ev.result = result;
  ev.close_code = close_code;
  ev.http_status = http_status;
  ev.data = chatgate::str(reason);
  cb(arg, &ev);
}

// The one way a connection ends: fixes the CLOSED event, then closes the
// handles; the event goes out once the last of them (and any DNS lookup)
// has finished, so the plugin never sees a callback after CLOSED.
void WsClient::Conn::end(int32_t res, int32_t code, std::string why) {
  if (state == State::kEnded) return;
  state = State::kEnded;
  result = res;
  close_code = code;
  reason = std::move(why);
  if (gai_pending) uv_cancel(reinterpret_cast<uv_req_t *>(&gai));
  auto closed = [](uv_handle_t *h) {
    auto *c = static_cast<Conn *>(h->data);
    --c->open_handles;
    c->maybe_free();
  };
  if (tcp_inited && !uv_is_closing(reinterpret_cast<uv_handle_t *>(&tcp))) {
    uv_close(reinterpret_cast<uv_handle_t *>(&tcp), closed);
  }
  if (!uv_is_closing(reinterpret_cast<uv_handle_t *>(&timer))) {
    uv_close(reinterpret_cast<uv_handle_t *>(&timer), closed);
  }
}

void WsClient::Conn::maybe_free() {
  if (open_handles > 0 || gai_pending) return;
  emit_closed();
  client->erase(id);  // frees this
}

void WsClient::Conn::try_connect() {
  if (next_addr == nullptr) {
    end(CG_EIO, kWsAbnormal, "connect: no address left to try");
    return;
  }
  const addrinfo *ai = next_addr;
  next_addr = next_addr->ai_next;
  uv_tcp_init(loop().uv(), &tcp);
  tcp.data = this;
  tcp_inited = true;
  ++open_handles;
  state = State::kConnecting;
  connect_req.data = this;
  const int rc = uv_tcp_connect(&connect_req, &tcp, ai->ai_addr, [](uv_connect_t *req, int status) {
    static_cast<Conn *>(req->data)->on_connected(status);
  });
  if (rc != 0) on_connected(rc);  // treated like a refused connect
}

void WsClient::Conn::on_connected(int status) {
  if (state == State::kEnded) return;  // our close cancelled the connect
  if (status != 0) {
    if (next_addr == nullptr) {
      end(CG_EIO, kWsAbnormal, std::string("connect: ") + uv_strerror(status));
      return;
    }
    // Another address of the name (an IPv4 after a refused IPv6, say): a
    // fresh socket, once the old one is closed.
    uv_close(reinterpret_cast<uv_handle_t *>(&tcp), [](uv_handle_t *h) {
      auto *c = static_cast<Conn *>(h->data);
      --c->open_handles;
      c->tcp_inited = false;
      if (c->state == State::kEnded) {
        c->maybe_free();
      } else {
        c->try_connect();
      }
    });
    return;
  }
  uv_tcp_nodelay(&tcp, 1);
  const int rc = uv_read_start(
      reinterpret_cast<uv_stream_t *>(&tcp),
      [](uv_handle_t *h, size_t, uv_buf_t *buf) {
        auto *c = static_cast<Conn *>(h->data);
        *buf = uv_buf_init(c->rbuf.data(), static_cast<unsigned>(c->rbuf.size()));
      },
      [](uv_stream_t *s, ssize_t nread, const uv_buf_t *) {
        static_cast<Conn *>(s->data)->on_read(nread);
      });
  if (rc != 0) {
    end(CG_EIO, kWsAbnormal, std::string("read: ") + uv_strerror(rc));
    return;
  }
  if (proxy != nullptr) {
    // A tunnel through the proxy (RFC 9110 section 9.3.6), for ws:// too:
    // proxies pass an upgraded connection reliably only inside CONNECT.
    state = State::kProxy;
    const std::string target = url.host.find(':') != std::string::npos
                                   ? "[" + url.host + "]:" + std::to_string(url.port)
                                   : url.host + ":" + std::to_string(url.port);
    std::string req = "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n";
    if (!proxy->authorization.empty()) {
      req += "Proxy-Authorization: Basic " + proxy->authorization + "\r\n";
    }
    req += "\r\n";
    write_raw(std::move(req));
    return;
  }
  begin_session();
}

size_t WsClient::Conn::collect_head(std::string_view data) {
  const size_t before = head.size();
  head.append(data);
  const size_t end_of_head = head.find("\r\n\r\n", before >= 3 ? before - 3 : 0);
  if (end_of_head != std::string::npos) return end_of_head + 4;
  return head.size() > kMaxUpgradeAnswer ? std::string::npos : 0;
}

void WsClient::Conn::begin_session() {
  if (url.tls) {
    state = State::kTls;
    tls = std::make_unique<TlsSession>(client->ctx_.get(), url.host, "http/1.1");
    std::string hello;
    if (tls->start() != 0 || !tls->take_output(&hello)) {
      end(CG_EIO, kWsAbnormal, tls->error().empty() ? "TLS: cannot start" : tls->error());
      return;
    }
    write_raw(std::move(hello));
    return;
  }
  send_upgrade();
}

void WsClient::Conn::send_upgrade() {
  std::array<unsigned char, 16> nonce{};
  RAND_bytes(nonce.data(), static_cast<int>(nonce.size()));
  key = base64(nonce.data(), nonce.size());
  std::string req;
  req.reserve(256);
  req.append("GET ").append(url.target).append(" HTTP/1.1\r\nHost: ").append(url.host_header);
  req.append("\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ").append(key);
  req.append("\r\nSec-WebSocket-Version: 13\r\n");
  for (const auto &[name, value] : headers)
    req.append(name).append(": ").append(value).append("\r\n");
  req.append("\r\n");
  state = State::kUpgrading;
  if (tls) {
    if (tls->send(req) != 0) {
      end(CG_EIO, kWsAbnormal, tls->error());
      return;
    }
    req.clear();
    tls->take_output(&req);
  }
  write_raw(std::move(req));
}

void WsClient::Conn::on_read(ssize_t nread) {
  if (state == State::kEnded || nread == 0) return;
  if (nread < 0) {
    if (state == State::kClosing) {
      end(0, close_code, std::move(reason));
    } else if (state == State::kOpen) {
      end(CG_EIO, kWsAbnormal,
          reader.mid_frame() ? "connection lost mid-frame" : "connection lost");
    } else {
      end(CG_EIO, kWsAbnormal,
          nread == UV_EOF ? std::string("the server closed the connection during the handshake")
                          : std::string("read: ") + uv_strerror(static_cast<int>(nread)));
    }
    return;
  }
  last_rx_ms = loop().now_ms();
  const std::string_view data(rbuf.data(), static_cast<size_t>(nread));
  if (state == State::kProxy) {
    on_proxy_answer(data);
    return;
  }
  if (!tls) {
    on_plain(data);
    return;
  }
  plain.clear();
  const int r = tls->receive(data, &plain);
  std::string pending;
  if (tls->take_output(&pending)) write_raw(std::move(pending));
  if (r < 0) {
    end(CG_EIO, kWsAbnormal, tls->error());
    return;
  }
  if (state == State::kTls && tls->established()) send_upgrade();
  if (!plain.empty() && state != State::kEnded) on_plain(plain);
  if (r == 1 && state != State::kEnded) {
    // close_notify: the server is done sending.
    if (state == State::kClosing) {
      end(0, close_code, std::move(reason));
    } else {
      end(CG_EIO, kWsAbnormal, "the server ended TLS without a close frame");
    }
  }
}

void WsClient::Conn::on_plain(std::string_view data) {
  if (state == State::kUpgrading) {
    const size_t head_len = collect_head(data);
    if (head_len == std::string::npos) {
      end(CG_EPROTO, kWsAbnormal, "upgrade answer larger than 16 KiB");
    } else if (head_len > 0) {
      on_upgrade_answer(head_len);
    }
    return;
  }
  if (state == State::kOpen || state == State::kClosing) on_frames(data);
}

void WsClient::Conn::on_upgrade_answer(size_t head_len) {
  UpgradeParse parsed;
  llhttp_t parser;
  llhttp_init(&parser, HTTP_RESPONSE, &upgrade_settings());
  parser.data = &parsed;
  const llhttp_errno_t err = llhttp_execute(&parser, head.data(), head_len);
  if (err != HPE_OK && err != HPE_PAUSED_UPGRADE) {
    end(CG_EPROTO, kWsAbnormal, std::string("malformed upgrade answer: ") + llhttp_errno_name(err));
    return;
  }
  http_status = parser.status_code;
  if (http_status != 101) {
    end(CG_EPROTO, kWsAbnormal, "upgrade refused: HTTP " + std::to_string(http_status));
    return;
  }
  std::string_view upgrade, connection, accept, extensions;
  for (const auto &[name, value] : parsed.headers) {
    if (iequals(name, "upgrade")) upgrade = value;
    if (iequals(name, "connection")) connection = value;
    if (iequals(name, "sec-websocket-accept")) accept = value;
    if (iequals(name, "sec-websocket-extensions")) extensions = value;
  }
  const char *problem = nullptr;
  if (!iequals(upgrade, "websocket")) {
    problem = "upgrade answer without Upgrade: websocket";
  } else if (!has_token(connection, "upgrade")) {
    problem = "upgrade answer without Connection: Upgrade";
  } else if (accept != accept_for(key)) {
    problem = "upgrade answer with a wrong Sec-WebSocket-Accept";
  } else if (!extensions.empty()) {
    problem = "the server chose an extension that was not offered";
  }
  if (problem != nullptr) {
    end(CG_EPROTO, kWsAbnormal, problem);
    return;
  }
  state = State::kOpen;
  uv_timer_stop(&timer);
  if (ping_interval_ms > 0) {
    uv_timer_start(
        &timer, [](uv_timer_t *t) { static_cast<Conn *>(t->data)->on_timer(); }, ping_interval_ms,
        ping_interval_ms);
  }
  std::string rest = head.substr(head_len);
  head.clear();
  head.shrink_to_fit();
  emit_open();
  if (!rest.empty() && (state == State::kOpen || state == State::kClosing)) on_frames(rest);
}

void WsClient::Conn::on_frames(std::string_view data) {
  const uint16_t breach = reader.feed(data, [this](const WsEvent &ev) {
    switch (ev.opcode) {
      case kWsText:
      case kWsBinary:
        emit_message(ev.opcode, ev.payload);
        break;
      case kWsPing:
        if (!sent_close) write_frame(kWsPong, ev.payload);
        break;
      case kWsPong:
        break;
      case kWsClose:
        close_code = ev.close_code;
        reason.assign(ev.payload);
        if (!sent_close) {
          // Echo the code, then wait for the server to close the TCP
          // connection first, as RFC 6455 section 7.1.1 asks.
          send_close(ev.close_code == kWsNoStatus ? 0 : ev.close_code, {});
        }
        state = State::kClosing;
        uv_timer_start(
            &timer, [](uv_timer_t *t) { static_cast<Conn *>(t->data)->on_timer(); }, kCloseWaitMs,
            0);
        return false;
      default:
        break;
    }
    // The plugin may have closed the connection from its callback.
    return state == State::kOpen || state == State::kClosing;
  });
  if (breach != 0 && state != State::kEnded) {
    std::string why = reader.error();
    send_close(breach, why);
    end(breach == kWsTooBig ? CG_ETOOBIG : CG_EPROTO, breach, std::move(why));
  }
}

void WsClient::Conn::on_timer() {
  switch (state) {
    case State::kOpen: {
      const uint64_t silent = loop().now_ms() - last_rx_ms;
      if (silent >= 2 * ping_interval_ms) {
        end(CG_ETIMEDOUT, kWsAbnormal,
            "no frame from the server for " + std::to_string(silent) + " ms");
        return;
      }
      write_frame(kWsPing, {});
      return;
    }
    case State::kClosing:
      // The server did not finish the close handshake in time; the close
      // was still ours or its, so the result stays a clean one.
      end(0, close_code, std::move(reason));
      return;
    case State::kEnded:
      return;
    default: {
      const char *stage = state == State::kWaitCtx      ? "loading the CA store"
                          : state == State::kResolving  ? "resolving the host"
                          : state == State::kConnecting ? "connecting"
                          : state == State::kProxy      ? "waiting for the proxy's tunnel"
                          : state == State::kTls        ? "in the TLS handshake"
                                                        : "waiting for the upgrade answer";
      end(CG_ETIMEDOUT, kWsAbnormal,
          "connect timed out after " + std::to_string(connect_timeout_ms) + " ms " + stage);
      return;
    }
  }
}

int WsClient::Conn::write_raw(std::string data) {
  auto w = std::make_unique<WriteReq>();
  w->data = std::move(data);
  w->conn = this;
  w->req.data = w.get();
  const uv_buf_t buf = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
  const int rc = uv_write(
      &w->req, reinterpret_cast<uv_stream_t *>(&tcp), &buf, 1, [](uv_write_t *req, int status) {
        std::unique_ptr<WriteReq> done(static_cast<WriteReq *>(req->data));
        Conn *c = done->conn;
        if (status < 0 && status != UV_ECANCELED && c->state != State::kEnded) {
          c->end(CG_EIO, kWsAbnormal, std::string("write: ") + uv_strerror(status));
        }
      });
  if (rc != 0) {
    end(CG_EIO, kWsAbnormal, std::string("write: ") + uv_strerror(rc));
    return CG_EIO;
  }
  (void)w.release();  // the write callback owns it now
  return 0;
}

int WsClient::Conn::write_frame(uint8_t opcode, std::string_view payload) {
  std::array<uint8_t, 4> mask{};
  RAND_bytes(mask.data(), static_cast<int>(mask.size()));
  out.clear();
  ws_frame_append(&out, opcode, payload, mask);
  if (!tls) return write_raw(out);
  if (tls->send(out) != 0) {
    end(CG_EIO, kWsAbnormal, tls->error());
    return CG_EIO;
  }
  std::string cipher;
  cipher.reserve(out.size() + 64);
  tls->take_output(&cipher);
  return write_raw(std::move(cipher));
}

void WsClient::Conn::send_close(uint16_t code, std::string_view why) {
  if (sent_close || state == State::kEnded) return;
  sent_close = true;
  write_frame(kWsClose, ws_close_payload(code, why));
}

}  // namespace cg
