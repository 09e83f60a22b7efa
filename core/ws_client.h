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
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tls_client.h"

namespace cg {

class Loop;

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

  struct Conn;              // internal
  void erase(uint64_t id);  // frees a connection whose handles all closed

 private:
  static void on_ctx_work(void *arg);
  static void on_ctx_done(void *arg, int status);
  void start_resolve(Conn *c);

  Loop &loop_;
  std::string ca_file_;
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
