// The listener, the route table, CORS, and the answer API of HttpServer.
// Per-connection work (parsing, ordering, timeouts) is in http_connection.cc.
//
// Routing picks, among the routes whose method is the request's, the exact
// one for the path, else the longest matching prefix. Only when no route of
// that method matches does the method matter for the answer: 405 with the
// methods that would have matched in Allow, or 404 when none would. HEAD
// without a HEAD route uses the GET route and is answered without a body.
#include "net/http_server.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <map>
#include <set>
#include <unordered_map>
#include <utility>

#include "base/metrics.h"
#include "net/http_connection.h"
#include "net/ip_filter.h"

namespace cg {
namespace {

constexpr int kBacklog = 511;
constexpr size_t kMaxFreeBlocks = 64;  // 4 MiB of idle read blocks at most
constexpr HttpHeader kJsonType[] = {{"Content-Type", "application/json"}};

std::string join(const std::vector<std::string> &items) {
  std::string out;
  for (const std::string &item : items) {
    if (!out.empty()) out.append(", ");
    out.append(item);
  }
  return out;
}

}  // namespace

struct HttpServer::Impl final : HttpConnectionOwner {
  struct Route {
    std::string method;
    std::string path;
    HttpHandler handler;
    const std::string *label;  // `path` interned in route_labels: outlives the route table
  };
  enum class ListenState { kNone, kListening, kClosing, kClosed };

  Impl(uv_loop_t *l, HttpListenerConfig c)
      : loop(l),
        config(std::move(c)),
        cors_methods(join(config.cors.allowed_methods)),
        cors_headers(join(config.cors.allowed_headers)),
        cors_max_age(std::to_string(config.cors.max_age_seconds)),
        allow_from(config.access.allow_from),
        trusted_proxies(config.access.trusted_proxies),
        request_buckets(config.access.requests_per_ip) {
    for (const RouteAccess &r : config.access.routes) {
      route_access.push_back({r.path, IpBlockList(r.allow_from)});
    }
    // Longest first: the most specific rule applies.
    std::stable_sort(route_access.begin(), route_access.end(),
                     [](const auto &a, const auto &b) { return a.path.size() > b.path.size(); });
  }

