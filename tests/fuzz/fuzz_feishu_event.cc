// Feishu callbacks: the event envelope (schema 2.0 and v1), the message
// content of each type, and the AES-256-CBC decryption of an encrypted body.
#include <cstdint>
#include <string>

#include "feishu_crypto.h"
#include "feishu_event.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const std::string_view in(reinterpret_cast<const char *>(data), size);
  feishu::Event ev;
  if (feishu::event_parse(in, &ev).empty()) {
    (void)feishu::message_content(ev, "ou_bot");
    if (ev.kind == feishu::Event::Kind::kEncrypted) {
      std::string plain;
      if (feishu::decrypt("fuzz-encrypt-key", ev.encrypt, &plain)) {
        feishu::Event inner;
        if (feishu::event_parse(plain, &inner).empty()) (void)feishu::message_content(inner, "");
      }
    }
  }
  // The ciphertext path on its own: any base64 text.
  std::string plain;
  (void)feishu::decrypt("fuzz-encrypt-key", in, &plain);
  return 0;
}
