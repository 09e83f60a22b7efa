// HTTP wire helpers: reason phrases, JSON error bodies, the cached Date
// header value, and case-insensitive header name comparison.
#include <cstdio>
#include <ctime>
#include <string_view>

#include "net/http_connection.h"
#include "net/http_server.h"

namespace cg {

std::string_view http_status_text(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 101:
      return "Switching Protocols";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 206:
      return "Partial Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 303:
      return "See Other";
    case 304:
      return "Not Modified";
    case 307:
      return "Temporary Redirect";
    case 308:
      return "Permanent Redirect";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 406:
      return "Not Acceptable";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 410:
      return "Gone";
    case 411:
      return "Length Required";
    case 412:
      return "Precondition Failed";
    case 413:
      return "Content Too Large";
    case 414:
      return "URI Too Long";
    case 415:
      return "Unsupported Media Type";
    case 417:
      return "Expectation Failed";
    case 422:
      return "Unprocessable Content";
    case 426:
      return "Upgrade Required";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
    default:
      break;
  }
  // Any phrase is valid on the wire; clients go by the code.
  if (status >= 200 && status < 300) return "OK";
  if (status >= 400 && status < 500) return "Client Error";
  if (status >= 500 && status < 600) return "Server Error";
  return "Unknown";
}

bool ascii_iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

std::string_view http_error_body(int status) {
  // Fixed literals so error answers cost no allocation.
  switch (status) {
    case 400:
      return R"({"error":"bad request"})";
    case 403:
      return R"({"error":"forbidden"})";
    case 404:
      return R"({"error":"not found"})";
    case 405:
      return R"({"error":"method not allowed"})";
    case 408:
      return R"({"error":"request timeout"})";
    case 413:
      return R"({"error":"request body too large"})";
    case 429:
      return R"({"error":"too many requests"})";
    case 431:
      return R"({"error":"request header fields too large"})";
    case 500:
      return R"({"error":"internal server error"})";
    case 503:
      return R"({"error":"service unavailable"})";
    default:
      return R"({"error":"error"})";
  }
}

std::string_view http_date_now() {
  // thread_local: loop-thread only in practice, but a second loop in another
  // thread stays safe. Names come from tables because strftime's %a/%b follow
  // the process locale and the header must be English.
  static constexpr const char *kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char *kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  thread_local time_t cached_second = -1;
  thread_local char buf[40];
  thread_local int len = 0;
  time_t now = time(nullptr);
  if (now != cached_second) {
    struct tm t;
    gmtime_r(&now, &t);
    len = snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT", kDays[t.tm_wday],
                   t.tm_mday, kMonths[t.tm_mon], t.tm_year + 1900, t.tm_hour, t.tm_min, t.tm_sec);
    cached_second = now;
  }
  return {buf, static_cast<size_t>(len)};
}

}  // namespace cg
