// TLS for the listeners (OpenSSL, server side): the context built from the
// operator's certificate and key files, and one session per connection over
// memory BIOs, so the handshake and records run on the libuv loop with no
// blocking call (the same design as the client side, tls_client.h).
//
// THREAD: a TlsServerSession is not thread-safe. tls_server_context may run
// on any thread (reloads build it on the thread pool: reading the files is
// disk I/O).
#pragma once

#include <openssl/ssl.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "net/options.h"
#include "net/tls_client.h"

namespace cg {

// A server context from `config`: the chain and key loaded and checked to
// match, TLS 1.2+ (or 1.3), the cipher list, no renegotiation, ALPN
// "http/1.1". Null with *error set ("cannot read certFile /x: No such file
// or directory", "keyFile /y does not match certFile /x").
SslCtxPtr tls_server_context(const TlsServerConfig &config, std::string *error);

class TlsServerSession {
 public:
  explicit TlsServerSession(SSL_CTX *ctx);
  ~TlsServerSession();
  TlsServerSession(const TlsServerSession &) = delete;
  TlsServerSession &operator=(const TlsServerSession &) = delete;

  bool ok() const { return ssl_ != nullptr; }
  // Ciphertext from the client. Call read() afterwards.
  void feed(std::string_view cipher);
  // Up to `cap` bytes of plaintext into `out`: the count (0 when more
  // ciphertext is needed), or -1 on a TLS error (error() says why), or -2
  // when the client sent close_notify.
  long read(char *out, size_t cap);
  // Encrypts `plain`; call once the handshake is done (established()).
  // Returns false on a TLS error.
  bool write(std::string_view plain);
  // Moves the ciphertext waiting to go out into *out (appending).
  void take_output(std::string *out);
  // Queues close_notify (take_output then has it).
  void shutdown();
  bool established() const;
  const std::string &error() const { return error_; }

 private:
  SSL *ssl_ = nullptr;
  BIO *in_ = nullptr;   // owned by ssl_
  BIO *out_ = nullptr;  // owned by ssl_
  std::string error_;
};

}  // namespace cg
