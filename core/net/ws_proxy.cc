// The proxy tunnel of the WebSocket client: https_proxy / http_proxy /
// no_proxy as curl reads them, and the CONNECT answer of the proxy.
#include <spdlog/spdlog.h>

#include <cstdlib>

#include "net/ws_connection.h"
#include "net/ws_url.h"

namespace cg {

using namespace ws_internal;

std::optional<WsProxy> ws_proxy_parse(std::string_view url) {
  if (!url.starts_with("http://")) return std::nullopt;
  url.remove_prefix(7);
  url = url.substr(0, url.find('/'));
  WsProxy p;
  if (const size_t at = url.rfind('@'); at != std::string_view::npos) {
    const std::string_view userinfo = url.substr(0, at);
    p.authorization =
        base64(reinterpret_cast<const unsigned char *>(userinfo.data()), userinfo.size());
    url.remove_prefix(at + 1);
  }
  if (url.empty()) return std::nullopt;
  const size_t bracket = url.rfind(']');
  const bool has_port =
      url.find(':', bracket == std::string_view::npos ? 0 : bracket) != std::string_view::npos;
  ParsedUrl parsed;
  // The authority has the shape of a ws:// URL's.
  if (!parse_ws_url("ws://" + std::string(url), &parsed)) return std::nullopt;
  p.host = parsed.host;
  if (has_port) p.port = parsed.port;  // else curl's default, 1080
  return p;
}

bool ws_no_proxy_match(std::string_view no_proxy, std::string_view host) {
  while (!no_proxy.empty()) {
    const size_t comma = no_proxy.find(',');
    std::string_view entry = no_proxy.substr(0, comma);
    while (!entry.empty() && entry.front() == ' ') entry.remove_prefix(1);
    while (!entry.empty() && entry.back() == ' ') entry.remove_suffix(1);
    if (entry == "*") return true;
    if (!entry.empty() && entry.front() == '.') entry.remove_prefix(1);
    if (!entry.empty() &&
        (iequals(host, entry) ||
         (host.size() > entry.size() && iequals(host.substr(host.size() - entry.size()), entry) &&
          host[host.size() - entry.size() - 1] == '.'))) {
      return true;
    }
    if (comma == std::string_view::npos) break;
    no_proxy.remove_prefix(comma + 1);
  }
  return false;
}

std::string ws_internal::env_first(std::initializer_list<const char *> names) {
  for (const char *name : names) {
    if (const char *v = std::getenv(name); v != nullptr && *v != '\0') return v;
  }
  return {};
}

std::optional<WsProxy> ws_internal::proxy_from_env(std::initializer_list<const char *> names) {
  const std::string url = env_first(names);
  if (url.empty()) return std::nullopt;
  std::optional<WsProxy> p = ws_proxy_parse(url);
  if (!p) {
    // Never the URL itself: it may hold a password.
    spdlog::error("websocket: {} is not an http://host:port proxy URL; connecting directly",
                  *names.begin());
  }
  return p;
}

void WsClient::Conn::on_proxy_answer(std::string_view data) {
  const size_t head_len = collect_head(data);
  if (head_len == 0) return;
  if (head_len == std::string::npos) {
    end(CG_EIO, kWsAbnormal, "proxy answer larger than 16 KiB");
    return;
  }
  // "HTTP/1.1 200 Connection established": only the status matters.
  int status = 0;
  if (head.starts_with("HTTP/1.") && head.size() > 12) {
    status = std::atoi(head.c_str() + 9);
  }
  if (status != 200) {
    end(CG_EIO, kWsAbnormal,
        "proxy refused the tunnel: " +
            (status > 0 ? "HTTP " + std::to_string(status) : std::string("malformed answer")));
    return;
  }
  // A proxy sends nothing of the server's before the client speaks.
  head.clear();
  begin_session();
}

}  // namespace cg
