// The listeners section (listeners.api, listeners.admin): address, limits,
// CORS, TLS and the access policy, and the rate limit shape they share with
// router.rateLimits.
#include <arpa/inet.h>
#include <netinet/in.h>

#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "config/config_loader.h"
#include "net/ip_filter.h"

namespace cg::config_internal {
namespace {

void read_address(const Loader &l, const Entry &e, std::string &out) {
  std::string text = l.read_string(e);
  unsigned char buf[sizeof(struct in6_addr)];
  if (inet_pton(AF_INET, text.c_str(), buf) != 1 && inet_pton(AF_INET6, text.c_str(), buf) != 1) {
    l.fail(e.path, e.line, "expected an IPv4 or IPv6 address, got " + quote(text));
  }
  out = std::move(text);
}

void read_cors(const Loader &l, const Entry &e, CorsPolicy &out) {
  l.read_mapping(
      e.value, e.path, e.line,
      {
          {"allowedOrigins", [&](const Entry &v) { out.allowed_origins = l.read_string_list(v); }},
          {"allowedMethods", [&](const Entry &v) { out.allowed_methods = l.read_string_list(v); }},
          {"allowedHeaders", [&](const Entry &v) { out.allowed_headers = l.read_string_list(v); }},
          {"maxAgeSeconds",
           [&](const Entry &v) {
             // In range by the bound just checked.
             out.max_age_seconds =
                 static_cast<int>(l.read_int(v, 0, std::numeric_limits<int>::max()));
           }},
      });
}

std::vector<std::string> read_cidr_list(const Loader &l, const Entry &e) {
  std::vector<std::string> out = l.read_string_list(e);
  for (size_t i = 0; i < out.size(); ++i) {
    std::string error;
    if (!ip_block_parse(out[i], &error)) {
      const YAML::Node item = e.value[i];
      const int line = config_line(item);
      l.fail(e.path + "[" + std::to_string(i) + "]", line ? line : e.line,
             error + ", got " + quote(out[i]));
    }
  }
  return out;
}

}  // namespace

void read_rate_limit(const Loader &l, const Entry &e, RateLimit &out) {
  l.read_mapping(
      e.value, e.path, e.line,
      {
          {"perSecond",
           [&](const Entry &v) {
             const std::string text = l.read_string(v);
             const std::optional<double> d = config_parse_double(text);
             if (!d || *d < 0) {
               l.fail(v.path, v.line, "expected a number >= 0 (0: no limit), got " + quote(text));
             }
             out.per_second = *d;
           }},
          {"burst",
           [&](const Entry &v) { out.burst = static_cast<uint32_t>(l.read_int(v, 0, 1000000)); }},
      });
}

namespace {

void read_route_access(const Loader &l, const Entry &e, std::vector<RouteAccess> &out) {
  if (!e.value.IsSequence()) {
    l.fail(e.path, e.line,
           std::string("expected a list of {path, allowFrom}, got ") + node_kind(e.value));
  }
  for (size_t i = 0; i < e.value.size(); ++i) {
    const YAML::Node item = e.value[i];
    const std::string path = e.path + "[" + std::to_string(i) + "]";
    const int line = config_line(item) ? config_line(item) : e.line;
    RouteAccess rule;
    bool has_allow = false;
    l.read_mapping(item, path, line,
                   {
                       {"path", [&](const Entry &v) { rule.path = l.read_string(v); }},
                       {"allowFrom",
                        [&](const Entry &v) {
                          rule.allow_from = read_cidr_list(l, v);
                          has_allow = true;
                        }},
                   });
    if (!rule.path.starts_with('/')) {
      l.fail(path + ".path", line, "expected a path starting with '/' (a prefix)");
    }
    if (!has_allow) l.fail(path + ".allowFrom", line, "required key missing");
    out.push_back(std::move(rule));
  }
}

void read_tls(const Loader &l, const Entry &e, TlsServerConfig &out) {
  bool cert = false, key = false;
  l.read_mapping(e.value, e.path, e.line,
                 {
                     {"certFile",
                      [&](const Entry &v) {
                        out.cert_file = l.read_string(v);
                        cert = !out.cert_file.empty();
                      }},
                     {"keyFile",
                      [&](const Entry &v) {
                        out.key_file = l.read_string(v);
                        key = !out.key_file.empty();
                      }},
                     {"minVersion",
                      [&](const Entry &v) {
                        out.min_version = l.read_enum(v, {"1.2", "1.3"});
                      }},
                     {"ciphers", [&](const Entry &v) { out.ciphers = l.read_string(v); }},
                     {"reloadCheckMs",
                      [&](const Entry &v) { out.reload_check_ms = l.read_int(v, 0, 86400000); }},
                 });
  // Both or neither: an empty `certFile: ${TLS_CERT:-}` turns TLS off.
  if (cert != key) {
    l.fail(e.path + (cert ? ".keyFile" : ".certFile"), e.line,
           std::string("required with ") + (cert ? "certFile" : "keyFile"));
  }
  if (!cert) out = TlsServerConfig{};
}

// listeners.api and listeners.admin take the same keys; `extra` adds the
// admin's own (enabled).
void read_http_listener(const Loader &l, const Entry &e, HttpListenerConfig &out,
                        KeyTable extra = {}) {
  HttpLimits &lim = out.limits;
  // Binds a handler for a count or duration that must be at least 1.
  auto positive = [&l](auto &field) {
    return [&l, p = &field](const Entry &v) { *p = l.read_int(v, 1, kInt64Max); };
  };
  KeyTable keys = {
      {"address", [&](const Entry &v) { read_address(l, v, out.address); }},
      {"port", [&](const Entry &v) { out.port = static_cast<int>(l.read_int(v, 0, 65535)); }},
      {"maxConnections", positive(lim.max_connections)},
      {"maxHeaderBytes",
       [&](const Entry &v) { lim.max_header_bytes = l.read_int(v, 1024, kInt64Max); }},
      {"maxBodyBytes", positive(lim.max_body_bytes)},
      {"headerTimeoutMs", positive(lim.header_timeout_ms)},
      {"bodyTimeoutMs", positive(lim.body_timeout_ms)},
      {"idleTimeoutMs", positive(lim.idle_timeout_ms)},
      {"maxPipeline", positive(lim.max_pipeline)},
      {"sendTimeoutMs", positive(lim.send_timeout_ms)},
      {"maxBufferedBytes",
       [&](const Entry &v) { lim.max_buffered_bytes = l.read_int(v, 4096, kInt64Max); }},
      {"cors", [&](const Entry &v) { read_cors(l, v, out.cors); }},
      {"tls", [&](const Entry &v) { read_tls(l, v, out.tls); }},
      {"allowFrom", [&](const Entry &v) { out.access.allow_from = read_cidr_list(l, v); }},
      {"trustedProxies",
       [&](const Entry &v) { out.access.trusted_proxies = read_cidr_list(l, v); }},
      {"routes", [&](const Entry &v) { read_route_access(l, v, out.access.routes); }},
      {"maxConnectionsPerIp",
       [&](const Entry &v) { out.access.max_connections_per_ip = l.read_int(v, 0, kInt64Max); }},
      {"requestRatePerIp",
       [&](const Entry &v) { read_rate_limit(l, v, out.access.requests_per_ip); }},
  };
  for (auto &entry : extra) keys.push_back(std::move(entry));
  l.read_mapping(e.value, e.path, e.line, keys);
}

}  // namespace

void read_listeners(const Loader &l, const Entry &e, Config &cfg) {
  l.read_mapping(
      e.value, e.path, e.line,
      {
          {"api", [&](const Entry &v) { read_http_listener(l, v, cfg.api); }},
          {"admin",
           [&](const Entry &v) {
             if (const YAML::Node a = v.value.IsMap() ? v.value["address"] : YAML::Node();
                 a.IsDefined()) {
               cfg.admin_address_line = config_line(a);
             }
             read_http_listener(
                 l, v, cfg.admin_listener,
                 {{"enabled", [&](const Entry &x) { cfg.admin_enabled = l.read_bool(x); }}});
           }},
      });
}

}  // namespace cg::config_internal
