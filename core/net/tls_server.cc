#include "net/tls_server.h"

#include <openssl/err.h>
#include <openssl/pem.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace cg {
namespace {

// OpenSSL's own message for a missing file is "system library"; the
// operator wants the errno text, so the file is opened first to get it.
bool readable(const std::string &path, const char *key, std::string *error) {
  std::FILE *f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    *error = std::string("cannot read ") + key + " " + path + ": " + std::strerror(errno);
    return false;
  }
  char probe;
  const size_t n = std::fread(&probe, 1, 1, f);
  const bool failed = std::ferror(f) != 0;
  const int err = errno;
  std::fclose(f);
  if (failed || n == 0) {
    *error = std::string("cannot read ") + key + " " + path + ": " +
             (failed ? std::strerror(err) : "the file is empty");
    return false;
  }
  return true;
}

int select_alpn(SSL *, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                unsigned int inlen, void *) {
  static const unsigned char kHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  unsigned char *sel = nullptr;
  if (SSL_select_next_proto(&sel, outlen, kHttp11, sizeof kHttp11, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED) {
    return SSL_TLSEXT_ERR_NOACK;  // no ALPN answer; the client may still speak HTTP/1.1
  }
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}

}  // namespace

SslCtxPtr tls_server_context(const TlsServerConfig &config, std::string *error) {
  ERR_clear_error();
  if (!readable(config.cert_file, "certFile", error) ||
      !readable(config.key_file, "keyFile", error)) {
    return nullptr;
  }
  SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
  if (!ctx) {
    *error = "cannot create a TLS context: " + tls_error_text("unknown error");
    return nullptr;
  }
  SSL_CTX *c = ctx.get();
  SSL_CTX_set_min_proto_version(c, config.min_version == "1.3" ? TLS1_3_VERSION : TLS1_2_VERSION);
  // Renegotiation is an old DoS lever and nothing here needs it; compression
  // invites CRIME.
  SSL_CTX_set_options(
      c, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  // Idle keep-alive connections give their record buffers back.
  SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS);
  if (SSL_CTX_set_cipher_list(c, config.ciphers.c_str()) != 1) {
    *error = "ciphers: no usable cipher in '" + config.ciphers + "'";
    ERR_clear_error();
    return nullptr;
  }
  if (SSL_CTX_use_certificate_chain_file(c, config.cert_file.c_str()) != 1) {
    *error = "certFile " + config.cert_file +
             " holds no PEM certificate: " + tls_error_text("unknown error");
    return nullptr;
  }
  // Read apart from installing it, so an unreadable key and a key of
  // another certificate get errors of their own.
  EVP_PKEY *pkey = nullptr;
  if (BIO *bio = BIO_new_file(config.key_file.c_str(), "r"); bio != nullptr) {
    pkey = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
    BIO_free(bio);
  }
  if (pkey == nullptr) {
    *error = "keyFile " + config.key_file +
             " holds no usable PEM private key (an encrypted key is not supported): " +
             tls_error_text("unknown error");
    return nullptr;
  }
  const int used = SSL_CTX_use_PrivateKey(c, pkey);
  EVP_PKEY_free(pkey);
  if (used != 1 || SSL_CTX_check_private_key(c) != 1) {
    ERR_clear_error();
    *error = "keyFile " + config.key_file + " does not match certFile " + config.cert_file;
    return nullptr;
  }
  SSL_CTX_set_alpn_select_cb(c, select_alpn, nullptr);
  return ctx;
}

TlsServerSession::TlsServerSession(SSL_CTX *ctx) {
  ssl_ = tls_session_new(ctx, &in_, &out_, &error_);
  if (ssl_ != nullptr) SSL_set_accept_state(ssl_);
}

TlsServerSession::~TlsServerSession() {
  if (ssl_ != nullptr) SSL_free(ssl_);
}

void TlsServerSession::feed(std::string_view cipher) {
  if (ssl_ == nullptr || cipher.empty()) return;
  BIO_write(in_, cipher.data(), static_cast<int>(cipher.size()));
}

long TlsServerSession::read(char *out, size_t cap) {
  if (ssl_ == nullptr) return -1;
  ERR_clear_error();
  const int n = SSL_read(ssl_, out, static_cast<int>(std::min<size_t>(cap, 1 << 30)));
  if (n > 0) return n;
  const int err = SSL_get_error(ssl_, n);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return 0;
  if (err == SSL_ERROR_ZERO_RETURN) return -2;
  error_ = tls_error_text(err == SSL_ERROR_SYSCALL ? "connection broken" : "TLS error");
  return -1;
}

bool TlsServerSession::write(std::string_view plain) {
  if (ssl_ == nullptr) return false;
  while (!plain.empty()) {
    ERR_clear_error();
    const int n =
        SSL_write(ssl_, plain.data(), static_cast<int>(std::min<size_t>(plain.size(), 1 << 30)));
    if (n <= 0) {
      error_ = tls_error_text("TLS write failed");
      return false;
    }
    plain.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

void TlsServerSession::take_output(std::string *out) {
  if (out_ == nullptr) return;
  char *data = nullptr;
  const long n = BIO_get_mem_data(out_, &data);
  if (n <= 0) return;
  out->append(data, static_cast<size_t>(n));
  (void)BIO_reset(out_);
}

void TlsServerSession::shutdown() {
  if (ssl_ == nullptr || !established()) return;
  ERR_clear_error();
  (void)SSL_shutdown(ssl_);
  ERR_clear_error();
}

bool TlsServerSession::established() const {
  return ssl_ != nullptr && SSL_is_init_finished(ssl_) == 1;
}

}  // namespace cg
