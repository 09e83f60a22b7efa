#include "net/tls_client.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <array>

namespace cg {
namespace {

bool is_ip_literal(const std::string &host) {
  std::array<unsigned char, 16> addr{};
  return inet_pton(AF_INET, host.c_str(), addr.data()) == 1 ||
         inet_pton(AF_INET6, host.c_str(), addr.data()) == 1;
}

}  // namespace

std::string tls_error_text(std::string_view fallback) {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return std::string(fallback);
  std::array<char, 256> buf{};
  ERR_error_string_n(e, buf.data(), buf.size());
  return buf.data();
}

SSL *tls_session_new(SSL_CTX *ctx, BIO **in, BIO **out, std::string *error) {
  SSL *ssl = SSL_new(ctx);
  if (ssl == nullptr) {
    *error = "cannot create a TLS session: " + tls_error_text("out of memory");
    return nullptr;
  }
  *in = BIO_new(BIO_s_mem());
  *out = BIO_new(BIO_s_mem());
  if (*in == nullptr || *out == nullptr) {
    BIO_free(*in);
    BIO_free(*out);
    SSL_free(ssl);
    *in = *out = nullptr;
    *error = "cannot create TLS buffers";
    return nullptr;
  }
  // An empty memory BIO reports "retry", not EOF, so a read waits for more.
  BIO_set_mem_eof_return(*in, -1);
  SSL_set_bio(ssl, *in, *out);
  return ssl;
}

SslCtxPtr tls_client_context(const std::string &ca_file, std::string *error) {
  ERR_clear_error();
  SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
  if (!ctx) {
    *error = "cannot create a TLS context: " + tls_error_text("unknown error");
    return nullptr;
  }
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  SSL_CTX_set_mode(ctx.get(), SSL_MODE_RELEASE_BUFFERS);
  const int ok = ca_file.empty()
                     ? SSL_CTX_set_default_verify_paths(ctx.get())
                     : SSL_CTX_load_verify_locations(ctx.get(), ca_file.c_str(), nullptr);
  if (ok != 1) {
    *error = (ca_file.empty() ? std::string("cannot load the system CA store")
                              : "cannot load CA file " + ca_file) +
             ": " + tls_error_text("unknown error");
    return nullptr;
  }
  return ctx;
}

TlsSession::TlsSession(SSL_CTX *ctx, std::string_view host, std::string_view alpn) {
  ssl_ = tls_session_new(ctx, &in_, &out_, &error_);
  if (ssl_ == nullptr) return;
  SSL_set_connect_state(ssl_);
  const std::string name(host);
  if (is_ip_literal(name)) {
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), name.c_str());
  } else {
    SSL_set_tlsext_host_name(ssl_, name.c_str());
    SSL_set1_host(ssl_, name.c_str());
  }
  if (!alpn.empty() && alpn.size() < 256) {
    std::string wire(1, static_cast<char>(alpn.size()));
    wire.append(alpn);
    SSL_set_alpn_protos(ssl_, reinterpret_cast<const unsigned char *>(wire.data()),
                        static_cast<unsigned>(wire.size()));
  }
}

TlsSession::~TlsSession() { SSL_free(ssl_); }

int TlsSession::fail(int ssl_ret, std::string_view what) {
  const int code = SSL_get_error(ssl_, ssl_ret);
  const long verify = SSL_get_verify_result(ssl_);
  if (verify != X509_V_OK) {
    ERR_clear_error();
    error_ =
        std::string(what) + ": certificate verify failed: " + X509_verify_cert_error_string(verify);
  } else if (code == SSL_ERROR_SYSCALL || code == SSL_ERROR_SSL) {
    error_ = std::string(what) + ": " + tls_error_text("connection broken");
  } else {
    ERR_clear_error();
    error_ = std::string(what) + ": TLS error " + std::to_string(code);
  }
  return -1;
}

int TlsSession::start() {
  if (ssl_ == nullptr) return -1;
  return drive_handshake();
}

int TlsSession::drive_handshake() {
  ERR_clear_error();
  const int r = SSL_do_handshake(ssl_);
  if (r == 1) {
    established_ = true;
    return 0;
  }
  const int code = SSL_get_error(ssl_, r);
  if (code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE) return 0;
  return fail(r, "TLS handshake");
}

int TlsSession::receive(std::string_view cipher, std::string *plain) {
  if (ssl_ == nullptr) return -1;
  while (!cipher.empty()) {
    const int n = BIO_write(in_, cipher.data(), static_cast<int>(cipher.size()));
    if (n <= 0) {
      error_ = "cannot buffer TLS input";
      return -1;
    }
    cipher.remove_prefix(static_cast<size_t>(n));
  }
  if (!established_) {
    if (drive_handshake() != 0) return -1;
    if (!established_) return 0;
  }
  std::array<char, 16384> buf{};
  for (;;) {
    ERR_clear_error();
    const int n = SSL_read(ssl_, buf.data(), static_cast<int>(buf.size()));
    if (n > 0) {
      plain->append(buf.data(), static_cast<size_t>(n));
      continue;
    }
    const int code = SSL_get_error(ssl_, n);
    if (code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE) return 0;
    if (code == SSL_ERROR_ZERO_RETURN) return 1;
    return fail(n, "TLS read");
  }
}

int TlsSession::send(std::string_view plain) {
  if (ssl_ == nullptr || !established_) return -1;
  while (!plain.empty()) {
    ERR_clear_error();
    const int n =
        SSL_write(ssl_, plain.data(), static_cast<int>(std::min<size_t>(plain.size(), 1 << 30)));
    if (n <= 0) return fail(n, "TLS write");
    plain.remove_prefix(static_cast<size_t>(n));
  }
  return 0;
}

bool TlsSession::take_output(std::string *out) {
  if (out_ == nullptr) return false;
  const size_t pending = BIO_ctrl_pending(out_);
  if (pending == 0) return false;
  const size_t start = out->size();
  out->resize(start + pending);
  const int n = BIO_read(out_, out->data() + start, static_cast<int>(pending));
  out->resize(start + (n > 0 ? static_cast<size_t>(n) : 0));
  return n > 0;
}

}  // namespace cg
