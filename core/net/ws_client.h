// Outbound WebSocket connections for plugins (RFC 6455, client side) on the
// libuv loop: uv_getaddrinfo for DNS, uv_tcp for the socket, TlsSession
// (OpenSSL over memory BIOs) for wss://, WsReader for frames. Why our own
// client rather than libwebsockets: see docs/plugin-abi.md ("WebSocket
// client"). The host API in sdk/include/chatgate/host.h (ws_*) is its
// contract.
//
// THREAD: not thread-safe; loop thread only.
#pragma once

#include <chatgate/host.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "net/tls_client.h"

namespace cg {

class Loop;
class Metrics;

// A proxy from the environment, tunnelled through with CONNECT:
// https_proxy (or HTTPS_PROXY) for wss://, http_proxy (HTTP_PROXY) for
// ws://, none for hosts no_proxy (NO_PROXY) names, as curl reads them.
struct WsProxy {
  std::string host;
  uint16_t port = 1080;
  std::string authorization;  // base64 of "user:password" from the URL, or empty
};

// Parses "http://[user:password@]host[:port][/]". std::nullopt when it is
// not such a URL (https:// proxies are not supported).
std::optional<WsProxy> ws_proxy_parse(std::string_view url);

// True when the comma-separated no_proxy list names `host`: "*", the host
// itself, or a domain it is in ("example.com" and ".example.com" both
// cover "a.example.com").
bool ws_no_proxy_match(std::string_view no_proxy, std::string_view host);

// The delay before reconnect attempt `attempt`: min(max_ms, base_ms *
// 2^attempt) less a random part of up to half of it. THREAD: any.
uint64_t backoff_delay_ms(uint32_t attempt, uint64_t base_ms, uint64_t max_ms);

class WsClient {
 public:
  // `ca_file`: the operator's httpClient.caFile, or empty for the system store.
  WsClient(Loop &loop, std::string ca_file);
  ~WsClient();
  WsClient(const WsClient &) = delete;
  WsClient &operator=(const WsClient &) = delete;

  // As cg_host_api_t.ws_connect / ws_send / ws_ping / ws_close. `owner`
  // (the calling instance) scopes ids: one instance cannot touch another's
  // connections.
  int connect(const void *owner, const cg_ws_connect_t &opts, cg_ws_cb cb, void *arg,
              uint64_t *ws_id);
  int send(const void *owner, uint64_t ws_id, uint32_t opcode, std::string_view data);
  int ping(const void *owner, uint64_t ws_id, std::string_view data);
  int close(const void *owner, uint64_t ws_id, int32_t code, std::string_view reason);

  // Shutdown: every connection ends (a 1001 close frame where open) and
  // its CG_WS_CLOSED event, with CG_ECANCELED, comes as its handles close.
  // Call before Loop::close().
  void close_all();

  size_t active() const { return conns_.size(); }

  // Counts connections per plugin instance in `metrics`:
  // chatgate_websocket_connects_total{plugin_instance,result="open"|"failed"},
  // chatgate_websocket_disconnects_total (an open one that ended) and the
  // gauge chatgate_websocket_open. `owner_name` names a connect()'s owner.
  void set_metrics(Metrics *metrics, std::function<std::string(const void *)> owner_name);

  struct Conn;              // internal
  void erase(uint64_t id);  // frees a connection whose handles all closed

 private:
  // The proxy for a connection to `host`, or null.
  const WsProxy *proxy_for(bool tls, std::string_view host) const;
  static void on_ctx_work(void *arg);
  static void on_ctx_done(void *arg, int status);
  void start_resolve(Conn *c);

  // One connection's outcome in the metrics: "open", "failed" or "closed".
  void count(const void *owner, std::string_view event);

  Loop &loop_;
  std::string ca_file_;
  Metrics *metrics_ = nullptr;
  std::function<std::string(const void *)> owner_name_;
  std::optional<WsProxy> https_proxy_, http_proxy_;
  std::string no_proxy_;
  bool closing_ = false;
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, std::unique_ptr<Conn>> conns_;

  // The TLS context is built on the thread pool on the first wss:// connect
  // (reading the CA store is disk I/O); connections wait for it here.
  enum class CtxState { kNone, kLoading, kReady };
  struct CtxJob;
  CtxState ctx_state_ = CtxState::kNone;
  SslCtxPtr ctx_;
  std::vector<uint64_t> waiting_;
};

}  // namespace cg
