#include "admin/admin.h"

#include <chatgate/chatgate.h>
#include <dirent.h>
#include <simdjson.h>
#include <spdlog/spdlog.h>
#include <sys/random.h>
#include <uv.h>

#include <array>

#include "admin/admin_assets.h"
#include "admin/admin_config.h"
#include "base/json.h"
#include "base/log.h"
#include "base/log_ring.h"
#include "base/loop.h"
#include "base/metrics.h"
#include "host/message_sink.h"
#include "host/plugin_instance.h"
#include "host/plugin_loader.h"
#include "router/conversations_port.h"

namespace cg {
namespace {

constexpr size_t kMaxTrackedAddresses = 4096;
constexpr size_t kMaxSessions = 64;
constexpr uint64_t kSessionTtlMs = uint64_t{12} * 3600 * 1000;

// Compares a presented value with a secret in time that depends only on
// the secret's length (and the presented length, which the sender knows):
// no early exit reveals how much of a guess was right. Plain code rather
// than OpenSSL's CRYPTO_memcmp: initializing libcrypto costs every process
// some 2.5 MB of memory.
bool secret_equal(std::string_view presented, std::string_view secret) {
  volatile unsigned char diff = presented.size() == secret.size() ? 0 : 1;
  for (size_t i = 0; i < secret.size(); ++i) {
    const unsigned char p = i < presented.size() ? static_cast<unsigned char>(presented[i]) : 0;
    diff = diff | static_cast<unsigned char>(p ^ static_cast<unsigned char>(secret[i]));
  }
  return diff == 0 && !secret.empty();
}

const char *state_name(int state) {
  switch (state) {
    case CG_STATE_STARTING:
      return "starting";
    case CG_STATE_RUNNING:
      return "running";
    case CG_STATE_DEGRADED:
      return "degraded";
    default:
      return "failed";
  }
}

// Answers carry no secrets, but must not be cached, framed or sniffed.
constexpr std::array<HttpHeader, 5> kJsonHeaders = {{
    {"Content-Type", "application/json"},
    {"Cache-Control", "no-store"},
    {"X-Content-Type-Options", "nosniff"},
    {"X-Frame-Options", "DENY"},
    {"Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"},
}};

void respond_json(HttpServer &server, HttpExchange *ex, int status, std::string_view body,
                  HttpHeader extra = {}) {
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
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes * 2);
  for (unsigned char c : raw) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 0xF]);
  }
  return out;
}

size_t open_fds() {
  size_t n = 0;
  // procfs: answered from kernel memory, no disk I/O on the loop thread.
  if (DIR *d = opendir("/proc/self/fd")) {
    while (const dirent *e = readdir(d)) {
      if (e->d_name[0] != '.') ++n;
    }
    closedir(d);
    if (n > 0) --n;  // the descriptor opendir itself holds
  }
  return n;
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

// True when the request names this host by a loopback name or address. An
// admin listener without a token answers only such requests: a web page
// whose DNS name was rebound to 127.0.0.1 sends its own name in Host.
bool loopback_host(const HttpRequest &req) {
  std::string_view host = req.header("Host");
  if (host.starts_with("[")) {
    host = host.substr(0, host.find(']') + 1);
  } else {
    host = host.substr(0, host.find(':'));
  }
  return host == "localhost" || host == "[::1]" || host.starts_with("127.");
}

}  // namespace

AdminApi::AdminApi(const Config &config, Loop &loop, Metrics &metrics,
                   const std::vector<std::unique_ptr<PluginInstance>> &plugins,
                   const HttpServer &api, ConversationsPort &conversations, MessageSink &sends)
    : config_(config),
      loop_(loop),
      metrics_(metrics),
      plugins_(plugins),
      api_(api),
      started_ms_(loop.now_ms()),
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
  if (config_.admin.token.empty()) {
    spdlog::warn(
        "listener 'admin': no admin.token is set, so anyone who can reach {}:{} may use the admin "
        "API; set admin.token (from the environment) before exposing it",
        config_.admin_listener.address, config_.admin_listener.port);
  }
  return 0;
}

