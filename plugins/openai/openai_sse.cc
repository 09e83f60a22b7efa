#include "openai_sse.h"

#include <algorithm>
#include <cctype>

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

bool completion_content_parse(simdjson::dom::parser &parser, std::string_view body,
                              std::string_view *content) {
  simdjson::dom::element doc;
  std::string_view text;
  if (parser.parse(body.data(), body.size()).get(doc) != simdjson::SUCCESS ||
      doc["choices"].at(0)["message"]["content"].get_string().get(text) != simdjson::SUCCESS) {
    return false;
  }
  *content = text;
  return true;
}

bool is_json_content_type(std::string_view value) {
  const size_t semi = value.find(';');
  if (semi != std::string_view::npos) value = value.substr(0, semi);
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  constexpr std::string_view kJson = "application/json";
  return value.size() == kJson.size() &&
         std::equal(value.begin(), value.end(), kJson.begin(), [](char a, char b) {
           return std::tolower(static_cast<unsigned char>(a)) == b;
         });
}

}  // namespace cg::openai
