#include "net/ws_url.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cctype>

namespace cg::ws_internal {
namespace {

constexpr std::string_view kAcceptGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

}  // namespace

bool iequals(std::string_view a, std::string_view b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
    return std::tolower(static_cast<unsigned char>(x)) ==
           std::tolower(static_cast<unsigned char>(y));
  });
}

bool has_token(std::string_view value, std::string_view token) {
  while (!value.empty()) {
    const size_t comma = value.find(',');
    std::string_view item = value.substr(0, comma);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (iequals(item, token)) return true;
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  return false;
}

std::string base64(const unsigned char *data, size_t n) {
  std::string out(4 * ((n + 2) / 3), '\0');
  const int len =
      EVP_EncodeBlock(reinterpret_cast<unsigned char *>(out.data()), data, static_cast<int>(n));
  out.resize(static_cast<size_t>(std::max(len, 0)));
  return out;
}

std::string accept_for(std::string_view key) {
  std::string in(key);
  in.append(kAcceptGuid);
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int md_len = 0;
  EVP_Digest(in.data(), in.size(), md.data(), &md_len, EVP_sha1(), nullptr);
  return base64(md.data(), md_len);
}

bool bad_header_text(std::string_view s) {
  return s.find_first_of("\r\n") != std::string_view::npos ||
         s.find('\0') != std::string_view::npos;
}

bool parse_ws_url(std::string_view url, ParsedUrl *out) {
  if (url.starts_with("ws://")) {
    url.remove_prefix(5);
    out->port = 80;
  } else if (url.starts_with("wss://")) {
    url.remove_prefix(6);
    out->tls = true;
    out->port = 443;
  } else {
    return false;
  }
  if (const size_t hash = url.find('#'); hash != std::string_view::npos) url = url.substr(0, hash);
  const size_t slash = url.find_first_of("/?");
  std::string_view authority = url.substr(0, slash);
  out->target = slash == std::string_view::npos ? "/" : std::string(url.substr(slash));
  if (out->target.front() == '?') out->target.insert(0, "/");
  if (authority.empty() || authority.find('@') != std::string_view::npos) return false;
  std::string_view host = authority;
  std::string_view port;
  if (authority.front() == '[') {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) return false;
    host = authority.substr(1, close - 1);
    const std::string_view rest = authority.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return false;
      port = rest.substr(1);
    }
  } else if (const size_t colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  if (host.empty()) return false;
  if (!port.empty() || authority.back() == ':') {
    if (port.empty() || port.size() > 5) return false;
    unsigned value = 0;
    for (char ch : port) {
      if (ch < '0' || ch > '9') return false;
      value = value * 10 + static_cast<unsigned>(ch - '0');
    }
    if (value == 0 || value > 65535) return false;
    out->port = static_cast<uint16_t>(value);
  }
  for (char ch : out->target) {
    if (static_cast<unsigned char>(ch) <= 0x20 || ch == 0x7F) return false;
  }
  out->host.assign(host);
  out->host_header = authority;
  return true;
}

}  // namespace cg::ws_internal
