// HttpServer::Impl, shared by the files that implement HttpServer:
// http_server.cc (lifecycle), http_server_listener.cc (accept, access
// policy), http_server_tls.cc (certificates) and http_server_routing.cc.
//
// THREAD: loop thread only.
#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "net/http_connection.h"
#include "net/http_server.h"
#include "net/ip_filter.h"
#include "net/tls_server.h"
#include "net/token_bucket.h"

namespace cg {

struct HttpServer::Impl final : HttpConnectionOwner {
  struct Route {
    std::string method;
    std::string path;
    HttpHandler handler;
    const std::string *label;  // `path` interned in route_labels: outlives the route table
  };
  enum class ListenState { kNone, kListening, kClosing, kClosed };
  static constexpr HttpHeader kJsonType[] = {{"Content-Type", "application/json"}};

  Impl(uv_loop_t *l, HttpListenerConfig c);  // in http_server.cc

  // HttpConnectionOwner
  std::string_view listener_name() const override { return config.name; }
  const HttpLimits &limits() const override { return config.limits; }
  void dispatch(HttpExchange *ex) override;
  void answered_internally(int status) override { count(nullptr, status); }
  std::string_view allowed_origin(const HttpRequest &req) const override;
  bool cors_enabled() const override { return !config.cors.allowed_origins.empty(); }
  int admit(HttpConnection &conn) override;
  SSL_CTX *tls_context() override { return tls_ctx.get(); }
  void tls_failed(std::string_view why) override;
  bool client_address(const HttpRequest &req, std::string *out) const override;
  char *acquire_block() override;
  void release_block(char *block) override;
  void connection_closed(HttpConnection *conn) override;
  void connection_drained(HttpConnection *conn) override { free_connection(conn); }

  static void on_connection(uv_stream_t *server, int status);
  static void on_listener_closed(uv_handle_t *h);
  void close_listener();
  const Route *find_route(std::string_view method, std::string_view path);
  void add_allow(std::string_view method);
  bool preflight_allowed(const HttpRequest &req) const;
  bool refuse_by_access(HttpExchange *ex);
  void count_refused(std::string_view reason);
  void invoke(const Route &route, HttpExchange *ex);
  void answered(HttpExchange *ex);
  void respond(HttpExchange *ex, int status, std::span<const HttpHeader> headers,
               std::string_view body);
  void free_connection(HttpConnection *conn);
  template <typename Fn>
  void for_each_connection(Fn fn);
  void maybe_done();
  bool handles_open() const {
    return live_connections > 0 || listen_state == ListenState::kListening ||
           listen_state == ListenState::kClosing || tls_handles > 0 || tls_reloading;
  }
  // TLS certificate reloads.
  void tls_watch();
  void tls_unwatch();
  static void on_tls_file_changed(uv_fs_poll_t *h, int status, const uv_stat_t *,
                                  const uv_stat_t *);
  static void on_tls_debounced(uv_timer_t *t);
  static void on_tls_handle_closed(uv_handle_t *h);
  void tls_installed(SslCtxPtr ctx, bool reload);
  void reload_tls_now();

  uv_loop_t *loop;
  HttpListenerConfig config;
  const std::string cors_methods, cors_headers, cors_max_age;  // preflight answer values
  uv_tcp_t listener{};
  ListenState listen_state = ListenState::kNone;
  int backlog = 0;
  bool accept_deferred = false;  // listening, not accepting yet (accept_start)

  // Access policy, compiled from config.access.
  struct RouteRule {
    std::string path;
    IpBlockList allow;
  };
  IpBlockList allow_from;
  IpBlockList trusted_proxies;
  std::vector<RouteRule> route_access;  // longest path first
  TokenBuckets request_buckets;
  std::unordered_map<std::string, uint32_t> connections_per_ip;
  std::map<std::string, double *, std::less<>> refused_counters;

  SslCtxPtr tls_ctx;  // new connections' context; sessions hold a reference to theirs
  uv_fs_poll_t cert_poll{}, key_poll{};
  uv_timer_t tls_debounce{};
  int tls_handles = 0;  // open poll and timer handles
  bool tls_watching = false;
  bool tls_reloading = false;     // a context is being built on the thread pool
  bool tls_reload_again = false;  // asked for again meanwhile

  std::vector<Route> exact_routes;
  std::vector<Route> prefix_routes;  // longest path first
  std::string allow;                 // scratch: the Allow value of a 405

  // Declared before the connections so blocks they return on destruction
  // still have a home.
  std::vector<std::unique_ptr<char[]>> free_blocks;
  std::unordered_map<HttpConnection *, std::unique_ptr<HttpConnection>> connections;
  std::vector<HttpConnection *> doomed;  // freed once no loop over `connections` runs
  int iterating = 0;

  size_t live_connections = 0;     // handles not yet closed, rejected ones included
  size_t serving_connections = 0;  // live and not rejected
  size_t in_flight = 0;
  HttpExchange *dispatching = nullptr;  // the exchange whose handler is running
  bool dispatch_answered = false;

  // chatgate_http_requests_total series by (route label, status), looked up
  // once each.
  void count(const std::string *route, int status);
  Metrics *metrics = nullptr;
  std::set<std::string, std::less<>> route_labels;
  std::map<std::pair<const std::string *, int>, double *> request_counters;
  std::function<void()> on_closed;
};

// Callbacks run inside (abort callbacks, answers to zombies) can free
// connections; those frees wait until the loop is done.
template <typename Fn>
void HttpServer::Impl::for_each_connection(Fn fn) {
  ++iterating;
  for (auto &entry : connections) fn(*entry.second);
  if (--iterating == 0) {
    for (HttpConnection *conn : doomed) connections.erase(conn);
    doomed.clear();
  }
}

}  // namespace cg
