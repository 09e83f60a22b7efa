#include "admin.h"

#include <chatgate/chatgate.h>
#include <dirent.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <spdlog/spdlog.h>
#include <uv.h>

#include <array>

#include "json.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "plugin_instance.h"

namespace cg {
namespace {

constexpr size_t kMaxTrackedAddresses = 4096;

std::string sha256(std::string_view data) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md.data(), &len, EVP_sha256(), nullptr);
  return {reinterpret_cast<const char *>(md.data()), len};
}

const char *kind_name(uint32_t kind) {
  switch (kind) {
    case CG_KIND_CHANNEL:
      return "channel";
    case CG_KIND_MODEL:
      return "model";
    case CG_KIND_CACHE:
      return "cache";
    default:
      return "unknown";
  }
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

void respond_json(HttpServer &server, HttpExchange *ex, int status, std::string_view body) {
  server.respond(ex, status, kJsonHeaders, body);
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

}  // namespace

AdminApi::AdminApi(const Config &config, Loop &loop, Metrics &metrics,
                   const std::vector<std::unique_ptr<PluginInstance>> &plugins,
                   const HttpServer &api)
    : config_(config),
      loop_(loop),
      metrics_(metrics),
      plugins_(plugins),
      api_(api),
      started_ms_(loop.now_ms()) {
  if (!config_.admin.token.empty()) token_digest_ = sha256(config_.admin.token);
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
  admin_ = &admin;
  HttpServer *s = &admin;
  if (const int rc = install_probes(admin, true); rc != 0) return rc;
  int rc = admin.add_route("GET", "/metrics", false,
                           [this, s](HttpExchange *ex, const HttpRequest &) { metrics(*s, ex); });
  if (rc == 0) {
    rc = admin.add_route("GET", "/admin/api/status", false,
                         [this, s](HttpExchange *ex, const HttpRequest &req) {
                           if (authorize(*s, ex, req)) status(*s, ex);
                         });
  }
  if (rc == 0) {
    rc = admin.add_route("GET", "/admin/api/plugins", false,
                         [this, s](HttpExchange *ex, const HttpRequest &req) {
                           if (authorize(*s, ex, req)) plugins(*s, ex);
                         });
  }
  if (rc == 0) {
    history_ = std::make_unique<AdminHistory>(loop_, metrics_,
                                              config_.admin.chart_interval_seconds * 1000);
    rc = admin.add_route("GET", "/admin/api/history", false,
                         [this, s](HttpExchange *ex, const HttpRequest &req) {
                           if (authorize(*s, ex, req))
                             respond_json(*s, ex, 200, history_->to_json());
                         });
  }
  if (rc == 0 && token_digest_.empty()) {
    spdlog::warn(
        "listener 'admin': no admin.token is set, so anyone who can reach {}:{} may use the admin "
        "API; set admin.token (from the environment) before exposing it",
        config_.admin_listener.address, config_.admin_listener.port);
  }
  return rc;
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
    const std::string labels =
        "plugin_instance=" + json_quote(p->name()) + ",kind=\"" + kind_name(p->kind()) + "\"";
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

bool AdminApi::authorize(HttpServer &server, HttpExchange *ex, const HttpRequest &req) {
  if (token_digest_.empty()) return true;
  const uint64_t now = loop_.now_ms();
  const std::string addr(req.remote_addr());
  auto it = failures_.find(addr);
  if (it != failures_.end() && it->second.locked_until_ms > now) {
    const std::string retry = std::to_string((it->second.locked_until_ms - now + 999) / 1000);
    const std::array<HttpHeader, 6> headers = {{kJsonHeaders[0],
                                                kJsonHeaders[1],
                                                kJsonHeaders[2],
                                                kJsonHeaders[3],
                                                kJsonHeaders[4],
                                                {"Retry-After", retry}}};
    server.respond(ex, 429, headers, R"({"error":"too many failed logins; try again later"})");
    return false;
  }
  std::string_view auth = req.header("Authorization");
  constexpr std::string_view kBearer = "Bearer ";
  const bool has_bearer = auth.size() > kBearer.size() && auth.substr(0, kBearer.size()) == kBearer;
  // Digests of equal length, compared in constant time: neither the token's
  // length nor its prefix leaks through timing.
  if (has_bearer) {
    const std::string presented = sha256(auth.substr(kBearer.size()));
    if (CRYPTO_memcmp(presented.data(), token_digest_.data(), token_digest_.size()) == 0) {
      if (it != failures_.end()) failures_.erase(it);
      return true;
    }
  }
  if (!has_bearer && auth.empty()) {
    // No credentials at all is not an attack on the token: no count.
    const std::array<HttpHeader, 6> headers = {{kJsonHeaders[0],
                                                kJsonHeaders[1],
                                                kJsonHeaders[2],
                                                kJsonHeaders[3],
                                                kJsonHeaders[4],
                                                {"WWW-Authenticate", "Bearer"}}};
    server.respond(ex, 401, headers, R"({"error":"admin token required"})");
    return false;
  }
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
  const std::array<HttpHeader, 6> headers = {{kJsonHeaders[0],
                                              kJsonHeaders[1],
                                              kJsonHeaders[2],
                                              kJsonHeaders[3],
                                              kJsonHeaders[4],
                                              {"WWW-Authenticate", "Bearer"}}};
  server.respond(ex, 401, headers, R"({"error":"wrong admin token"})");
  return false;
}

void AdminApi::status(HttpServer &server, HttpExchange *ex) {
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
  if (admin_ != nullptr) body += "," + listener(config_.admin_listener, admin_->port());
  body += "],\"instances\":" + std::to_string(plugins_.size()) +
          ",\"running\":" + std::to_string(running) +
          ",\"inFlight\":" + std::to_string(api_.in_flight()) + "}";
  respond_json(server, ex, 200, body);
}

void AdminApi::plugins(HttpServer &server, HttpExchange *ex) {
  std::string body = "{\"plugins\":[";
  bool first = true;
  for (const auto &p : plugins_) {
    const cg_plugin_t *d = p->desc();
    if (!first) body += ",";
    first = false;
    body += "{\"instance\":" + json_quote(p->name()) + ",\"plugin\":" + json_quote(d->name) +
            ",\"kind\":\"" + kind_name(d->kind) + "\",\"version\":" + json_quote(d->version) +
            ",\"abi\":\"" + std::to_string(d->abi_major) + "." + std::to_string(d->abi_minor) +
            "\",\"state\":\"" + state_name(p->health()) +
            "\",\"reason\":" + json_quote(p->health_reason()) + "}";
  }
  body += "]}";
  respond_json(server, ex, 200, body);
}

}  // namespace cg