// Ready when no instance is starting or failed; a degraded instance (a
// cache that lost Redis, say) still serves, so it is listed but ready.
void AdminApi::readyz(HttpServer &server, HttpExchange *ex) {
  std::string not_ready, degraded;
  for (const auto &p : plugins_) {
    const int st = p->health();
    if (st == CG_STATE_RUNNING) continue;
    std::string item = "{\"instance\":" + json_quote(p->name()) + ",\"state\":\"" + state_name(st) +
                       "\",\"reason\":" + json_quote(p->health_reason()) + "}";
    std::string &list = st == CG_STATE_DEGRADED ? degraded : not_ready;
    if (!list.empty()) list += ",";
    list += item;
  }
  const bool ready = not_ready.empty();
  std::string body = std::string("{\"ready\":") + (ready ? "true" : "false") + ",\"notReady\":[" +
                     not_ready + "],\"degraded\":[" + degraded + "]}";
  respond_json(server, ex, ready ? 200 : 503, body);
}

void AdminApi::update_process_metrics() {
  uv_rusage_t ru{};
  if (uv_getrusage(&ru) == 0) {
    const double cpu = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                       static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    if (double *g = metrics_.counter("process_cpu_seconds_total", "",
                                     "user and system CPU time of the process")) {
      *g = cpu;
    }
  }
  size_t rss = 0;
  if (uv_resident_set_memory(&rss) == 0) {
    if (double *g = metrics_.gauge("process_resident_memory_bytes", "", "resident memory")) {
      *g = static_cast<double>(rss);
    }
  }
  if (double *g = metrics_.gauge("process_open_fds", "", "open file descriptors")) {
    *g = static_cast<double>(open_fds());
  }
  if (double *g = metrics_.gauge("chatgate_uptime_seconds", "", "seconds since start")) {
    *g = static_cast<double>(loop_.now_ms() - started_ms_) / 1000.0;
  }
  if (double *g =
          metrics_.gauge("chatgate_build_info",
                         "version=\"" CHATGATE_VERSION "\",abi=\"" + std::to_string(CG_ABI_MAJOR) +
                             "." + std::to_string(CG_ABI_MINOR) + "\"",
                         "always 1; the labels say which build runs")) {
    *g = 1;
  }
  for (const auto &p : plugins_) {
    const std::string labels = "plugin_instance=" + json_quote(p->name()) + ",kind=\"" +
                               std::string(plugin_kind_name(p->kind())) + "\"";
    if (double *g = metrics_.gauge("chatgate_plugin_state", labels,
                                   "0 starting, 1 running, 2 degraded, 3 failed")) {
      *g = p->health();
    }
  }
  static constexpr std::array<std::pair<int, const char *>, 2> kLevels = {
      {{spdlog::level::warn, "warn"}, {spdlog::level::err, "error"}}};
  for (const auto &[level, name] : kLevels) {
    if (double *c =
            metrics_.counter("chatgate_log_messages_total", std::string("level=\"") + name + "\"",
                             "log lines written at warn and error level")) {
      *c = static_cast<double>(log_lines_written(level));
    }
  }
  if (double *g = metrics_.gauge("chatgate_http_in_flight", "listener=\"api\"",
                                 "requests received and not yet answered")) {
    *g = static_cast<double>(api_.in_flight());
  }
  if (double *g = metrics_.gauge("chatgate_http_connections", "listener=\"api\"",
                                 "open client connections")) {
    *g = static_cast<double>(api_.connection_count());
  }
}

void AdminApi::metrics(HttpServer &server, HttpExchange *ex) {
  update_process_metrics();
  static constexpr std::array<HttpHeader, 2> kHeaders = {{
      {"Content-Type", "text/plain; version=0.0.4; charset=utf-8"},
      {"Cache-Control", "no-store"},
  }};
  server.respond(ex, 200, kHeaders, metrics_.render());
}

bool AdminApi::token_matches(std::string_view presented) const {
  return secret_equal(presented, config_.admin.token);
}

bool AdminApi::locked_out(HttpServer &server, HttpExchange *ex, const std::string &addr) {
  auto it = failures_.find(addr);
  const uint64_t now = loop_.now_ms();
  if (it == failures_.end() || it->second.locked_until_ms <= now) return false;
  const std::string retry = std::to_string((it->second.locked_until_ms - now + 999) / 1000);
  respond_json(server, ex, 429, R"({"error":"too many failed logins; try again later"})",
               {"Retry-After", retry});
  return true;
}