  // HttpConnectionOwner
  std::string_view listener_name() const override { return config.name; }
  const HttpLimits &limits() const override { return config.limits; }
  void dispatch(HttpExchange *ex) override;
  void answered_internally(int status) override { count(nullptr, status); }
  std::string_view allowed_origin(const HttpRequest &req) const override;
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

// --- Connections -------------------------------------------------------------

void HttpServer::Impl::on_connection(uv_stream_t *server, int status) {
  auto *self = static_cast<Impl *>(server->data);
  if (status < 0) {
    spdlog::warn("listener '{}': accept failed: {}", self->config.name, uv_strerror(status));
    return;
  }
  bool reject = self->serving_connections >= self->config.limits.max_connections;
  auto owned = std::make_unique<HttpConnection>(*self, self->loop, reject);
  HttpConnection *conn = owned.get();
  self->connections.emplace(conn, std::move(owned));
  ++self->live_connections;
  if (reject) {
    spdlog::debug("listener '{}': connection limit ({}) reached, answering 503", self->config.name,
                  self->config.limits.max_connections);
  } else {
    ++self->serving_connections;
  }
  if (int rc = conn->start(server); rc < 0) {
    spdlog::debug("listener '{}': accept: {}", self->config.name, uv_strerror(rc));
    conn->close();
  }
}

void HttpServer::Impl::connection_closed(HttpConnection *conn) {
  --live_connections;
  if (conn->counted) {
    auto it = connections_per_ip.find(conn->peer());
    if (it != connections_per_ip.end() && --it->second == 0) connections_per_ip.erase(it);
    conn->counted = false;
  }
  if (!conn->rejecting()) --serving_connections;
  if (conn->pending() == 0) free_connection(conn);
  maybe_done();  // may destroy the server: nothing after this
}

void HttpServer::Impl::free_connection(HttpConnection *conn) {
  if (iterating > 0) {
    doomed.push_back(conn);
    return;
  }
  connections.erase(conn);
}

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

void HttpServer::Impl::maybe_done() {
  if (!on_closed || handles_open()) return;
  auto done = std::exchange(on_closed, nullptr);
  done();
}

char *HttpServer::Impl::acquire_block() {
  if (free_blocks.empty()) {
    return std::make_unique_for_overwrite<char[]>(HttpConnection::kReadBlockSize).release();
  }
  std::unique_ptr<char[]> block = std::move(free_blocks.back());
  free_blocks.pop_back();
  return block.release();  // owned by libuv's read buffer until release_block
}

void HttpServer::Impl::release_block(char *block) {
  std::unique_ptr<char[]> owned(block);
  if (free_blocks.size() < kMaxFreeBlocks) free_blocks.push_back(std::move(owned));
}

// --- Access policy -------------------------------------------------------------

// At accept only the peer is known: a peer that is a trusted proxy is let
// in, and its requests are checked one by one against the address they
// are forwarded for.
int HttpServer::Impl::admit(HttpConnection &conn) {
  const std::string &peer = conn.peer();
  if (!allow_from.empty() && !allow_from.contains(peer) && !trusted_proxies.contains(peer)) {
    count_refused("address");
    return 403;
  }
  const size_t cap = config.access.max_connections_per_ip;
  if (cap == 0) return 0;
  uint32_t &n = connections_per_ip[peer];
  if (n >= cap) {
    count_refused("connections_per_ip");
    return 503;
  }
  ++n;
  conn.counted = true;
  return 0;
}

bool HttpServer::Impl::client_address(const HttpRequest &req, std::string *out) const {
  const std::string_view peer = req.peer_addr();
  if (trusted_proxies.empty() || !trusted_proxies.contains(peer)) return false;
  // Every X-Forwarded-For header, in order, as one list (RFC 9110 5.3).
  std::string joined;
  for (const HttpHeader &h : req.headers()) {
    if (!ascii_iequals(h.name, "X-Forwarded-For")) continue;
    if (!joined.empty()) joined += ',';
    joined.append(h.value);
  }
  *out = ip_client_address(peer, joined, trusted_proxies);
  return true;
}

namespace {

// "/webhook/feishu" covers itself and "/webhook/feishu/..." but not
// "/webhook/feishu2"; a rule ending in '/' covers everything below it.
bool path_covers(std::string_view rule, std::string_view path) {
  if (!path.starts_with(rule)) return false;
  return path.size() == rule.size() || rule.back() == '/' || path[rule.size()] == '/';
}

}  // namespace

// Answers 403 or 429 and returns true when the request's client may not
// have it.
bool HttpServer::Impl::refuse_by_access(HttpExchange *ex) {
  const HttpRequest &req = ex->request;
  const std::string_view client = req.remote_addr();
  bool allowed = allow_from.empty() || allow_from.contains(client);
  if (allowed) {
    for (const RouteRule &rule : route_access) {
      if (!path_covers(rule.path, req.path())) continue;
      allowed = rule.allow.contains(client);
      break;
    }
  }
  if (!allowed) {
    count_refused("address");
    spdlog::debug("listener '{}': 403 for {} {} from {}: address not allowed", config.name,
                  req.method(), req.path(), client);
    respond(ex, 403, kJsonType, http_error_body(403));
    return true;
  }
  if (const uint64_t wait_ms = request_buckets.take(client, uv_now(loop)); wait_ms != 0) {
    count_refused("request_rate");
    const std::string retry = std::to_string((wait_ms + 999) / 1000);
    const HttpHeader headers[] = {kJsonType[0], {"Retry-After", retry}};
    respond(ex, 429, headers, http_error_body(429));
    return true;
  }
  return false;
}

void HttpServer::Impl::count_refused(std::string_view reason) {
  if (metrics == nullptr) return;
  auto it = refused_counters.find(reason);
  if (it == refused_counters.end()) {
    const std::string labels =
        "listener=\"" + config.name + "\",reason=\"" + std::string(reason) + "\"";
    it = refused_counters
             .emplace(std::string(reason),
                      metrics->counter("chatgate_http_refused_total", labels,
                                       "Connections and requests refused by the listener's "
                                       "access policy (address, connections_per_ip, "
                                       "request_rate)"))
             .first;
  }
  if (it->second != nullptr) *it->second += 1;
}

// --- TLS -----------------------------------------------------------------------

void HttpServer::Impl::tls_failed(std::string_view why) {
  // A scanner or a plain-HTTP client on a TLS port is routine: debug only,
  // and counted.
  spdlog::debug("listener '{}': TLS: {}", config.name, why);
  if (metrics == nullptr) return;
  if (double *c = metrics->counter("chatgate_tls_handshake_errors_total",
                                   "listener=\"" + config.name + "\"",
                                   "TLS connections that failed (handshake or record errors)")) {
    *c += 1;
  }
}

// The certificate's end of validity, for the expiry gauge and the log.
void HttpServer::Impl::tls_installed(SslCtxPtr ctx, bool reload) {
  tls_ctx = std::move(ctx);
  X509 *cert = SSL_CTX_get0_certificate(tls_ctx.get());
  int days = 0, secs = 0;
  const ASN1_TIME *not_after = cert != nullptr ? X509_get0_notAfter(cert) : nullptr;
  const bool known = not_after != nullptr && ASN1_TIME_diff(&days, &secs, nullptr, not_after) == 1;
  const double left = known ? days * 86400.0 + secs : 0;
  if (metrics != nullptr) {
    const std::string labels = "listener=\"" + config.name + "\"";
    if (double *g = metrics->gauge("chatgate_tls_certificate_expiry_seconds", labels,
                                   "Seconds until the listener's certificate expires")) {
      *g = left;
    }
    if (reload) {
      if (double *c = metrics->counter("chatgate_tls_reloads_total", labels + ",result=\"ok\"",
                                       "TLS certificate reloads by result")) {
        *c += 1;
      }
    }
  }
  spdlog::info("listener '{}': TLS certificate {} from {} ({} days left)", config.name,
               reload ? "reloaded" : "loaded", config.tls.cert_file,
               known ? std::to_string(days) : std::string("expiry unknown"));
  if (known && left <= 0) {
    spdlog::error("listener '{}': the certificate in {} has expired", config.name,
                  config.tls.cert_file);
  }
}

void HttpServer::Impl::tls_watch() {
  if (!config.tls.enabled() || config.tls.reload_check_ms == 0 || tls_watching) return;
  tls_watching = true;
  uv_timer_init(loop, &tls_debounce);
  tls_debounce.data = this;
  ++tls_handles;
  const auto interval = static_cast<unsigned>(config.tls.reload_check_ms);
  for (auto [poll, path] :
       {std::pair{&cert_poll, &config.tls.cert_file}, std::pair{&key_poll, &config.tls.key_file}}) {
    uv_fs_poll_init(loop, poll);
    poll->data = this;
    ++tls_handles;
    if (const int rc = uv_fs_poll_start(poll, on_tls_file_changed, path->c_str(), interval);
        rc != 0) {
      spdlog::warn("listener '{}': cannot watch {} for changes ({}); reload with SIGHUP",
                   config.name, *path, uv_strerror(rc));
    }
  }
}

void HttpServer::Impl::tls_unwatch() {
  if (!tls_watching) return;
  tls_watching = false;
  uv_close(reinterpret_cast<uv_handle_t *>(&cert_poll), on_tls_handle_closed);
  uv_close(reinterpret_cast<uv_handle_t *>(&key_poll), on_tls_handle_closed);
  uv_close(reinterpret_cast<uv_handle_t *>(&tls_debounce), on_tls_handle_closed);
}

void HttpServer::Impl::on_tls_handle_closed(uv_handle_t *h) {
  auto *self = static_cast<Impl *>(h->data);
  --self->tls_handles;
  self->maybe_done();
}

// Renewal tools write the certificate and the key one after the other:
// the reload waits for the files to settle.
void HttpServer::Impl::on_tls_file_changed(uv_fs_poll_t *h, int status, const uv_stat_t *,
                                           const uv_stat_t *) {
  auto *self = static_cast<Impl *>(h->data);
  if (!self->tls_watching) return;
  if (status < 0 && status != UV_ENOENT) return;
  uv_timer_start(&self->tls_debounce, on_tls_debounced, 500, 0);
}

void HttpServer::Impl::on_tls_debounced(uv_timer_t *t) {
  auto *self = static_cast<Impl *>(t->data);
  spdlog::info("listener '{}': TLS certificate or key file changed; reloading", self->config.name);
  self->reload_tls_now();
}

// --- Listener ----------------------------------------------------------------

void HttpServer::Impl::close_listener() {
  if (listen_state != ListenState::kListening) return;
  listen_state = ListenState::kClosing;
  uv_close(reinterpret_cast<uv_handle_t *>(&listener), on_listener_closed);
}

void HttpServer::Impl::on_listener_closed(uv_handle_t *h) {
  auto *self = static_cast<Impl *>(h->data);
  self->listen_state = ListenState::kClosed;
  self->maybe_done();
}

// --- Routing and CORS ----------------------------------------------------------

std::string_view HttpServer::Impl::allowed_origin(const HttpRequest &req) const {
  const auto &allowed = config.cors.allowed_origins;
  if (allowed.empty()) return {};
  std::string_view origin = req.header("Origin");
  if (origin.empty()) return {};
  for (const std::string &o : allowed) {
    if (o == "*" || o == origin) return origin;
  }
  return {};
}

namespace {

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); i++) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

// The requested method must be an allowed one (methods are case-sensitive)
// and every requested header an allowed one (header names are not).
bool HttpServer::Impl::preflight_allowed(const HttpRequest &req) const {
  const std::string_view method = req.header("Access-Control-Request-Method");
  const auto &methods = config.cors.allowed_methods;
  if (std::find(methods.begin(), methods.end(), method) == methods.end()) return false;
  std::string_view rest = req.header("Access-Control-Request-Headers");
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    const std::string_view name = trim_ows(rest.substr(0, comma));
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    if (name.empty()) continue;
    const auto &headers = config.cors.allowed_headers;
    if (std::none_of(headers.begin(), headers.end(),
                     [&](const std::string &h) { return iequals(h, name); })) {
      return false;
    }
  }
  return true;
}

