// The admin API's setup: construction, the route table, the probes, the
// compiled-in page, and the helpers the admin files share (admin_internal.h).
// The handlers are in admin_auth.cc, admin_logs.cc, admin_status.cc and admin_actions.cc.
#include "admin/admin.h"

#include <spdlog/spdlog.h>
#include <sys/random.h>

#include <array>
#include <cerrno>
#include <ctime>
#include <stdexcept>
#include <vector>

#include "admin/admin_assets.h"
#include "admin/admin_config.h"
#include "admin/admin_internal.h"
#include "base/log_ring.h"
#include "base/loop.h"
#include "router/conversations_port.h"

namespace cg {
namespace {

// Answers carry no secrets, but must not be cached, framed or sniffed.
constexpr std::array<HttpHeader, 5> kJsonHeaders = {{
    {"Content-Type", "application/json"},
    {"Cache-Control", "no-store"},
    {"X-Content-Type-Options", "nosniff"},
    {"X-Frame-Options", "DENY"},
    {"Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"},
}};

}  // namespace

void respond_json(HttpServer &server, HttpExchange *ex, int status, std::string_view body,
                  HttpHeader extra) {
  if (extra.name.empty()) {
    server.respond(ex, status, kJsonHeaders, body);
    return;
  }
  const std::array<HttpHeader, 6> headers = {
      {kJsonHeaders[0], kJsonHeaders[1], kJsonHeaders[2], kJsonHeaders[3], kJsonHeaders[4], extra}};
  server.respond(ex, status, headers, body);
}

// Session ids and CSRF tokens from the kernel's CSPRNG (getrandom).
std::string random_hex(size_t bytes) {
  std::vector<unsigned char> raw(bytes);
  size_t got = 0;
  while (got < bytes) {
    const ssize_t n = getrandom(raw.data() + got, bytes - got, 0);
    if (n < 0 && errno == EINTR) continue;
    // No randomness: no session can be made safely. Never expected on Linux.
    if (n <= 0) throw std::runtime_error("getrandom failed");
    got += static_cast<size_t>(n);
  }
  return to_hex(std::string_view(reinterpret_cast<const char *>(raw.data()), raw.size()));
}

std::string to_hex(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const char ch : bytes) {
    const auto c = static_cast<unsigned char>(ch);
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 0xF]);
  }
  return out;
}

