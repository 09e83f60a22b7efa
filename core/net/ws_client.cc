#include "net/ws_client.h"

#include <llhttp.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <spdlog/spdlog.h>
#include <uv.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <chatgate/cpp.hpp>
#include <cstdlib>
#include <random>
#include <utility>

#include "base/json.h"
#include "base/loop.h"
#include "base/metrics.h"
#include "net/ws_frame.h"

namespace cg {
namespace {

constexpr uint64_t kDefaultConnectTimeoutMs = 10000;
constexpr uint64_t kDefaultMaxMessage = uint64_t{16} << 20;
constexpr uint64_t kCloseWaitMs = 2000;  // for the server's close frame or its FIN
constexpr size_t kMaxUpgradeAnswer = 16384;
constexpr size_t kMaxQueuedWrite = size_t{64} << 20;
constexpr std::string_view kAcceptGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

bool iequals(std::string_view a, std::string_view b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
    return std::tolower(static_cast<unsigned char>(x)) ==
           std::tolower(static_cast<unsigned char>(y));
  });
}

// True when the comma-separated list `value` holds `token` (any case).
bool has_token(std::string_view value, std::string_view token) {
  while (!value.empty()) {
    const size_t comma = value.find(',');
    std::string_view item = value.substr(0, comma);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (iequals(item, token)) return true;
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  return false;
}

std::string base64(const unsigned char *data, size_t n) {
  std::string out(4 * ((n + 2) / 3), '\0');
  const int len =
      EVP_EncodeBlock(reinterpret_cast<unsigned char *>(out.data()), data, static_cast<int>(n));
  out.resize(static_cast<size_t>(std::max(len, 0)));
  return out;
}

std::string accept_for(std::string_view key) {
  std::string in(key);
  in.append(kAcceptGuid);
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int md_len = 0;
  EVP_Digest(in.data(), in.size(), md.data(), &md_len, EVP_sha1(), nullptr);
  return base64(md.data(), md_len);
}

bool bad_header_text(std::string_view s) {
  return s.find_first_of("\r\n") != std::string_view::npos ||
         s.find('\0') != std::string_view::npos;
}

struct ParsedUrl {
  bool tls = false;
  std::string host;  // without brackets
  uint16_t port = 0;
  std::string host_header;  // as sent in Host:
  std::string target;       // path and query
};

// ws://host[:port][/path][?query]; no user info. Returns false when malformed.
bool parse_ws_url(std::string_view url, ParsedUrl *out) {
  if (url.starts_with("ws://")) {
    url.remove_prefix(5);
    out->port = 80;
  } else if (url.starts_with("wss://")) {
    url.remove_prefix(6);
    out->tls = true;
    out->port = 443;
  } else {
    return false;
  }
  if (const size_t hash = url.find('#'); hash != std::string_view::npos) url = url.substr(0, hash);
  const size_t slash = url.find_first_of("/?");
  std::string_view authority = url.substr(0, slash);
  out->target = slash == std::string_view::npos ? "/" : std::string(url.substr(slash));
  if (out->target.front() == '?') out->target.insert(0, "/");
  if (authority.empty() || authority.find('@') != std::string_view::npos) return false;
  std::string_view host = authority;
  std::string_view port;
  if (authority.front() == '[') {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) return false;
    host = authority.substr(1, close - 1);
    const std::string_view rest = authority.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return false;
      port = rest.substr(1);
    }
  } else if (const size_t colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  if (host.empty()) return false;
  if (!port.empty() || authority.back() == ':') {
    if (port.empty() || port.size() > 5) return false;
    unsigned value = 0;
    for (char ch : port) {
      if (ch < '0' || ch > '9') return false;
      value = value * 10 + static_cast<unsigned>(ch - '0');
    }
    if (value == 0 || value > 65535) return false;
    out->port = static_cast<uint16_t>(value);
  }
  for (char ch : out->target) {
    if (static_cast<unsigned char>(ch) <= 0x20 || ch == 0x7F) return false;
  }
  out->host.assign(host);
  out->host_header = authority;
  return true;
}

}  // namespace

uint64_t backoff_delay_ms(uint32_t attempt, uint64_t base_ms, uint64_t max_ms) {
  uint64_t d = base_ms;
  for (uint32_t i = 0; i < attempt && d < max_ms; ++i) d = d > max_ms / 2 ? max_ms : d * 2;
  d = std::min(d, max_ms);
  if (d < 2) return d;
  thread_local std::mt19937_64 rng{std::random_device{}()};
  // "Equal jitter": at least half the delay, so retries still slow down.
  return d - std::uniform_int_distribution<uint64_t>(0, d / 2)(rng);
}