void HttpServer::Impl::add_allow(std::string_view method) {
  // Few routes share a path, so a substring scan is enough to deduplicate.
  size_t pos = 0;
  while ((pos = allow.find(method, pos)) != std::string::npos) {
    size_t end = pos + method.size();
    if ((pos == 0 || allow[pos - 1] == ' ') && (end == allow.size() || allow[end] == ',')) return;
    pos = end;
  }
  if (!allow.empty()) allow.append(", ");
  allow.append(method);
}

const HttpServer::Impl::Route *HttpServer::Impl::find_route(std::string_view method,
                                                            std::string_view path) {
  allow.clear();
  for (const Route &r : exact_routes) {
    if (r.path != path) continue;
    if (r.method == method) return &r;
    add_allow(r.method);
  }
  for (const Route &r : prefix_routes) {
    if (!path.starts_with(r.path)) continue;
    if (r.method == method) return &r;
    add_allow(r.method);
  }
  return nullptr;
}

void HttpServer::Impl::dispatch(HttpExchange *ex) {
  ++in_flight;
  if (refuse_by_access(ex)) return;
  const HttpRequest &req = ex->request;
  ex->cors_origin = allowed_origin(req);
  if (!config.cors.allowed_origins.empty() && req.method() == "OPTIONS" &&
      !req.header("Access-Control-Request-Method").empty()) {
    if (ex->cors_origin.empty() || !preflight_allowed(req)) {
      respond(ex, 403, kJsonType, http_error_body(403));
      return;
    }
    // A preflight for a path and method that no route serves: say so, rather
    // than let the browser send a request that can only fail.
    const std::string_view want = req.header("Access-Control-Request-Method");
    if (find_route(want, req.path()) == nullptr &&
        !(want == "HEAD" && find_route("GET", req.path()) != nullptr)) {
      respond(ex, 404, kJsonType, http_error_body(404));
      return;
    }
    const HttpHeader preflight[] = {{"Access-Control-Allow-Methods", cors_methods},
                                    {"Access-Control-Allow-Headers", cors_headers},
                                    {"Access-Control-Max-Age", cors_max_age}};
    respond(ex, 204, preflight, {});
    return;
  }
  const Route *route = find_route(req.method(), req.path());
  // HEAD is GET without the body (RFC 9110); the connection drops the body.
  if (route == nullptr && req.method() == "HEAD") route = find_route("GET", req.path());
  if (route != nullptr) {
    invoke(*route, ex);
  } else if (allow.empty()) {
    respond(ex, 404, kJsonType, http_error_body(404));
  } else {
    const HttpHeader headers[] = {kJsonType[0], {"Allow", allow}};
    respond(ex, 405, headers, http_error_body(405));
  }
}

