// HttpServer's lifecycle: the server and its Impl, listen, the graceful
// stop. Accepting and the access policy are in http_server_listener.cc, the
// certificate and its reloads in http_server_tls.cc, routes, CORS and the
// answer API in http_server_routing.cc. Per-connection work (parsing,
// ordering, timeouts) is in http_connection.cc.
#include "net/http_server.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

#include "net/http_server_impl.h"

namespace cg {
namespace {

constexpr int kBacklog = 511;
// listen() on an inherited socket sets its queue again: as long as the
// socket unit's (Backlog=4096) or a handover's, so connections that wait
// while one process gives way to the next keep their room. The kernel caps
// it at net.core.somaxconn.
constexpr int kInheritedBacklog = 4096;

std::string join(const std::vector<std::string> &items) {
  std::string out;
  for (const std::string &item : items) {
    if (!out.empty()) out.append(", ");
    out.append(item);
  }
  return out;
}

}  // namespace

HttpServer::Impl::Impl(uv_loop_t *l, HttpListenerConfig c)
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

int HttpServer::listen(int inherited_fd, bool defer_accept) {
  Impl &s = *impl_;
  // An inherited socket is ours from the call on, whatever the outcome.
  auto refuse = [inherited_fd](int rc) {
    if (inherited_fd >= 0) ::close(inherited_fd);
    return rc;
  };
  if (s.listen_state != Impl::ListenState::kNone) return refuse(UV_EALREADY);
  if (s.config.tls.enabled() && !s.tls_ctx) {
    spdlog::error("listener '{}': TLS configured but not loaded (load_tls)", s.config.name);
    return refuse(UV_EINVAL);
  }
  sockaddr_storage addr{};
  int rc = 0;
  if (inherited_fd < 0) {
    rc = uv_ip4_addr(s.config.address.c_str(), s.config.port,
                     reinterpret_cast<sockaddr_in *>(&addr));
    if (rc < 0) {
      rc = uv_ip6_addr(s.config.address.c_str(), s.config.port,
                       reinterpret_cast<sockaddr_in6 *>(&addr));
    }
    if (rc < 0) return rc;
  }
  rc = uv_tcp_init(s.loop, &s.listener);
  if (rc < 0) return refuse(rc);
  s.listen_state = Impl::ListenState::kListening;
  // An inherited socket is already bound (and listening: listen() again
  // only sets the backlog); the connections waiting in its queue are ours.
  rc = inherited_fd >= 0 ? uv_tcp_open(&s.listener, inherited_fd)
                         : uv_tcp_bind(&s.listener, reinterpret_cast<const sockaddr *>(&addr), 0);
  s.backlog = inherited_fd >= 0 ? kInheritedBacklog : kBacklog;
  // Only an inherited socket can wait: it listens already, so connections
  // queue (and its other holder serves them). A socket bound here listens
  // and accepts at once: nobody else serves its address.
  s.accept_deferred = defer_accept && inherited_fd >= 0;
  if (rc == 0 && !s.accept_deferred) {
    rc = uv_listen(reinterpret_cast<uv_stream_t *>(&s.listener), s.backlog, Impl::on_connection);
  }
  if (rc < 0) {
    s.close_listener();
    return rc;
  }
  s.tls_watch();
  spdlog::info("listener '{}': listening on {}://{}:{}{}", s.config.name,
               s.config.tls.enabled() ? "https" : "http", s.config.address, port(),
               inherited_fd >= 0 ? " (inherited socket)" : "");
  return 0;
}

int HttpServer::accept_start() {
  Impl &s = *impl_;
  if (!s.accept_deferred || s.listen_state != Impl::ListenState::kListening) return 0;
  s.accept_deferred = false;
  return uv_listen(reinterpret_cast<uv_stream_t *>(&s.listener), s.backlog, Impl::on_connection);
}

int HttpServer::listen_fd() const {
  const Impl &s = *impl_;
  if (s.listen_state != Impl::ListenState::kListening) return -1;
  uv_os_fd_t fd = -1;
  if (uv_fileno(reinterpret_cast<const uv_handle_t *>(&s.listener), &fd) != 0) return -1;
  return fd;
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