struct WsClient::Conn {
  enum class State : uint8_t {
    kWaitCtx,  // for the TLS context
    kResolving,
    kConnecting,
    kProxy,      // CONNECT sent to the proxy, waiting for its 200
    kTls,        // TLS handshake
    kUpgrading,  // upgrade request sent, waiting for 101
    kOpen,
    kClosing,  // a close frame went out or came in; waiting for the end
    kEnded,    // handles closing; the CLOSED event follows
  };

  WsClient *client = nullptr;
  uint64_t id = 0;
  cg_ws_cb cb = nullptr;
  void *arg = nullptr;
  const void *owner = nullptr;  // the plugin instance that opened it
  ParsedUrl url;
  const WsProxy *proxy = nullptr;  // the proxy to tunnel through, or null
  std::vector<std::pair<std::string, std::string>> headers;
  uint64_t connect_timeout_ms = 0;
  uint64_t ping_interval_ms = 0;
  State state = State::kWaitCtx;
  bool opened = false;  // OPEN went out

  uv_getaddrinfo_t gai{};
  bool gai_pending = false;
  addrinfo *addrs = nullptr;
  addrinfo *next_addr = nullptr;
  uv_tcp_t tcp{};
  bool tcp_inited = false;
  uv_connect_t connect_req{};
  uv_timer_t timer{};
  int open_handles = 0;

  std::unique_ptr<TlsSession> tls;
  std::string key;
  std::string head;   // the upgrade answer so far
  std::string plain;  // decrypted bytes, reused
  std::string out;    // frame being built, reused
  WsReader reader;
  uint64_t last_rx_ms = 0;
  bool sent_close = false;
  std::array<char, 16384> rbuf{};

  // The CLOSED event's fields, fixed by the first end().
  int32_t result = 0;
  int32_t close_code = kWsAbnormal;
  int32_t http_status = 0;
  std::string reason;

  explicit Conn(uint64_t max_message) : reader(max_message) {}
  ~Conn() {
    if (addrs != nullptr) uv_freeaddrinfo(addrs);
  }

  Loop &loop() const;
  void emit_open();
  void emit_message(uint8_t opcode, std::string_view payload);
  void emit_closed();
  void end(int32_t res, int32_t code, std::string why);
  void maybe_free();
  void try_connect();
  void on_connected(int status);
  void on_read(ssize_t nread);
  void on_plain(std::string_view data);
  void on_upgrade_answer(size_t head_len);
  void on_frames(std::string_view data);
  void on_timer();
  int write_raw(std::string data);
  int write_frame(uint8_t opcode, std::string_view payload);
  void send_close(uint16_t code, std::string_view why);
  void send_upgrade();
  void begin_session();  // TLS (wss) or the upgrade (ws), once connected
  void on_proxy_answer(std::string_view data);
  // Appends to `head`: the length of the HTTP head once its blank line
  // arrived, 0 while it has not, npos once it passed kMaxUpgradeAnswer.
  size_t collect_head(std::string_view data);
};

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

