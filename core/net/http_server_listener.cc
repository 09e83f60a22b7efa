// HttpServer's listener: accepting connections (and the read blocks they
// borrow), the access policy checked at accept and on each request, and
// closing the listening socket.
#include <spdlog/spdlog.h>

#include <memory>
#include <string>
#include <utility>

#include "base/metrics.h"
#include "net/http_server_impl.h"

namespace cg {
namespace {

constexpr size_t kMaxFreeBlocks = 64;  // 4 MiB of idle read blocks at most

}  // namespace

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

}  // namespace cg
