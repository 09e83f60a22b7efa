// HTTP/1.1 server on libuv with llhttp: one listener, its connections, routes.
//
// THREAD: not thread-safe; everything runs on the loop thread that owns it.
#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "net/options.h"
#include "net/tls_server.h"
#include "net/token_bucket.h"

namespace cg {

class Metrics;

struct HttpHeader {
  std::string_view name;
  std::string_view value;
};

// One parsed request. Views stay valid until the exchange is answered.
class HttpRequest {
 public:
  std::string_view method() const { return method_; }
  std::string_view path() const { return path_; }    // before '?'
  std::string_view query() const { return query_; }  // after '?', or empty
  std::string_view body() const { return body_; }
  // The client's address: the peer's, or the one X-Forwarded-For names
  // when the peer is a trusted proxy (AccessPolicy::trusted_proxies).
  std::string_view remote_addr() const { return remote_addr_; }
  // The TCP peer's address (a proxy's, behind one).
  std::string_view peer_addr() const { return peer_addr_; }
  // First header with this name (case-insensitive), or empty.
  std::string_view header(std::string_view name) const;
  std::span<const HttpHeader> headers() const { return header_views_; }

 private:
  friend class HttpConnection;
  friend struct HttpRequestBuilder;  // for unit tests that build requests without a socket
  std::string method_, path_, query_, body_, remote_addr_, peer_addr_;
  std::string header_bytes_;  // names and values packed; header_views_ point into it
  std::vector<HttpHeader> header_views_;
  std::vector<std::pair<size_t, size_t>> header_offsets_;  // name/value offsets while parsing
};

class HttpExchange;  // one request awaiting its answer; owned by the server

// A route handler. It answers now or later through HttpServer::respond (or
// the streaming calls), exactly once per exchange.
using HttpHandler = std::function<void(HttpExchange *ex, const HttpRequest &req)>;

class HttpServer {
 public:
  HttpServer(uv_loop_t *loop, HttpListenerConfig config);
  ~HttpServer();
  HttpServer(const HttpServer &) = delete;
  HttpServer &operator=(const HttpServer &) = delete;

  // With config().tls on: loads the certificate and key (disk reads; call
  // before the loop runs, and before listen). Returns "" or the error.
  std::string load_tls();
  // Reads the certificate and key again on the thread pool and, when they
  // load, serves new connections with them; open connections keep the
  // ones they began with. A failure keeps the current ones (one error
  // line). Also runs by itself when the files change (tls.reloadCheckMs).
  void reload_tls();
  // Binds and listens, or with `inherited_fd` >= 0 serves that socket,
  // already bound and listening (systemd's, or a handover's). OWNERSHIP:
  // takes `inherited_fd` (closed here if it cannot be served). Returns 0
  // or a negative libuv error (UV_EADDRINUSE...).
  // With `defer_accept` and an inherited socket, connections wait in its
  // queue until accept_start (its other holder serves them meanwhile).
  int listen(int inherited_fd = -1, bool defer_accept = false);
  int accept_start();
  // The listening socket's descriptor, to hand to a new process (it stays
  // this server's); -1 when not listening.
  int listen_fd() const;
  // The bound port (useful with port 0).
  int port() const;
  const HttpListenerConfig &config() const;

  // Adds a route. `prefix` matches every path that starts with `path`.
  // Exact routes win over prefix routes; the longest prefix wins. A path
  // that matches with another method gets 405 with an Allow header.
  // Returns 0, or -EEXIST when the same method+path is taken.
  int add_route(std::string_view method, std::string_view path, bool prefix, HttpHandler handler);

  // Answers an exchange with a complete body. `headers` are extra response
  // headers (Content-Type...); Content-Length, Connection and Date are the
  // server's. `ex` is invalid afterwards. If the client went away, the answer
  // is dropped and the exchange freed.
  void respond(HttpExchange *ex, int status, std::span<const HttpHeader> headers,
               std::string_view body);

  // Streaming answer (Transfer-Encoding: chunked), for server-sent events:
  // stream_begin once, stream_write any number of times, stream_end once
  // (which invalidates `ex`).
  void stream_begin(HttpExchange *ex, int status, std::span<const HttpHeader> headers);
  void stream_write(HttpExchange *ex, std::string_view data);
  void stream_end(HttpExchange *ex);

  // Called (once) if the client goes away before the exchange is answered,
  // so the handler can cancel its work. The exchange is still valid and must
  // still be answered (respond/stream_end), which then only frees it.
  void set_abort_callback(HttpExchange *ex, std::function<void()> on_abort);
  bool aborted(const HttpExchange *ex) const;

  // Counts every answer in `metrics` as chatgate_http_requests_total
  // {listener, route, status}: route is the matched route's path, "" when
  // none matched or the connection answered itself. Null: no counting.
  void set_metrics(Metrics *metrics);

  // Graceful stop, step 1: close the listening socket; busy connections
  // close after their in-flight answers. An idle keep-alive connection is
  // not closed at once, since its client may be sending the next request
  // right now and would lose it: it lingers up to kDrainLingerMs, and a
  // request that comes meanwhile is served with "Connection: close".
  void stop_accepting();
  static constexpr uint64_t kDrainLingerMs = 1000;
  // Exchanges received but not yet answered.
  size_t in_flight() const;
  size_t connection_count() const;
  // Step 2: close every connection and the listener; `done` fires once all
  // handles are closed. Exchanges still pending are marked aborted and freed
  // when answered.
  void close(std::function<void()> done);

  // Opaque (http_server_impl.h); public only so file-local helpers in the
  // http_server*.cc files can name it.
  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// Reason phrase for a status code ("Not Found").
std::string_view http_status_text(int status);

}  // namespace cg