void HttpServer::Impl::invoke(const Route &route, HttpExchange *ex) {
  // An exception must not unwind through libuv's C frames; answer 500 for a
  // handler that threw before answering.
  ex->route = route.label;
  HttpExchange *outer = std::exchange(dispatching, ex);
  bool outer_answered = std::exchange(dispatch_answered, false);
  try {
    route.handler(ex, ex->request);
  } catch (const std::exception &e) {
    spdlog::error("listener '{}': handler for {} {} threw: {}", config.name, route.method,
                  route.path, e.what());
    if (!dispatch_answered) respond(ex, 500, kJsonType, http_error_body(500));
  } catch (...) {
    spdlog::error("listener '{}': handler for {} {} threw", config.name, route.method, route.path);
    if (!dispatch_answered) respond(ex, 500, kJsonType, http_error_body(500));
  }
  dispatching = outer;
  dispatch_answered = outer_answered;
}

// --- Answers -----------------------------------------------------------------

void HttpServer::Impl::answered(HttpExchange *ex) {
  if (ex == dispatching) dispatch_answered = true;
}

void HttpServer::Impl::respond(HttpExchange *ex, int status, std::span<const HttpHeader> headers,
                               std::string_view body) {
  if (ex == nullptr || ex->state != HttpExchange::State::kPending) {
    spdlog::error("listener '{}': respond() on an exchange that is not awaiting an answer",
                  config.name);
    return;
  }
  answered(ex);
  --in_flight;
  count(ex->route, status);
  ex->conn->respond(ex, status, headers, body);  // may free ex and its connection
}