void AdminApi::count_failure(const std::string &addr) {
  const uint64_t now = loop_.now_ms();
  auto it = failures_.find(addr);
  if (it == failures_.end()) {
    if (failures_.size() >= kMaxTrackedAddresses) {
      std::erase_if(failures_, [now](const auto &kv) { return kv.second.locked_until_ms <= now; });
    }
    it = failures_.emplace(addr, Failures{}).first;
  }
  if (++it->second.count >= config_.admin.max_failures) {
    it->second.count = 0;
    it->second.locked_until_ms = now + config_.admin.lockout_seconds * 1000;
    spdlog::warn("listener 'admin': {} wrong admin tokens from {}; locked out for {} s",
                 config_.admin.max_failures, addr, config_.admin.lockout_seconds);
  }
}

AdminApi::Session *AdminApi::session_of(const HttpRequest &req) {
  std::string_view cookies = req.header("Cookie");
  constexpr std::string_view kName = "cg_admin=";
  while (!cookies.empty()) {
    const size_t semi = cookies.find(';');
    std::string_view c = cookies.substr(0, semi);
    while (!c.empty() && c.front() == ' ') c.remove_prefix(1);
    if (c.starts_with(kName)) {
      auto it = sessions_.find(std::string(c.substr(kName.size())));
      if (it == sessions_.end()) return nullptr;
      if (it->second.expires_ms <= loop_.now_ms()) {
        sessions_.erase(it);
        return nullptr;
      }
      return &it->second;
    }
    if (semi == std::string_view::npos) break;
    cookies.remove_prefix(semi + 1);
  }
  return nullptr;
}

bool AdminApi::authorize(HttpServer &server, HttpExchange *ex, const HttpRequest &req,
                         bool state_changing) {
  const std::string_view csrf = req.header("X-CSRF-Token");
  auto csrf_ok = [&csrf](const std::string &want) { return secret_equal(csrf, want); };
  if (config_.admin.token.empty()) {
    if (!loopback_host(req)) {
      respond_json(server, ex, 403,
                   R"({"error":"without admin.token only loopback host names are served"})");
      return false;
    }
    if (state_changing && !csrf_ok(open_csrf_)) {
      respond_json(server, ex, 403, R"({"error":"missing or wrong X-CSRF-Token"})");
      return false;
    }
    return true;
  }
  const std::string addr(req.remote_addr());
  if (locked_out(server, ex, addr)) return false;
  const std::string_view auth = req.header("Authorization");
  constexpr std::string_view kBearer = "Bearer ";
  if (auth.starts_with(kBearer) && auth.size() > kBearer.size()) {
    if (token_matches(auth.substr(kBearer.size()))) {
      failures_.erase(addr);
      return true;
    }
    count_failure(addr);
    respond_json(server, ex, 401, R"({"error":"wrong admin token"})",
                 {"WWW-Authenticate", "Bearer"});
    return false;
  }
  if (const Session *s = session_of(req)) {
    if (state_changing && !csrf_ok(s->csrf)) {
      respond_json(server, ex, 403, R"({"error":"missing or wrong X-CSRF-Token"})");
      return false;
    }
    return true;
  }
  // No credentials at all is not an attack on the token: no count.
  respond_json(server, ex, 401, R"({"error":"admin token required"})",
               {"WWW-Authenticate", "Bearer"});
  return false;
}

void AdminApi::session(HttpServer &server, HttpExchange *ex, const HttpRequest &req) {
  if (config_.admin.token.empty()) {
    if (authorize(server, ex, req)) {
      respond_json(server, ex, 200, "{\"auth\":\"none\",\"csrf\":\"" + open_csrf_ + "\"}");
    }
    return;
  }
  if (const Session *s = session_of(req)) {
    respond_json(server, ex, 200, "{\"auth\":\"token\",\"csrf\":\"" + s->csrf + "\"}");
    return;
  }
  respond_json(server, ex, 401, R"({"error":"not logged in"})");
}