// The value of `key` in a query string ("level=warn&lines=20"), or empty.
std::string_view query_value(std::string_view query, std::string_view key) {
  while (!query.empty()) {
    const size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    if (pair.size() > key.size() && pair.starts_with(key) && pair[key.size()] == '=') {
      return pair.substr(key.size() + 1);
    }
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return {};
}

AdminApi::AdminApi(const Config &config, Loop &loop, Metrics &metrics,
                   const std::vector<std::unique_ptr<PluginInstance>> &plugins,
                   const HttpServer &api, ConversationsPort &conversations, MessageSink &sends)
    : config_(config),
      loop_(loop),
      metrics_(metrics),
      plugins_(plugins),
      api_(api),
      started_ms_(loop.now_ms()),
      config_loaded_at_(static_cast<int64_t>(std::time(nullptr))),
      conversations_(conversations),
      sends_(sends),
      open_csrf_(random_hex(32)) {}

std::function<bool(HttpExchange *, const HttpRequest &)> AdminApi::guard(HttpServer &admin) {
  return [this, &admin](HttpExchange *ex, const HttpRequest &req) {
    return authorize(admin, ex, req, true);
  };
}

AdminApi::~AdminApi() {
  log_ring_watch({});
  end_streams();
}

int AdminApi::install_probes(HttpServer &server, bool healthz) {
  HttpServer *s = &server;
  if (healthz) {
    const int rc =
        server.add_route("GET", "/healthz", false, [s](HttpExchange *ex, const HttpRequest &) {
          respond_json(*s, ex, 200, R"({"status":"ok"})");
        });
    if (rc != 0) return rc;
  }
  return server.add_route("GET", "/readyz", false,
                          [this, s](HttpExchange *ex, const HttpRequest &) { readyz(*s, ex); });
}

int AdminApi::install(HttpServer &admin) {
  admin_server_ = &admin;
  HttpServer &s = admin;
  if (const int rc = install_probes(admin, true); rc != 0) return rc;
  history_ =
      std::make_unique<AdminHistory>(loop_, metrics_, config_.admin.chart_interval_seconds * 1000);
  // A GET of the admin API: authorized, then answered with body(req).
  auto guarded = [this, &s](auto body) -> HttpHandler {
    return [this, &s, body](HttpExchange *ex, const HttpRequest &req) {
      if (authorize(s, ex, req)) respond_json(s, ex, 200, body(req));
    };
  };
  // Handlers that authorize (or not) for themselves.
  auto own = [this, &s](void (AdminApi::*fn)(HttpServer &, HttpExchange *,
                                             const HttpRequest &)) -> HttpHandler {
    return [this, &s, fn](HttpExchange *ex, const HttpRequest &req) { (this->*fn)(s, ex, req); };
  };
  struct Route {
    const char *method, *path;
    bool prefix;
    HttpHandler handler;
  };
  const Route routes[] = {
      {"GET", "/metrics", false,
       [this, &s](HttpExchange *ex, const HttpRequest &) { metrics(s, ex); }},
      {"GET", "/admin/api/status", false,
       guarded([this](const HttpRequest &) { return status(); })},
      {"GET", "/admin/api/plugins", false,
       guarded([this](const HttpRequest &) { return plugins(); })},
      {"GET", "/admin/api/history", false,
       guarded([this](const HttpRequest &) { return history_->to_json(); })},
      {"GET", "/admin/api/metrics", false,
       guarded([this](const HttpRequest &) { return history_->summary_json(); })},
      {"GET", "/admin/api/config", false,
       guarded([this](const HttpRequest &) { return admin_config_json(config_, plugins_); })},
      {"GET", "/admin/api/conversations", false, guarded([this](const HttpRequest &req) {
         return conversations_.recent_json(query_value(req.query(), "channel"));
       })},
      {"POST", "/admin/api/conversations/reset", false, own(&AdminApi::reset_conversation)},
      {"POST", "/admin/api/reload", false, own(&AdminApi::reload)},
      {"POST", "/admin/api/send", false, own(&AdminApi::send)},
      {"GET", "/admin/api/logs", false, own(&AdminApi::logs)},
      {"GET", "/admin/api/logs/stream", false, own(&AdminApi::logs_stream)},
      {"GET", "/admin/api/session", false, own(&AdminApi::session)},
      {"POST", "/admin/api/login", false, own(&AdminApi::login)},
      {"POST", "/admin/api/logout", false, own(&AdminApi::logout)},
      {"GET", "/admin/", true, own(&AdminApi::asset)},
      // Browsers ask for it on every visit; there is none.
      {"GET", "/favicon.ico", false,
       [&s](HttpExchange *ex, const HttpRequest &) { s.respond(ex, 204, {}, {}); }},
      {"GET", "/", false,
       [&s](HttpExchange *ex, const HttpRequest &) {
         const std::array<HttpHeader, 1> location = {{{"Location", "/admin/"}}};
         s.respond(ex, 302, location, {});
       }},
  };
  for (const Route &r : routes) {
    if (const int rc = admin.add_route(r.method, r.path, r.prefix, r.handler); rc != 0) return rc;
  }
  // New log lines wake the loop once (the watcher runs on the logger's thread).
  Loop *loop = &loop_;
  log_ring_watch([loop, this] {
    loop->post([](void *arg) { static_cast<AdminApi *>(arg)->push_log_lines(); }, this);
  });
  return 0;
}

void AdminApi::warn_if_open(int bound_port) const {
  if (config_.admin.token.empty()) {
    spdlog::warn(
        "listener 'admin': no admin.token is set, so anyone who can reach {}:{} may use the admin "
        "API; set admin.token (from the environment) before exposing it",
        config_.admin_listener.address, bound_port);
  }
}

void AdminApi::asset(HttpServer &server, HttpExchange *ex, const HttpRequest &req) {
  std::string_view name = req.path().substr(std::string_view("/admin/").size());
  if (name.empty()) name = "index.html";
  for (const AdminAsset &a : admin_assets()) {
    if (name != a.name) continue;
    const char *type = name.ends_with(".html")  ? "text/html; charset=utf-8"
                       : name.ends_with(".css") ? "text/css; charset=utf-8"
                                                : "text/javascript; charset=utf-8";
    static constexpr std::string_view kCsp =
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";
    const std::array<HttpHeader, 5> headers = {{{"Content-Type", type},
                                                {"Cache-Control", "no-cache"},
                                                {"X-Content-Type-Options", "nosniff"},
                                                {"X-Frame-Options", "DENY"},
                                                {"Content-Security-Policy", kCsp}}};
    server.respond(ex, 200, headers, a.data());
    return;
  }
  respond_json(server, ex, 404, R"({"error":"not found"})");
}

}  // namespace cg
