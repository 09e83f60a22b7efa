#include "openai_sse.h"

#include <algorithm>
#include <cctype>

namespace cg::openai {

void SseLines::feed(std::string_view chunk, const OnData &on_data) {
  if (skip_lf_ && !chunk.empty()) {
    skip_lf_ = false;
    if (chunk.front() == '\n') chunk.remove_prefix(1);  // the LF of a CR LF
  }
  // Only the new bytes can hold a line end: buf_ holds none.
  size_t pos = buf_.size();
  buf_.append(chunk);
  size_t start = 0;
  while ((pos = buf_.find_first_of("\r\n", pos)) != std::string::npos) {
    line(std::string_view(buf_).substr(start, pos - start), on_data);
    if (buf_[pos] == '\r') {
      if (pos + 1 == buf_.size()) {
        skip_lf_ = true;  // an LF may still come with the next chunk
      } else if (buf_[pos + 1] == '\n') {
        pos++;
      }
    }
    start = ++pos;
  }
  buf_.erase(0, start);
}

void SseLines::finish(const OnData &on_data) {
  dispatch(on_data);
  clear();
}

void SseLines::line(std::string_view line, const OnData &on_data) {
  if (line.empty()) {
    dispatch(on_data);
    return;
  }
  if (line.front() == ':') return;  // a comment (keep-alive)
  const size_t colon = line.find(':');
  const std::string_view field = line.substr(0, colon);
  std::string_view value;
  if (colon != std::string_view::npos) {
    value = line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  }
  if (field == "data") data_.append(value).push_back('\n');
}

void SseLines::dispatch(const OnData &on_data) {
  if (data_.empty()) return;  // no data line: nothing to hand out
  data_.pop_back();           // the last line's LF
  on_data(data_);
  data_.clear();
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
