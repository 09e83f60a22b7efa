// Source-address checks for the listeners: IPv4/IPv6 CIDR lists and the
// client address behind trusted proxies (X-Forwarded-For).
//
// THREAD: not thread-safe; the listeners use them on the loop thread.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cg {

// An address in one comparable form: IPv4 as IPv4 (an IPv4-mapped IPv6
// address "::ffff:10.0.0.1" counts as IPv4, as a dual-stack socket reports
// IPv4 peers), IPv6 as 16 bytes.
struct IpAddress {
  bool v6 = false;
  std::array<uint8_t, 16> bytes{};  // IPv4 in the first 4
  bool operator==(const IpAddress &) const = default;
};

// A literal address ("10.0.0.1", "2001:db8::1"); nullopt for anything else.
std::optional<IpAddress> ip_parse(std::string_view text);

struct IpBlock {
  IpAddress base;  // host bits cleared
  int prefix = 0;  // 0..32 or 0..128
};

// "10.0.0.0/8", "2001:db8::/32", or one address (a /32 or /128). Host bits
// set beyond the prefix ("10.0.0.1/8") are an error, since such an entry
// usually means a typo. Returns nullopt with *error set.
std::optional<IpBlock> ip_block_parse(std::string_view text, std::string *error);

class IpBlockList {
 public:
  IpBlockList() = default;
  // Every entry must have passed ip_block_parse (the config checked them);
  // one that does not is skipped.
  explicit IpBlockList(const std::vector<std::string> &cidrs);
  bool empty() const { return blocks_.empty(); }
  bool contains(const IpAddress &addr) const;
  // Parses `text` first; an unparsable address is in no list.
  bool contains(std::string_view text) const;

 private:
  std::vector<IpBlock> blocks_;
};

// The client's address for a request from `peer`: `peer` itself unless it
// is one of `proxies`; then X-Forwarded-For (the comma-joined values of every
// such header, in order) is walked from the right, skipping trusted
// proxies, and the first other entry is the client. When every entry is a
// trusted proxy the leftmost one is. An entry that is no address is
// returned as written: it matches no allow list, so such a request is
// refused where one applies.
std::string ip_client_address(std::string_view peer, std::string_view forwarded_for,
                              const IpBlockList &proxies);

}  // namespace cg
