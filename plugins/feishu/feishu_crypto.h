// Feishu's callback cryptography (OpenSSL's libcrypto): the AES-256-CBC
// "encrypt" envelope, the X-Lark-Signature check, and the digests behind
// idempotency keys. Facts: ../shared/protocols.md ("Decryption and
// signature"), checked against its known-answer vectors in
// tests/unit/test_feishu.cc.
//
// THREAD: safe (pure functions).
#pragma once

#include <string>
#include <string_view>

namespace feishu {

// Decrypts an "encrypt" field: base64(iv[16] + AES-256-CBC(ciphertext)),
// key = SHA-256(encrypt_key), PKCS#7 padding. False (and *plain
// untouched) for bad base64, a short or misaligned ciphertext, or bad
// padding (the wrong key, most often).
bool decrypt(std::string_view encrypt_key, std::string_view b64, std::string *plain);

// Encrypts as Feishu does, with `iv` (16 bytes). For the unit tests'
// round trip; the plugin itself never encrypts.
std::string encrypt(std::string_view encrypt_key, std::string_view plain, std::string_view iv);

// lowercase hex SHA-256(timestamp + nonce + encrypt_key + body): what
// X-Lark-Signature must equal.
std::string signature(std::string_view timestamp, std::string_view nonce,
                      std::string_view encrypt_key, std::string_view body);

// Standard base64 with padding.
std::string base64(std::string_view data);

// lowercase hex SHA-256 of `data`.
std::string sha256_hex(std::string_view data);

// Compares in time that depends only on the lengths.
bool equal_constant_time(std::string_view a, std::string_view b);

}  // namespace feishu
