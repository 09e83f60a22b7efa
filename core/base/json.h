// JSON output helpers. Parsing is simdjson's; this file only writes.
//
// THREAD: safe (no shared state).
#pragma once

#include <string>
#include <string_view>

namespace cg {

// Appends `s` to `out` as a JSON string literal, quotes included. Control
// characters become \n, \t... or \u00XX; '"' and '\\' are escaped; valid
// UTF-8 passes through unchanged; each byte of an invalid UTF-8 sequence
// becomes U+FFFD, so the output is always valid JSON in valid UTF-8.
void json_append_string(std::string &out, std::string_view s);

// Returns `s` as a JSON string literal.
std::string json_quote(std::string_view s);

}  // namespace cg