void AdminApi::login(HttpServer &server, HttpExchange *ex, const HttpRequest &req) {
  if (config_.admin.token.empty()) {
    if (authorize(server, ex, req))
      respond_json(server, ex, 200, "{\"csrf\":\"" + open_csrf_ + "\"}");
    return;
  }
  const std::string addr(req.remote_addr());
  if (locked_out(server, ex, addr)) return;
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  std::string_view token;
  if (parser.parse(req.body().data(), req.body().size()).get(doc) != simdjson::SUCCESS ||
      doc["token"].get(token) != simdjson::SUCCESS) {
    respond_json(server, ex, 400, R"({"error":"expected {\"token\": \"...\"}"})");
    return;
  }
  if (!token_matches(token)) {
    count_failure(addr);
    respond_json(server, ex, 401, R"({"error":"wrong admin token"})");
    return;
  }
  failures_.erase(addr);
  const uint64_t now = loop_.now_ms();
  std::erase_if(sessions_, [now](const auto &kv) { return kv.second.expires_ms <= now; });
  if (sessions_.size() >= kMaxSessions) sessions_.erase(sessions_.begin());
  const std::string id = random_hex(32);
  Session &s = sessions_[id];
  s.csrf = random_hex(32);
  s.expires_ms = now + kSessionTtlMs;
  // Secure once the admin listener serves TLS: the browser then never sends
  // the session over plain HTTP.
  const std::string cookie = "cg_admin=" + id + "; Path=/; HttpOnly; SameSite=Strict; Max-Age=" +
                             std::to_string(kSessionTtlMs / 1000) +
                             (server.config().tls.enabled() ? "; Secure" : "");
  respond_json(server, ex, 200, "{\"csrf\":\"" + s.csrf + "\"}", {"Set-Cookie", cookie});
}

void AdminApi::logout(HttpServer &server, HttpExchange *ex, const HttpRequest &req) {
  if (!authorize(server, ex, req, true)) return;
  std::string_view cookies = req.header("Cookie");
  if (const size_t at = cookies.find("cg_admin="); at != std::string_view::npos) {
    std::string_view id = cookies.substr(at + 9);
    id = id.substr(0, id.find(';'));
    sessions_.erase(std::string(id));
  }
  respond_json(server, ex, 200, R"({"loggedOut":true})",
               {"Set-Cookie", "cg_admin=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"});
}

namespace {

int level_of(std::string_view query) {
  const std::string_view name = query_value(query, "level");
  if (name.empty()) return spdlog::level::trace;
  const auto level = spdlog::level::from_str(std::string(name));
  return level == spdlog::level::off ? -1 : static_cast<int>(level);
}

std::string line_json(const LogLine &l) {
  const auto name = spdlog::level::to_string_view(static_cast<spdlog::level::level_enum>(l.level));
  return "{\"seq\":" + std::to_string(l.seq) + ",\"t\":" + std::to_string(l.unix_ms) +
         ",\"level\":\"" + std::string(name.data(), name.size()) +
         "\",\"text\":" + json_quote(l.text) + "}";
}

// The ?level= of a log request, or -1 after answering 400 for a bad one.
int requested_level(HttpServer &server, HttpExchange *ex, const HttpRequest &req) {
  const int level = level_of(req.query());
  if (level < 0) {
    respond_json(server, ex, 400, R"({"error":"level must be trace, debug, info, warn or error"})");
  }
  return level;
}

}  // namespace

void AdminApi::logs(HttpServer &server, HttpExchange *ex, const HttpRequest &req) {
  if (!authorize(server, ex, req)) return;
  const int level = requested_level(server, ex, req);
  if (level < 0) return;
  size_t lines = 200;
  if (const std::string_view n = query_value(req.query(), "lines"); !n.empty()) {
    lines = std::min<size_t>(kLogRingLines, std::strtoul(std::string(n).c_str(), nullptr, 10));
  }
  std::string body = "{\"lines\":[";
  bool first = true;
  for (const LogLine &l : log_ring_read(0, level, lines)) {
    if (!first) body += ",";
    first = false;
    body += line_json(l);
  }
  body += "],\"last\":" + std::to_string(log_ring_last_seq()) + "}";
  respond_json(server, ex, 200, body);
}

void AdminApi::logs_stream(HttpServer &server, HttpExchange *ex, const HttpRequest &req) {
  if (!authorize(server, ex, req)) return;
  const int level = requested_level(server, ex, req);
  if (level < 0) return;
  static constexpr std::array<HttpHeader, 3> kSse = {{{"Content-Type", "text/event-stream"},
                                                      {"Cache-Control", "no-store"},
                                                      {"X-Content-Type-Options", "nosniff"}}};
  server.stream_begin(ex, 200, kSse);
  uint64_t last = 0;
  for (const LogLine &l : log_ring_read(0, level, 100)) {
    server.stream_write(ex, "data: " + line_json(l) + "\n\n");
    last = l.seq;
  }
  tails_.push_back({ex, level, std::max(last, log_ring_last_seq())});
  server.set_abort_callback(ex, [this, ex, &server] {
    auto it =
        std::find_if(tails_.begin(), tails_.end(), [ex](const Tail &t) { return t.ex == ex; });
    if (it == tails_.end()) return;
    tails_.erase(it);
    server.stream_end(ex);
  });
}