void WsClient::Conn::on_proxy_answer(std::string_view data) {
  const size_t head_len = collect_head(data);
  if (head_len == 0) return;
  if (head_len == std::string::npos) {
    end(CG_EIO, kWsAbnormal, "proxy answer larger than 16 KiB");
    return;
  }
  // "HTTP/1.1 200 Connection established": only the status matters.
  int status = 0;
  if (head.starts_with("HTTP/1.") && head.size() > 12) {
    status = std::atoi(head.c_str() + 9);
  }
  if (status != 200) {
    end(CG_EIO, kWsAbnormal,
        "proxy refused the tunnel: " +
            (status > 0 ? "HTTP " + std::to_string(status) : std::string("malformed answer")));
    return;
  }
  // A proxy sends nothing of the server's before the client speaks.
  head.clear();
  begin_session();
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

// --- WsClient ---------------------------------------------------------------

std::optional<WsProxy> ws_proxy_parse(std::string_view url) {
  if (!url.starts_with("http://")) return std::nullopt;
  url.remove_prefix(7);
  url = url.substr(0, url.find('/'));
  WsProxy p;
  if (const size_t at = url.rfind('@'); at != std::string_view::npos) {
    const std::string_view userinfo = url.substr(0, at);
    p.authorization =
        base64(reinterpret_cast<const unsigned char *>(userinfo.data()), userinfo.size());
    url.remove_prefix(at + 1);
  }
  if (url.empty()) return std::nullopt;
  const size_t bracket = url.rfind(']');
  const bool has_port =
      url.find(':', bracket == std::string_view::npos ? 0 : bracket) != std::string_view::npos;
  ParsedUrl parsed;
  // The authority has the shape of a ws:// URL's.
  if (!parse_ws_url("ws://" + std::string(url), &parsed)) return std::nullopt;
  p.host = parsed.host;
  if (has_port) p.port = parsed.port;  // else curl's default, 1080
  return p;
}

bool ws_no_proxy_match(std::string_view no_proxy, std::string_view host) {
  while (!no_proxy.empty()) {
    const size_t comma = no_proxy.find(',');
    std::string_view entry = no_proxy.substr(0, comma);
    while (!entry.empty() && entry.front() == ' ') entry.remove_prefix(1);
    while (!entry.empty() && entry.back() == ' ') entry.remove_suffix(1);
    if (entry == "*") return true;
    if (!entry.empty() && entry.front() == '.') entry.remove_prefix(1);
    if (!entry.empty() &&
        (iequals(host, entry) ||
         (host.size() > entry.size() && iequals(host.substr(host.size() - entry.size()), entry) &&
          host[host.size() - entry.size() - 1] == '.'))) {
      return true;
    }
    if (comma == std::string_view::npos) break;
    no_proxy.remove_prefix(comma + 1);
  }
  return false;
}

namespace {

// The first of `names` set in the environment, or empty.
std::string env_first(std::initializer_list<const char *> names) {
  for (const char *name : names) {
    if (const char *v = std::getenv(name); v != nullptr && *v != '\0') return v;
  }
  return {};
}

std::optional<WsProxy> proxy_from_env(std::initializer_list<const char *> names) {
  const std::string url = env_first(names);
  if (url.empty()) return std::nullopt;
  std::optional<WsProxy> p = ws_proxy_parse(url);
  if (!p) {
    // Never the URL itself: it may hold a password.
    spdlog::error("websocket: {} is not an http://host:port proxy URL; connecting directly",
                  *names.begin());
  }
  return p;
}

}  // namespace

void WsClient::set_metrics(Metrics *metrics, std::function<std::string(const void *)> owner_name) {
  metrics_ = metrics;
  owner_name_ = std::move(owner_name);
}

// Connections come and go rarely: the series are looked up each time.
void WsClient::count(const void *owner, std::string_view event) {
  if (metrics_ == nullptr || !owner_name_) return;
  const std::string label = "plugin_instance=" + json_quote(owner_name_(owner));
  static constexpr std::string_view kConnects =
      "WebSocket connections attempted, by whether they opened";
  double *open = metrics_->gauge("chatgate_websocket_open", label, "open WebSocket connections");
  if (event == "closed") {
    if (double *c = metrics_->counter("chatgate_websocket_disconnects_total", label,
                                      "open WebSocket connections that ended")) {
      *c += 1;
    }
    if (open != nullptr) *open -= 1;
    return;
  }
  if (double *c = metrics_->counter("chatgate_websocket_connects_total",
                                    label + ",result=\"" + std::string(event) + "\"", kConnects)) {
    *c += 1;
  }
  if (open != nullptr && event == "open") *open += 1;
}

WsClient::WsClient(Loop &loop, std::string ca_file)
    : loop_(loop),
      ca_file_(std::move(ca_file)),
      https_proxy_(proxy_from_env({"https_proxy", "HTTPS_PROXY"})),
      http_proxy_(proxy_from_env({"http_proxy", "HTTP_PROXY"})),
      no_proxy_(env_first({"no_proxy", "NO_PROXY"})) {}

const WsProxy *WsClient::proxy_for(bool tls, std::string_view host) const {
  const std::optional<WsProxy> &p = tls ? https_proxy_ : http_proxy_;
  if (!p || ws_no_proxy_match(no_proxy_, host)) return nullptr;
  return &*p;
}

WsClient::~WsClient() = default;

void WsClient::erase(uint64_t id) { conns_.erase(id); }

struct WsClient::CtxJob {
  WsClient *client = nullptr;
  std::string ca_file;
  SslCtxPtr ctx;
  std::string error;
};

void WsClient::on_ctx_work(void *arg) {
  auto *job = static_cast<CtxJob *>(arg);
  job->ctx = tls_client_context(job->ca_file, &job->error);
}

void WsClient::on_ctx_done(void *arg, int status) {
  std::unique_ptr<CtxJob> job(static_cast<CtxJob *>(arg));
  WsClient *self = job->client;
  std::vector<uint64_t> waiting;
  waiting.swap(self->waiting_);
  if (status == 0 && job->ctx) {
    self->ctx_ = std::move(job->ctx);
    self->ctx_state_ = CtxState::kReady;
  } else {
    // Tried again on the next wss:// connect: the operator may fix the file.
    self->ctx_state_ = CtxState::kNone;
    if (job->error.empty()) job->error = "TLS context not built (shutting down)";
    spdlog::error("websocket: {}", job->error);
  }
  for (uint64_t id : waiting) {
    auto it = self->conns_.find(id);
    if (it == self->conns_.end()) continue;
    Conn *c = it->second.get();
    if (c->state != Conn::State::kWaitCtx) continue;
    if (self->ctx_state_ == CtxState::kReady) {
      self->start_resolve(c);
    } else {
      c->end(CG_EIO, kWsAbnormal, job->error);
    }
  }
}

void WsClient::start_resolve(Conn *c) {
  c->state = Conn::State::kResolving;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_ADDRCONFIG;
  c->gai.data = c;
  c->gai_pending = true;
  const std::string &host = c->proxy != nullptr ? c->proxy->host : c->url.host;
  const std::string port = std::to_string(c->proxy != nullptr ? c->proxy->port : c->url.port);
  const int rc = uv_getaddrinfo(
      loop_.uv(), &c->gai,
      [](uv_getaddrinfo_t *req, int status, addrinfo *res) {
        auto *conn = static_cast<Conn *>(req->data);
        conn->gai_pending = false;
        conn->addrs = res;
        if (conn->state == Conn::State::kEnded) {
          conn->maybe_free();
          return;
        }
        if (status != 0) {
          conn->end(CG_EIO, kWsAbnormal, std::string("DNS: ") + uv_strerror(status));
          return;
        }
        conn->next_addr = res;
        conn->try_connect();
      },
      host.c_str(), port.c_str(), &hints);
  if (rc != 0) {
    c->gai_pending = false;
    c->end(CG_EIO, kWsAbnormal, std::string("DNS: ") + uv_strerror(rc));
  }
}

int WsClient::connect(const void *owner, const cg_ws_connect_t &opts, cg_ws_cb cb, void *arg,
                      uint64_t *ws_id) {
  if (closing_) return CG_ECLOSED;
  if (cb == nullptr) return CG_EINVAL;
  if (opts.header_count > 0 && opts.headers == nullptr) return CG_EINVAL;
  const std::string_view url = chatgate::view(opts.url);
  auto c = std::make_unique<Conn>(opts.max_message_bytes > 0 ? opts.max_message_bytes
                                                             : kDefaultMaxMessage);
  if (!parse_ws_url(url, &c->url)) return CG_EINVAL;
  for (uint32_t i = 0; i < opts.header_count; ++i) {
    const std::string_view name = chatgate::view(opts.headers[i].name);
    const std::string_view value = chatgate::view(opts.headers[i].value);
    if (name.empty() || bad_header_text(name) || bad_header_text(value) ||
        name.find(':') != std::string_view::npos) {
      return CG_EINVAL;
    }
    // The host writes these itself; a second copy would break the upgrade.
    for (std::string_view own : {"host", "upgrade", "connection", "sec-websocket-key",
                                 "sec-websocket-version", "sec-websocket-extensions"}) {
      if (iequals(name, own)) return CG_EINVAL;
    }
    c->headers.emplace_back(name, value);
  }
  c->proxy = proxy_for(c->url.tls, c->url.host);
  c->client = this;
  c->id = next_id_++;
  c->cb = cb;
  c->arg = arg;
  c->owner = owner;
  c->connect_timeout_ms =
      opts.connect_timeout_ms > 0 ? opts.connect_timeout_ms : kDefaultConnectTimeoutMs;
  c->ping_interval_ms = opts.ping_interval_ms;
  uv_timer_init(loop_.uv(), &c->timer);
  c->timer.data = c.get();
  c->open_handles = 1;
  uv_timer_start(
      &c->timer, [](uv_timer_t *t) { static_cast<Conn *>(t->data)->on_timer(); },
      c->connect_timeout_ms, 0);
  Conn *conn = c.get();
  conns_.emplace(conn->id, std::move(c));
  if (ws_id != nullptr) *ws_id = conn->id;

  if (!conn->url.tls || ctx_state_ == CtxState::kReady) {
    start_resolve(conn);
    return 0;
  }
  waiting_.push_back(conn->id);
  if (ctx_state_ == CtxState::kNone) {
    auto job = std::make_unique<CtxJob>();
    job->client = this;
    job->ca_file = ca_file_;
    if (loop_.queue_work(on_ctx_work, on_ctx_done, job.get()) == 0) {
      (void)job.release();  // on_ctx_done owns it
      ctx_state_ = CtxState::kLoading;
    } else {
      waiting_.pop_back();
      conn->end(CG_EIO, kWsAbnormal, "cannot queue the TLS context build");
    }
  }
  return 0;
}

int WsClient::send(const void *owner, uint64_t ws_id, uint32_t opcode, std::string_view data) {
  auto it = conns_.find(ws_id);
  // Another instance's connection is as good as unknown.
  if (it == conns_.end() || it->second->owner != owner) return CG_ENOENT;
  Conn *c = it->second.get();
  if (opcode != CG_WS_TEXT && opcode != CG_WS_BINARY) return CG_EINVAL;
  if (c->state == Conn::State::kEnded || c->state == Conn::State::kClosing) return CG_ENOENT;
  if (c->state != Conn::State::kOpen) return CG_EAGAIN;
  if (uv_stream_get_write_queue_size(reinterpret_cast<uv_stream_t *>(&c->tcp)) > kMaxQueuedWrite) {
    return CG_EBUSY;
  }
  return c->write_frame(static_cast<uint8_t>(opcode), data) == 0 ? 0 : CG_EIO;
}

int WsClient::ping(const void *owner, uint64_t ws_id, std::string_view data) {
  auto it = conns_.find(ws_id);
  // Another instance's connection is as good as unknown.
  if (it == conns_.end() || it->second->owner != owner) return CG_ENOENT;
  Conn *c = it->second.get();
  if (data.size() > 125) return CG_EINVAL;
  if (c->state == Conn::State::kEnded || c->state == Conn::State::kClosing) return CG_ENOENT;
  if (c->state != Conn::State::kOpen) return CG_EAGAIN;
  return c->write_frame(kWsPing, data) == 0 ? 0 : CG_EIO;
}

int WsClient::close(const void *owner, uint64_t ws_id, int32_t code, std::string_view reason) {
  auto it = conns_.find(ws_id);
  // Another instance's connection is as good as unknown.
  if (it == conns_.end() || it->second->owner != owner) return CG_ENOENT;
  Conn *c = it->second.get();
  if (code != 0 &&
      (code < 1000 || code > 4999 || !ws_close_code_valid(static_cast<uint16_t>(code)))) {
    return CG_EINVAL;
  }
  if (reason.size() > 123 || (code == 0 && !reason.empty())) return CG_EINVAL;
  if (c->state == Conn::State::kEnded || c->state == Conn::State::kClosing) return CG_ENOENT;
  if (c->state != Conn::State::kOpen) {
    c->end(CG_ECANCELED, kWsAbnormal, "closed before it opened");
    return 0;
  }
  c->send_close(static_cast<uint16_t>(code), reason);
  if (c->state == Conn::State::kEnded) return 0;  // the write failed; CLOSED says why
  c->state = Conn::State::kClosing;
  c->close_code = code == 0 ? kWsNoStatus : code;
  c->reason.assign(reason);
  uv_timer_start(
      &c->timer, [](uv_timer_t *t) { static_cast<Conn *>(t->data)->on_timer(); }, kCloseWaitMs, 0);
  return 0;
}

void WsClient::close_all() {
  closing_ = true;
  std::vector<Conn *> all;
  all.reserve(conns_.size());
  for (auto &[id, c] : conns_) all.push_back(c.get());
  for (Conn *c : all) {
    const bool open = c->state == Conn::State::kOpen;
    if (open) c->send_close(kWsGoingAway, "shutting down");
    c->end(CG_ECANCELED, open ? kWsGoingAway : kWsAbnormal, "shutting down");
  }
}

}  // namespace cg
