#include "feishu_crypto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <array>
#include <memory>
#include <vector>

namespace feishu {
namespace {

using Ctx = std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)>;

std::array<unsigned char, 32> key_of(std::string_view encrypt_key) {
  std::array<unsigned char, 32> key{};
  unsigned int n = 0;
  EVP_Digest(encrypt_key.data(), encrypt_key.size(), key.data(), &n, EVP_sha256(), nullptr);
  return key;
}

std::string hex(const unsigned char *p, size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(n * 2);
  for (size_t i = 0; i < n; ++i) {
    out += kHex[p[i] >> 4];
    out += kHex[p[i] & 0xF];
  }
  return out;
}

// Strict standard base64 (padding required, no whitespace).
bool base64_decode(std::string_view in, std::vector<unsigned char> *out) {
  if (in.empty() || in.size() % 4 != 0) return false;
  out->resize(in.size() / 4 * 3);
  const int n = EVP_DecodeBlock(out->data(), reinterpret_cast<const unsigned char *>(in.data()),
                                static_cast<int>(in.size()));
  if (n < 0) return false;
  size_t len = static_cast<size_t>(n);
  // EVP_DecodeBlock counts the padding as zero bytes.
  if (in.back() == '=') --len;
  if (in[in.size() - 2] == '=') --len;
  out->resize(len);
  return true;
}

}  // namespace

bool decrypt(std::string_view encrypt_key, std::string_view b64, std::string *plain) {
  std::vector<unsigned char> buf;
  if (!base64_decode(b64, &buf) || buf.size() < 32 || buf.size() % 16 != 0) return false;
  const auto key = key_of(encrypt_key);
  Ctx ctx(EVP_CIPHER_CTX_new(), EVP_CIPHER_CTX_free);
  if (!ctx ||
      EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_cbc(), nullptr, key.data(), buf.data()) != 1) {
    return false;
  }
  std::string out(buf.size() - 16, '\0');
  int n1 = 0, n2 = 0;
  auto *dst = reinterpret_cast<unsigned char *>(out.data());
  if (EVP_DecryptUpdate(ctx.get(), dst, &n1, buf.data() + 16, static_cast<int>(buf.size() - 16)) !=
          1 ||
      EVP_DecryptFinal_ex(ctx.get(), dst + n1, &n2) != 1) {
    return false;
  }
  out.resize(static_cast<size_t>(n1) + static_cast<size_t>(n2));
  *plain = std::move(out);
  return true;
}

std::string encrypt(std::string_view encrypt_key, std::string_view plain, std::string_view iv) {
  const auto key = key_of(encrypt_key);
  Ctx ctx(EVP_CIPHER_CTX_new(), EVP_CIPHER_CTX_free);
  std::vector<unsigned char> buf(16 + plain.size() + 16);
  std::copy(iv.begin(), iv.begin() + 16, buf.begin());
  int n1 = 0, n2 = 0;
  EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_cbc(), nullptr, key.data(), buf.data());
  EVP_EncryptUpdate(ctx.get(), buf.data() + 16, &n1,
                    reinterpret_cast<const unsigned char *>(plain.data()),
                    static_cast<int>(plain.size()));
  EVP_EncryptFinal_ex(ctx.get(), buf.data() + 16 + n1, &n2);
  return base64(std::string_view(reinterpret_cast<const char *>(buf.data()),
                                 16 + static_cast<size_t>(n1 + n2)));
}

std::string base64(std::string_view data) {
  std::string out((data.size() + 2) / 3 * 4, '\0');
  EVP_EncodeBlock(reinterpret_cast<unsigned char *>(out.data()),
                  reinterpret_cast<const unsigned char *>(data.data()),
                  static_cast<int>(data.size()));
  return out;
}

std::string sha256_hex(std::string_view data) {
  std::array<unsigned char, 32> md{};
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), md.data(), &n, EVP_sha256(), nullptr);
  return hex(md.data(), md.size());
}

std::string signature(std::string_view timestamp, std::string_view nonce,
                      std::string_view encrypt_key, std::string_view body) {
  std::string text;
  text.reserve(timestamp.size() + nonce.size() + encrypt_key.size() + body.size());
  text.append(timestamp).append(nonce).append(encrypt_key).append(body);
  return sha256_hex(text);
}

bool equal_constant_time(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace feishu
