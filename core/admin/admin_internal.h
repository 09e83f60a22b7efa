// Helpers the admin files share: JSON answers with the admin API's headers,
// query string values, random session ids and CSRF tokens. Defined in
// admin.cc. Not for use outside core/admin.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "net/http_server.h"

namespace cg {

// Answers with the API's JSON headers (no-store, nosniff, DENY, a CSP),
// plus `extra` when it has a name.
void respond_json(HttpServer &server, HttpExchange *ex, int status, std::string_view body,
                  HttpHeader extra = {});

// Session ids and CSRF tokens from the kernel's CSPRNG (getrandom).
std::string random_hex(size_t bytes);
// Lower-case hex of any bytes.
std::string to_hex(std::string_view bytes);

// The value of `key` in a query string ("level=warn&lines=20"), or empty.
std::string_view query_value(std::string_view query, std::string_view key);

}  // namespace cg
