// The net library's option structs: what a listener, the HTTP client and
// the TLS server take. Plain values with no third-party types, so the config
// layer can fill them (and compare them on reload) without pulling in
// libuv, OpenSSL or curl.
//
// THREAD: plain values.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace cg {

struct RateLimit {
  double per_second = 0;  // 0: no limit
  uint32_t burst = 0;     // bucket size; 0 takes max(1, per_second)
  bool operator==(const RateLimit &) const = default;
};

struct TlsServerConfig {
  std::string cert_file;            // PEM: the certificate, then any intermediates
  std::string key_file;             // PEM private key (unencrypted)
  std::string min_version = "1.2";  // "1.2" or "1.3"
  // TLS 1.2 cipher list (OpenSSL syntax); TLS 1.3 suites are OpenSSL's
  // defaults, all of them modern AEADs.
  std::string ciphers =
      "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
      "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
      "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
  uint64_t reload_check_ms = 5000;  // how often the files are checked for change; 0: SIGHUP only
  bool enabled() const { return !cert_file.empty(); }
  bool operator==(const TlsServerConfig &) const = default;
};

struct HttpLimits {
  size_t max_header_bytes = size_t{16} * 1024;  // request line + headers; over: 431
  size_t max_body_bytes = size_t{1024} * 1024;  // decoded body; over: 413
  uint64_t header_timeout_ms = 10000;           // first byte to end of headers; over: 408
  uint64_t body_timeout_ms = 30000;             // end of headers to end of body; over: 408
  uint64_t idle_timeout_ms = 60000;  // keep-alive connection with nothing pending: closed
  size_t max_connections = 10000;    // beyond: 503 and close
  size_t max_pipeline = 16;          // requests queued on one connection before reads pause
  uint64_t send_timeout_ms = 30000;  // a write that makes no progress this long: closed
  // Answer bytes waiting for a slow reader: above the soft mark no more
  // requests are read; above the hard mark (a stream to a client that does
  // not read) the connection is closed.
  size_t max_buffered_bytes = size_t{1024} * 1024;
  bool operator==(const HttpLimits &) const = default;
};

struct CorsPolicy {
  std::vector<std::string> allowed_origins;  // exact origins, or "*"; empty = CORS off
  std::vector<std::string> allowed_methods{"GET", "POST", "OPTIONS"};
  std::vector<std::string> allowed_headers{"Content-Type", "Authorization"};
  int max_age_seconds = 600;
  bool operator==(const CorsPolicy &) const = default;
};

// An allow list for the paths that start with `path` (the longest match
// applies), on top of the listener's own.
struct RouteAccess {
  std::string path;
  std::vector<std::string> allow_from;  // CIDR blocks, checked by the config loader
  bool operator==(const RouteAccess &) const = default;
};

// Who may talk to a listener (docs/security.md). Addresses are the client's:
// the peer, or from X-Forwarded-For when the peer is a trusted proxy.
struct AccessPolicy {
  std::vector<std::string> allow_from;       // empty: every address
  std::vector<std::string> trusted_proxies;  // whose X-Forwarded-For is believed
  std::vector<RouteAccess> routes;
  size_t max_connections_per_ip = 0;  // by peer address; 0: no cap
  RateLimit requests_per_ip;          // by client address; 0: no limit
  bool operator==(const AccessPolicy &) const = default;
};

struct HttpListenerConfig {
  std::string name = "api";  // for log lines: "listener 'api'"
  std::string address = "127.0.0.1";
  int port = 8080;
  HttpLimits limits;
  CorsPolicy cors;
  AccessPolicy access;
  TlsServerConfig tls;  // off unless certFile is set
  bool operator==(const HttpListenerConfig &) const = default;
};

struct HttpClientConfig {
  std::string ca_file;                   // empty: the system's CA store
  uint64_t timeout_ms = 30000;           // a request's default whole-exchange limit
  uint64_t connect_timeout_ms = 10000;   // default DNS + TCP + TLS limit
  size_t max_response_bytes = 8u << 20;  // collected or streamed body; beyond: CG_ETOOBIG
  bool operator==(const HttpClientConfig &) const = default;
};

}  // namespace cg