void HttpServer::Impl::count(const std::string *route, int status) {
  if (metrics == nullptr) return;
  auto [it, inserted] = request_counters.try_emplace({route, status}, nullptr);
  if (inserted) {
    std::string labels = "listener=\"" + config.name + "\",route=\"";
    // Route paths are the code's own ("/api/chat", "/webhook/"): no quote
    // or backslash to escape.
    if (route != nullptr) labels += *route;
    labels += "\",status=\"" + std::to_string(status) + "\"";
    it->second = metrics->counter("chatgate_http_requests_total", labels,
                                  "HTTP answers by listener, matched route and status");
  }
  if (it->second != nullptr) *it->second += 1;
}

void HttpServer::set_metrics(Metrics *metrics) { impl_->metrics = metrics; }

HttpServer::HttpServer(uv_loop_t *loop, HttpListenerConfig config)
    : impl_(std::make_unique<Impl>(loop, std::move(config))) {
  impl_->listener.data = impl_.get();
}

HttpServer::~HttpServer() {
  if (impl_ && impl_->handles_open()) {
    // libuv still points into the server; freeing it would be a
    // use-after-free, so it is closed and deliberately leaked instead.
    spdlog::error(
        "listener '{}': destroyed with open handles; call close() and run the loop "
        "until it completes first",
        impl_->config.name);
    impl_->close_listener();
    impl_->for_each_connection([](HttpConnection &c) { c.close(); });
    (void)impl_.release();
  }
}

