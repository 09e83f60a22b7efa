// openai.so's stream parser: the input arrives in chunks split where its
// first byte says, as a network would cut it.
#include <cstdint>
#include <string>

#include "openai_sse.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  static simdjson::dom::parser parser;
  const size_t step = 1 + data[0] % 64;
  std::string_view in(reinterpret_cast<const char *>(data) + 1, size - 1);
  cg::openai::SseLines lines;
  std::string answer;
  bool done = false;
  while (!in.empty()) {
    const std::string_view chunk = in.substr(0, step);
    in.remove_prefix(chunk.size());
    lines.feed(chunk, [&](std::string_view payload) {
      done |= cg::openai::sse_delta_parse(parser, payload, [&](std::string_view piece) {
                answer.append(piece);
              }).done;
    });
  }
  return 0;
}
