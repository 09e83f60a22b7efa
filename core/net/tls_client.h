// A TLS client session over memory BIOs (OpenSSL): the caller moves bytes
// between the socket and the session, so TLS runs on the libuv loop with
// no blocking call and no socket of OpenSSL's own. The WebSocket client is
// its first user; the listeners' TLS (server side) will share the context
// helpers.
//
// THREAD: a TlsSession is not thread-safe. tls_client_context may run on
// any thread (the WebSocket client builds it on the thread pool, since
// reading a CA bundle is disk I/O).
#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <string>
#include <string_view>

namespace cg {

struct SslCtxFree {
  void operator()(SSL_CTX *ctx) const { SSL_CTX_free(ctx); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxFree>;

// The oldest OpenSSL error on this thread's queue as text (the queue is
// cleared), or `fallback` when there is none. Shared by both sides.
std::string tls_error_text(std::string_view fallback);

// A new session on `ctx` with memory BIOs for both directions (owned by
// the session; *in and *out point at them). Null with *error set.
SSL *tls_session_new(SSL_CTX *ctx, BIO **in, BIO **out, std::string *error);

// A client context: TLS 1.2 or newer, peers verified against `ca_file`, or
// the system's CA store when it is empty. Null with *error set on failure.
SslCtxPtr tls_client_context(const std::string &ca_file, std::string *error);

class TlsSession {
 public:
  // `host` is sent as SNI (unless it is an IP address) and checked against
  // the certificate's names or addresses. `alpn` is an ALPN protocol to
  // offer ("http/1.1"), or empty.
  TlsSession(SSL_CTX *ctx, std::string_view host, std::string_view alpn);
  ~TlsSession();
  TlsSession(const TlsSession &) = delete;
  TlsSession &operator=(const TlsSession &) = delete;

  // Starts the handshake (the ClientHello goes to the output). Returns 0 or
  // -1 with error() set.
  int start();
  // Ciphertext from the peer. Decrypted application data is appended to
  // *plain. Returns 0 (more may be needed), or -1 with error() set, or 1
  // when the peer sent close_notify.
  int receive(std::string_view cipher, std::string *plain);
  // Application data to encrypt; call only once established().
  int send(std::string_view plain);
  // Moves the ciphertext waiting to go to the peer into *out (appending).
  // Returns false when there is none.
  bool take_output(std::string *out);

  bool established() const { return established_; }
  const std::string &error() const { return error_; }

 private:
  int drive_handshake();
  int fail(int ssl_ret, std::string_view what);

  SSL *ssl_ = nullptr;
  BIO *in_ = nullptr;   // network -> OpenSSL (owned by ssl_)
  BIO *out_ = nullptr;  // OpenSSL -> network (owned by ssl_)
  bool established_ = false;
  std::string error_;
};

}  // namespace cg