namespace {

struct TlsReloadWork {
  uv_work_t req{};
  HttpServer::Impl *impl = nullptr;
  TlsServerConfig config;
  SslCtxPtr ctx;
  std::string error;
};

}  // namespace

void HttpServer::Impl::reload_tls_now() {
  if (!config.tls.enabled() || listen_state == ListenState::kClosed || on_closed) return;
  if (tls_reloading) {
    tls_reload_again = true;
    return;
  }
  auto work = std::make_unique<TlsReloadWork>();
  work->impl = this;
  work->config = config.tls;
  work->req.data = work.get();
  const int rc = uv_queue_work(
      loop, &work->req,
      [](uv_work_t *req) {
        auto *w = static_cast<TlsReloadWork *>(req->data);
        w->ctx = tls_server_context(w->config, &w->error);
      },
      [](uv_work_t *req, int) {
        std::unique_ptr<TlsReloadWork> w(static_cast<TlsReloadWork *>(req->data));
        Impl *self = w->impl;
        self->tls_reloading = false;
        if (self->on_closed) {  // closing: nothing to swap in
          self->maybe_done();
          return;
        }
        if (w->ctx) {
          self->tls_installed(std::move(w->ctx), true);
        } else {
          spdlog::error(
              "listener '{}': TLS reload failed, the current certificate stays: "
              "listeners.{}.tls: {}",
              self->config.name, self->config.name, w->error);
          if (self->metrics != nullptr) {
            if (double *c = self->metrics->counter(
                    "chatgate_tls_reloads_total",
                    "listener=\"" + self->config.name + "\",result=\"failed\"")) {
              *c += 1;
            }
          }
        }
        if (std::exchange(self->tls_reload_again, false)) self->reload_tls_now();
      });
  if (rc != 0) {
    spdlog::error("listener '{}': cannot queue the TLS reload: {}", config.name, uv_strerror(rc));
    return;
  }
  tls_reloading = true;
  (void)work.release();  // the after-work callback owns it
}

std::string HttpServer::load_tls() {
  Impl &s = *impl_;
  if (!s.config.tls.enabled()) return {};
  std::string error;
  SslCtxPtr ctx = tls_server_context(s.config.tls, &error);
  if (!ctx) return error;
  s.tls_installed(std::move(ctx), false);
  return {};
}

void HttpServer::reload_tls() { impl_->reload_tls_now(); }

int HttpServer::listen() {
  Impl &s = *impl_;
  if (s.listen_state != Impl::ListenState::kNone) return UV_EALREADY;
  sockaddr_storage addr{};
  int rc =
      uv_ip4_addr(s.config.address.c_str(), s.config.port, reinterpret_cast<sockaddr_in *>(&addr));
  if (rc < 0) {
    rc = uv_ip6_addr(s.config.address.c_str(), s.config.port,
                     reinterpret_cast<sockaddr_in6 *>(&addr));
  }
  if (rc < 0) return rc;
  rc = uv_tcp_init(s.loop, &s.listener);
  if (rc < 0) return rc;
  s.listen_state = Impl::ListenState::kListening;
  rc = uv_tcp_bind(&s.listener, reinterpret_cast<const sockaddr *>(&addr), 0);
  if (rc == 0)
    rc = uv_listen(reinterpret_cast<uv_stream_t *>(&s.listener), kBacklog, Impl::on_connection);
  if (rc < 0) {
    s.close_listener();
    return rc;
  }
  if (s.config.tls.enabled() && !s.tls_ctx) {
    spdlog::error("listener '{}': TLS configured but not loaded (load_tls)", s.config.name);
    s.close_listener();
    return UV_EINVAL;
  }
  s.tls_watch();
  spdlog::info("listener '{}': listening on {}://{}:{}", s.config.name,
               s.config.tls.enabled() ? "https" : "http", s.config.address, port());
  return 0;
}

