// One WebSocket client connection of WsClient: its states from waiting for
// the TLS context through DNS, connect, the proxy tunnel, TLS and the
// upgrade to frames and the close. Internal to core/net (ws_client.cc,
// ws_connection.cc, ws_proxy.cc).
//
// THREAD: not thread-safe; loop thread only.
#pragma once

#include <chatgate/host.h>
#include <llhttp.h>
#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "net/tls_client.h"
#include "net/ws_client.h"
#include "net/ws_frame.h"
#include "net/ws_url.h"

namespace cg {

constexpr uint64_t kDefaultConnectTimeoutMs = 10000;
constexpr uint64_t kDefaultMaxMessage = uint64_t{16} << 20;
constexpr uint64_t kCloseWaitMs = 2000;  // for the server's close frame or its FIN
constexpr size_t kMaxUpgradeAnswer = 16384;
constexpr size_t kMaxQueuedWrite = size_t{64} << 20;

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
  ws_internal::ParsedUrl url;
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

}  // namespace cg