void AdminApi::reset_conversation(HttpServer &server, HttpExchange *ex, const HttpRequest &req) {
  if (!authorize(server, ex, req, true)) return;
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  std::string_view channel, conversation;
  if (parser.parse(req.body().data(), req.body().size()).get(doc) != simdjson::SUCCESS ||
      doc["channel"].get(channel) != simdjson::SUCCESS ||
      doc["conversation"].get(conversation) != simdjson::SUCCESS) {
    respond_json(server, ex, 400,
                 R"({"error":"expected {\"channel\": ..., \"conversation\": ...}"})");
    return;
  }
  // The exchange stays valid until answered; the callback answers it.
  const int rc =
      conversations_.reset_conversation(channel, conversation, [&server, ex](int status) {
        if (status == 0 || status == CG_ENOENT) {
          respond_json(server, ex, 200, R"({"reset":true})");
        } else {
          respond_json(
              server, ex, 503,
              "{\"error\":" + json_quote(std::string("cache: ") + cg_strerror(status)) + "}");
        }
      });
  if (rc != 0) {
    respond_json(server, ex, 503,
                 "{\"error\":" + json_quote(std::string("cache: ") + cg_strerror(rc)) + "}");
  }
}

void AdminApi::reload(HttpServer &server, HttpExchange *ex, const HttpRequest &req) {
  if (!authorize(server, ex, req, true)) return;
  if (!reload_) {
    respond_json(server, ex, 503, R"({"error":"reload is not available"})");
    return;
  }
  // The exchange stays valid until answered; the completion answers it.
  reload_([&server, ex](int status, const std::string &json) {
    respond_json(server, ex, status, json);
  });
}

void AdminApi::on_reload(bool token_changed) {
  if (!token_changed) return;
  sessions_.clear();
  failures_.clear();
  spdlog::info("listener 'admin': admin.token changed; every admin session ended");
}

namespace {

// One POST /admin/api/send waiting for its channel's done.
struct SendCall {
  HttpServer *server;
  HttpExchange *ex;
  std::string channel;
  double *ok;
  double *failed;
};

void send_done(void *arg, int status) {
  std::unique_ptr<SendCall> call(static_cast<SendCall *>(arg));
  if (status == 0) {
    if (call->ok != nullptr) *call->ok += 1;
    respond_json(*call->server, call->ex, 200,
                 "{\"sent\":true,\"channel\":" + json_quote(call->channel) + "}");
    return;
  }
  if (call->failed != nullptr) *call->failed += 1;
  const std::string why =
      "channel '" + call->channel + "' could not deliver: " + cg_strerror(status);
  spdlog::warn("admin send: {}", why);
  respond_json(*call->server, call->ex, 502, "{\"error\":" + json_quote(why) + "}");
}

}  // namespace

