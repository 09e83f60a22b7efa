#include "openai_sse.h"

namespace cg::openai {

void SseLines::feed(std::string_view chunk, const std::function<void(std::string_view)> &on_data) {
  buf_.append(chunk);
  size_t start = 0;
  for (size_t nl; (nl = buf_.find('\n', start)) != std::string::npos; start = nl + 1) {
    std::string_view line(buf_.data() + start, nl - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.starts_with("data:")) {
      line.remove_prefix(5);
      if (!line.empty() && line.front() == ' ') line.remove_prefix(1);
      on_data(line);
    }
  }
  buf_.erase(0, start);
}

SseDelta sse_delta_parse(simdjson::dom::parser &parser, std::string_view data,
                         const std::function<void(std::string_view)> &on_piece) {
  SseDelta out;
  if (data == "[DONE]") {
    out.done = true;
    return out;
  }
  simdjson::dom::element doc;
  if (parser.parse(data.data(), data.size()).get(doc) != simdjson::SUCCESS) return out;
  simdjson::dom::array choices;
  if (doc["choices"].get_array().get(choices) != simdjson::SUCCESS) return out;
  for (simdjson::dom::element choice : choices) {
    std::string_view piece;
    if (choice["delta"]["content"].get_string().get(piece) != simdjson::SUCCESS || piece.empty()) {
      continue;
    }
    on_piece(piece);
  }
  return out;
}

}  // namespace cg::openai
