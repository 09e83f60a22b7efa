// The text side of the WebSocket client (ws_client.h), with no I/O: ws://
// and wss:// URLs, the upgrade handshake's key and accept values, header
// checks, and the proxy settings read from the environment. Internal to
// core/net.
//
// THREAD: any (pure functions; the environment is read, never written).
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

#include "net/ws_client.h"

namespace cg::ws_internal {

// ASCII case-insensitive equality.
bool iequals(std::string_view a, std::string_view b);
// True when the comma-separated list `value` holds `token` (any case).
bool has_token(std::string_view value, std::string_view token);
std::string base64(const unsigned char *data, size_t n);
// Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 4.2.2).
std::string accept_for(std::string_view key);
// True when `s` cannot go into a header line (CR, LF or NUL).
bool bad_header_text(std::string_view s);

struct ParsedUrl {
  bool tls = false;
  std::string host;  // without brackets
  uint16_t port = 0;
  std::string host_header;  // as sent in Host:
  std::string target;       // path and query
};

// ws://host[:port][/path][?query]; no user info. Returns false when malformed.
bool parse_ws_url(std::string_view url, ParsedUrl *out);

// The first of `names` set in the environment, or empty.
std::string env_first(std::initializer_list<const char *> names);
// The proxy named by the first of `names` set; an unusable URL is logged
// (never the URL itself: it may hold a password) and ignored.
std::optional<WsProxy> proxy_from_env(std::initializer_list<const char *> names);

}  // namespace cg::ws_internal
