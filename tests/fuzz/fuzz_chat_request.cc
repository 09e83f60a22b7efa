// The body of POST /api/chat.
#include <cstdint>
#include <string>

#include "router/chat_request.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static simdjson::dom::parser parser;
  cg::ChatRequest r;
  const std::string err =
      cg::chat_request_parse(parser, {reinterpret_cast<const char *>(data), size}, &r);
  // A parsed request's views point into the document: touch them all.
  if (err.empty()) {
    volatile size_t n =
        r.user_id.size() + r.query.size() + r.conversation_id.size() + r.message_id.size();
    (void)n;
  }
  return 0;
}