void AdminApi::send(HttpServer &server, HttpExchange *ex, const HttpRequest &req) {
  if (!authorize(server, ex, req, true)) return;
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  std::string_view channel, conversation, text, type = "direct", format = "text";
  auto optional = [&doc](const char *key, std::string_view *out) {
    const auto field = doc[key];
    return field.error() == simdjson::NO_SUCH_FIELD || field.get(*out) == simdjson::SUCCESS;
  };
  if (parser.parse(req.body().data(), req.body().size()).get(doc) != simdjson::SUCCESS ||
      doc["channel"].get(channel) != simdjson::SUCCESS ||
      doc["conversationId"].get(conversation) != simdjson::SUCCESS ||
      doc["text"].get(text) != simdjson::SUCCESS || !optional("conversationType", &type) ||
      !optional("format", &format)) {
    respond_json(
        server, ex, 400,
        R"x({"error":"expected {\"channel\": ..., \"conversationId\": ..., \"text\": ...} )x"
        R"x(and optionally \"conversationType\" (direct|group) and \"format\" (text|markdown)"})x");
    return;
  }
  auto bad = [&](std::string_view why) {
    respond_json(server, ex, 400, "{\"error\":" + json_quote(why) + "}");
  };
  if (type != "direct" && type != "group") return bad("conversationType must be direct or group");
  if (format != "text" && format != "markdown") return bad("format must be text or markdown");
  const std::string labels = "channel=" + json_quote(channel);
  auto call = std::make_unique<SendCall>(SendCall{
      &server, ex, std::string(channel),
      metrics_.counter("chatgate_admin_sends_total", labels + ",result=\"ok\"",
                       "messages sent from the admin API, by channel instance and result"),
      metrics_.counter("chatgate_admin_sends_total", labels + ",result=\"failed\"",
                       "messages sent from the admin API, by channel instance and result")});
  ProactiveMessage msg;
  msg.channel = channel;
  msg.conversation = conversation;
  msg.conversation_type = type == "group" ? CG_CONV_GROUP : CG_CONV_DIRECT;
  msg.format = format == "markdown" ? CG_REPLY_MARKDOWN : CG_REPLY_TEXT;
  msg.text = text;
  SendCall *raw = call.release();  // send_done owns it from here
  const ProactiveResult r = sends_.send_proactive(msg, send_done, raw);
  if (r.status == 0) return;
  if (r.refused) return send_done(raw, r.status);
  std::unique_ptr<SendCall> unused(raw);
  const int http = r.status == CG_ENOENT ? 404 : r.status == CG_EUNAVAIL ? 503 : 400;
  respond_json(server, ex, http, "{\"error\":" + json_quote(r.why) + "}");
}

void AdminApi::push_log_lines() {
  if (tails_.empty() || admin_server_ == nullptr) {
    log_ring_read(log_ring_last_seq(), 0, 0);  // marks the watcher as having read
    return;
  }
  uint64_t oldest = UINT64_MAX;
  for (const Tail &t : tails_) oldest = std::min(oldest, t.after_seq);
  const std::vector<LogLine> fresh = log_ring_read(oldest, spdlog::level::trace, kLogRingLines);
  for (Tail &t : tails_) {
    std::string out;
    for (const LogLine &l : fresh) {
      if (l.seq <= t.after_seq || l.level < t.min_level) continue;
      out += "data: " + line_json(l) + "\n\n";
    }
    if (!fresh.empty()) t.after_seq = std::max(t.after_seq, fresh.back().seq);
    if (!out.empty()) admin_server_->stream_write(t.ex, out);
  }
}

void AdminApi::end_streams() {
  std::vector<Tail> tails;
  tails.swap(tails_);
  for (const Tail &t : tails) admin_server_->stream_end(t.ex);
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

std::string AdminApi::status() const {
  auto listener = [](const HttpListenerConfig &c, int port) {
    return "{\"name\":" + json_quote(c.name) + ",\"address\":" + json_quote(c.address) +
           ",\"port\":" + std::to_string(port) + "}";
  };
  size_t running = 0;
  for (const auto &p : plugins_) running += p->health() == CG_STATE_RUNNING ? 1 : 0;
  std::string body =
      "{\"version\":\"" CHATGATE_VERSION "\",\"abi\":\"" + std::to_string(CG_ABI_MAJOR) + "." +
      std::to_string(CG_ABI_MINOR) +
      "\",\"uptimeSeconds\":" + std::to_string((loop_.now_ms() - started_ms_) / 1000) +
      ",\"listeners\":[" + listener(config_.api, api_.port());
  if (admin_server_ != nullptr)
    body += "," + listener(config_.admin_listener, admin_server_->port());
  body += "],\"instances\":" + std::to_string(plugins_.size()) +
          ",\"running\":" + std::to_string(running) +
          ",\"inFlight\":" + std::to_string(api_.in_flight()) + "}";
  return body;
}

std::string AdminApi::plugins() const {
  std::string body = "{\"plugins\":[";
  bool first = true;
  for (const auto &p : plugins_) {
    const cg_plugin_t *d = p->desc();
    if (!first) body += ",";
    first = false;
    body += "{\"instance\":" + json_quote(p->name()) + ",\"plugin\":" + json_quote(d->name) +
            ",\"kind\":\"" + std::string(plugin_kind_name(d->kind)) +
            "\",\"version\":" + json_quote(d->version) + ",\"abi\":\"" +
            std::to_string(d->abi_major) + "." + std::to_string(d->abi_minor) + "\",\"state\":\"" +
            state_name(p->health()) + "\",\"reason\":" + json_quote(p->health_reason()) + "}";
  }
  body += "]}";
  return body;
}

}  // namespace cg
