// Optional header-only helper for plugins that write JSON by hand: a string
// as a JSON string literal. Nothing here crosses the ABI.
//
// THREAD: safe (pure functions).
#ifndef CHATGATE_JSON_HPP
#define CHATGATE_JSON_HPP

#include <cstdio>
#include <string>
#include <string_view>

namespace chatgate {

// Appends `s` to `out` as a quoted JSON string: quotes, backslashes and
// control characters escaped; other bytes (UTF-8 included) as they are.
inline void json_append_string(std::string &out, std::string_view s) {
  out += '"';
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

// `s` as a quoted JSON string.
inline std::string json_string(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  json_append_string(out, s);
  return out;
}

}  // namespace chatgate

#endif  // CHATGATE_JSON_HPP