int HttpServer::port() const {
  const Impl &s = *impl_;
  if (s.listen_state != Impl::ListenState::kListening) return s.config.port;
  sockaddr_storage addr{};
  int len = sizeof addr;
  if (uv_tcp_getsockname(&s.listener, reinterpret_cast<sockaddr *>(&addr), &len) != 0) {
    return s.config.port;
  }
  if (addr.ss_family == AF_INET6) {
    return ntohs(reinterpret_cast<const sockaddr_in6 *>(&addr)->sin6_port);
  }
  return ntohs(reinterpret_cast<const sockaddr_in *>(&addr)->sin_port);
}

const HttpListenerConfig &HttpServer::config() const { return impl_->config; }

int HttpServer::add_route(std::string_view method, std::string_view path, bool prefix,
                          HttpHandler handler) {
  if (method.empty() || path.empty() || path.front() != '/' || !handler) return -EINVAL;
  auto &routes = prefix ? impl_->prefix_routes : impl_->exact_routes;
  for (const auto &r : routes) {
    if (r.method == method && r.path == path) return -EEXIST;
  }
  const std::string *label = &*impl_->route_labels.emplace(path).first;
  routes.push_back({std::string(method), std::string(path), std::move(handler), label});
  if (prefix) {
    std::stable_sort(routes.begin(), routes.end(),
                     [](const auto &a, const auto &b) { return a.path.size() > b.path.size(); });
  }
  return 0;
}

void HttpServer::respond(HttpExchange *ex, int status, std::span<const HttpHeader> headers,
                         std::string_view body) {
  impl_->respond(ex, status, headers, body);
}

void HttpServer::stream_begin(HttpExchange *ex, int status, std::span<const HttpHeader> headers) {
  if (ex == nullptr || ex->state != HttpExchange::State::kPending) {
    spdlog::error("listener '{}': stream_begin() on an exchange that is not awaiting an answer",
                  impl_->config.name);
    return;
  }
  impl_->answered(ex);
  impl_->count(ex->route, status);
  ex->conn->stream_begin(ex, status, headers);
}

void HttpServer::stream_write(HttpExchange *ex, std::string_view data) {
  if (ex == nullptr || ex->state != HttpExchange::State::kStreaming) {
    spdlog::error("listener '{}': stream_write() without stream_begin()", impl_->config.name);
    return;
  }
  ex->conn->stream_write(ex, data);
}

void HttpServer::stream_end(HttpExchange *ex) {
  if (ex == nullptr || ex->state != HttpExchange::State::kStreaming) {
    spdlog::error("listener '{}': stream_end() without stream_begin()", impl_->config.name);
    return;
  }
  --impl_->in_flight;
  ex->conn->stream_end(ex);  // may free ex and its connection
}

void HttpServer::set_abort_callback(HttpExchange *ex, std::function<void()> on_abort) {
  if (ex == nullptr || ex->state == HttpExchange::State::kFree ||
      ex->state == HttpExchange::State::kDone) {
    return;
  }
  if (ex->aborted) {
    // Already gone: tell the caller now rather than never.
    if (on_abort) on_abort();
    return;
  }
  ex->on_abort = std::move(on_abort);
}

bool HttpServer::aborted(const HttpExchange *ex) const { return ex != nullptr && ex->aborted; }

void HttpServer::stop_accepting() {
  impl_->close_listener();
  impl_->for_each_connection([](HttpConnection &c) { c.drain(); });
}

size_t HttpServer::in_flight() const { return impl_->in_flight; }

size_t HttpServer::connection_count() const { return impl_->serving_connections; }

void HttpServer::close(std::function<void()> done) {
  Impl &s = *impl_;
  s.on_closed = std::move(done);
  s.tls_unwatch();
  s.close_listener();
  s.for_each_connection([](HttpConnection &c) { c.close(); });
  s.maybe_done();  // when nothing was open; may destroy the server
}

}  // namespace cg
