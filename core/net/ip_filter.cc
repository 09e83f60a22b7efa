#include "net/ip_filter.h"

#include <uv.h>

#include <charconv>
#include <cstring>

namespace cg {
namespace {

constexpr uint8_t kMappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool prefix_matches(const IpAddress &a, const IpAddress &base, int prefix) {
  const int whole = prefix / 8;
  if (std::memcmp(a.bytes.data(), base.bytes.data(), static_cast<size_t>(whole)) != 0) {
    return false;
  }
  const int rest = prefix % 8;
  if (rest == 0) return true;
  const auto mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (a.bytes[static_cast<size_t>(whole)] & mask) == base.bytes[static_cast<size_t>(whole)];
}

// An X-Forwarded-For entry may carry a port: "[2001:db8::1]:443",
// "192.0.2.1:443". The address alone is wanted.
std::string_view strip_port(std::string_view entry) {
  if (entry.starts_with('[')) {
    const size_t close = entry.find(']');
    return close == std::string_view::npos ? entry : entry.substr(1, close - 1);
  }
  const size_t colon = entry.find(':');
  if (colon != std::string_view::npos && entry.find(':', colon + 1) == std::string_view::npos) {
    return entry.substr(0, colon);  // one colon: IPv4 with a port (IPv6 has two or more)
  }
  return entry;
}

}  // namespace

std::optional<IpAddress> ip_parse(std::string_view text) {
  // inet_pton wants a terminated string; an address is short.
  char buf[64];
  if (text.empty() || text.size() >= sizeof buf) return std::nullopt;
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  IpAddress out;
  if (uv_inet_pton(AF_INET, buf, out.bytes.data()) == 0) return out;
  if (uv_inet_pton(AF_INET6, buf, out.bytes.data()) != 0) return std::nullopt;
  if (std::memcmp(out.bytes.data(), kMappedPrefix, sizeof kMappedPrefix) == 0) {
    std::memmove(out.bytes.data(), out.bytes.data() + 12, 4);
    std::memset(out.bytes.data() + 4, 0, 12);
    return out;
  }
  out.v6 = true;
  return out;
}

std::optional<IpBlock> ip_block_parse(std::string_view text, std::string *error) {
  const size_t slash = text.find('/');
  const std::optional<IpAddress> addr = ip_parse(text.substr(0, slash));
  if (!addr) {
    *error = "expected an IPv4 or IPv6 address or CIDR block (10.0.0.0/8, 2001:db8::/32)";
    return std::nullopt;
  }
  const int max = addr->v6 ? 128 : 32;
  int prefix = max;
  if (slash != std::string_view::npos) {
    const std::string_view digits = text.substr(slash + 1);
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), prefix);
    if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size() || prefix < 0 ||
        prefix > max) {
      *error = "expected a prefix length 0.." + std::to_string(max) + " after '/'";
      return std::nullopt;
    }
  }
  IpBlock block{*addr, prefix};
  IpAddress masked{};
  masked.v6 = addr->v6;
  for (int bit = 0; bit < prefix; ++bit) {
    const auto i = static_cast<size_t>(bit / 8);
    masked.bytes[i] |= addr->bytes[i] & static_cast<uint8_t>(0x80 >> (bit % 8));
  }
  if (!(masked == *addr)) {
    *error = "host bits set beyond the /" + std::to_string(prefix) + " prefix";
    return std::nullopt;
  }
  return block;
}

IpBlockList::IpBlockList(const std::vector<std::string> &cidrs) {
  std::string error;
  for (const std::string &c : cidrs) {
    if (auto block = ip_block_parse(c, &error)) blocks_.push_back(*block);
  }
}

bool IpBlockList::contains(const IpAddress &addr) const {
  for (const IpBlock &b : blocks_) {
    if (b.base.v6 == addr.v6 && prefix_matches(addr, b.base, b.prefix)) return true;
  }
  return false;
}

bool IpBlockList::contains(std::string_view text) const {
  const std::optional<IpAddress> addr = ip_parse(text);
  return addr && contains(*addr);
}

std::string ip_client_address(std::string_view peer, std::string_view forwarded_for,
                              const IpBlockList &proxies) {
  if (proxies.empty() || forwarded_for.empty() || !proxies.contains(peer)) {
    return std::string(peer);
  }
  std::string_view rest = forwarded_for;
  std::string_view leftmost;
  while (!rest.empty()) {
    const size_t comma = rest.rfind(',');
    const std::string_view entry =
        strip_port(trim(comma == std::string_view::npos ? rest : rest.substr(comma + 1)));
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(0, comma);
    if (entry.empty()) continue;
    leftmost = entry;
    if (!proxies.contains(entry)) return std::string(entry);
  }
  return std::string(leftmost.empty() ? peer : leftmost);
}

}  // namespace cg
