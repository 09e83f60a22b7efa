#include <array>
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "net/ws_client.h"
#include "net/ws_frame.h"

using cg::WsEvent;
using cg::WsReader;

namespace {

// A server frame (unmasked), written by hand from RFC 6455 section 5.2 so
// the reader is not checked against our own encoder.
std::string server_frame(uint8_t first, std::string_view payload) {
  std::string f(1, static_cast<char>(first));
  const size_t n = payload.size();
  if (n < 126) {
    f.push_back(static_cast<char>(n));
  } else if (n <= 0xFFFF) {
    f.push_back(126);
    f.push_back(static_cast<char>(n >> 8));
    f.push_back(static_cast<char>(n & 0xFF));
  } else {
    f.push_back(127);
    for (int shift = 56; shift >= 0; shift -= 8)
      f.push_back(static_cast<char>((n >> shift) & 0xFF));
  }
  f.append(payload);
  return f;
}

struct Seen {
  uint8_t opcode;
  std::string payload;
  uint16_t code;
};

uint16_t feed_all(WsReader &r, std::string_view data, std::vector<Seen> *out, size_t step = 0) {
  if (step == 0) step = data.size();
  for (size_t i = 0; i < data.size(); i += step) {
    const uint16_t breach = r.feed(data.substr(i, step), [&](const WsEvent &ev) {
      out->push_back({ev.opcode, std::string(ev.payload), ev.close_code});
      return true;
    });
    if (breach != 0) return breach;
  }
  return 0;
}

}  // namespace

TEST_CASE("ws_frame_append writes RFC 6455 example frames", "[ws]") {
  // RFC 6455 section 5.7: a masked "Hello" with key 37 fa 21 3d.
  const std::array<uint8_t, 4> mask{0x37, 0xfa, 0x21, 0x3d};
  std::string out;
  cg::ws_frame_append(&out, cg::kWsText, "Hello", mask);
  const std::string expected("\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58", 11);
  CHECK(out == expected);

  // 16-bit and 64-bit lengths, and the mask undone byte by byte.
  for (size_t n : {size_t{126}, size_t{65535}, size_t{65536}, size_t{1} << 20}) {
    std::string payload(n, '\0');
    for (size_t i = 0; i < n; ++i) payload[i] = static_cast<char>(i * 31);
    out.clear();
    cg::ws_frame_append(&out, cg::kWsBinary, payload, mask);
    const size_t head = n <= 0xFFFF ? 4 : 10;
    REQUIRE(out.size() == head + 4 + n);
    CHECK(static_cast<uint8_t>(out[1]) == (n <= 0xFFFF ? 0xFE : 0xFF));
    bool same = true;
    for (size_t i = 0; i < n && same; ++i) {
      same = static_cast<char>(out[head + 4 + i] ^ static_cast<char>(mask[i % 4])) == payload[i];
    }
    CHECK(same);
  }
}

TEST_CASE("WsReader joins fragments, passes control frames between them", "[ws]") {
  WsReader r(1 << 20);
  std::vector<Seen> seen;
  const std::string data = server_frame(0x01, "alpha-") + server_frame(0x89, "ping!") +
                           server_frame(0x00, "beta-") + server_frame(0x80, "gamma") +
                           server_frame(0x82, std::string(70000, 'z'));
  // Byte by byte and all at once give the same events.
  for (size_t step : {size_t{1}, size_t{7}, data.size()}) {
    seen.clear();
    WsReader fresh(1 << 20);
    REQUIRE(feed_all(fresh, data, &seen, step) == 0);
    REQUIRE(seen.size() == 3);
    CHECK(seen[0].opcode == cg::kWsPing);
    CHECK(seen[0].payload == "ping!");
    CHECK(seen[1].opcode == cg::kWsText);
    CHECK(seen[1].payload == "alpha-beta-gamma");
    CHECK(seen[2].opcode == cg::kWsBinary);
    CHECK(seen[2].payload.size() == 70000);
    CHECK_FALSE(fresh.mid_frame());
  }
}

TEST_CASE("WsReader reads close codes and reasons", "[ws]") {
  WsReader r(1024);
  std::vector<Seen> seen;
  REQUIRE(feed_all(r,
                   server_frame(0x88, std::string("\x0f\xa1"
                                                  "bye",
                                                  5)),
                   &seen) == 0);
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].code == 4001);
  CHECK(seen[0].payload == "bye");
  WsReader empty(1024);
  seen.clear();
  REQUIRE(feed_all(empty, server_frame(0x88, ""), &seen) == 0);
  CHECK(seen[0].code == cg::kWsNoStatus);
}

TEST_CASE("WsReader refuses protocol breaches with the right close code", "[ws]") {
  struct Case {
    const char *name;
    std::string data;
    uint16_t code;
  };
  const std::vector<Case> cases = {
      {"RSV bit", server_frame(0xC1, "x"), cg::kWsProtocolError},
      {"masked", std::string("\x81\x81\x00\x00\x00\x00x", 7), cg::kWsProtocolError},
      {"unknown opcode", server_frame(0x83, "x"), cg::kWsProtocolError},
      {"unknown control", server_frame(0x8B, ""), cg::kWsProtocolError},
      {"fragmented ping", server_frame(0x09, "x"), cg::kWsProtocolError},
      {"long ping", server_frame(0x89, std::string(126, 'p')), cg::kWsProtocolError},
      {"stray continuation", server_frame(0x80, "x"), cg::kWsProtocolError},
      {"interleaved message", server_frame(0x01, "a") + server_frame(0x81, "b"),
       cg::kWsProtocolError},
      {"1-byte close", server_frame(0x88, "x"), cg::kWsProtocolError},
      {"close code 1005", server_frame(0x88, std::string("\x03\xed", 2)), cg::kWsProtocolError},
      {"close code 999", server_frame(0x88, std::string("\x03\xe7", 2)), cg::kWsProtocolError},
      {"bad UTF-8 text", server_frame(0x81, "\xff\xfe"), cg::kWsInvalidData},
      {"bad UTF-8 across fragments", server_frame(0x01, "\xe2\x82") + server_frame(0x80, "x"),
       cg::kWsInvalidData},
      {"too big", server_frame(0x82, std::string(2000, 'b')), cg::kWsTooBig},
      {"too big in fragments",
       server_frame(0x02, std::string(600, 'b')) + server_frame(0x80, std::string(600, 'b')),
       cg::kWsTooBig},
  };
  for (const Case &c : cases) {
    INFO(c.name);
    WsReader r(1024);
    std::vector<Seen> seen;
    CHECK(feed_all(r, c.data, &seen) == c.code);
    CHECK_FALSE(r.error().empty());
  }
}

TEST_CASE("WsReader judges an oversized frame from its header alone", "[ws]") {
  // The header announces 1 GiB; nothing more arrives, and nothing waits.
  WsReader r(1 << 20);
  std::vector<Seen> seen;
  const std::string head("\x82\x7f\x00\x00\x00\x00\x40\x00\x00\x00", 10);
  CHECK(feed_all(r, head, &seen) == cg::kWsTooBig);
}

TEST_CASE("WsReader takes a million one-byte fragments without recursion", "[ws]") {
  std::string data = server_frame(0x02, "a");
  for (int i = 0; i < 1000000; ++i) data += server_frame(0x00, "b");
  data += server_frame(0x80, "c");
  WsReader r(size_t{4} << 20);
  std::vector<Seen> seen;
  REQUIRE(feed_all(r, data, &seen) == 0);
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].payload.size() == 1000002);
}

TEST_CASE("ws_close_payload and ws_close_code_valid", "[ws]") {
  CHECK(cg::ws_close_payload(0, "ignored").empty());
  CHECK(cg::ws_close_payload(1000, "ok") == std::string("\x03\xe8ok", 4));
  CHECK(cg::ws_close_payload(1000, std::string(200, 'r')).size() == 125);
  CHECK(cg::ws_close_code_valid(1000));
  CHECK(cg::ws_close_code_valid(4999));
  CHECK_FALSE(cg::ws_close_code_valid(1004));
  CHECK_FALSE(cg::ws_close_code_valid(1006));
  CHECK_FALSE(cg::ws_close_code_valid(2999));
  CHECK_FALSE(cg::ws_close_code_valid(5000));
}

TEST_CASE("backoff_delay_ms doubles up to the cap with up to half jitter", "[ws]") {
  for (uint32_t attempt = 0; attempt < 40; ++attempt) {
    uint64_t full = 100;
    for (uint32_t i = 0; i < attempt && full < 30000; ++i)
      full = std::min<uint64_t>(full * 2, 30000);
    uint64_t lo = full, hi = 0;
    for (int i = 0; i < 200; ++i) {
      const uint64_t d = cg::backoff_delay_ms(attempt, 100, 30000);
      lo = std::min(lo, d);
      hi = std::max(hi, d);
    }
    INFO("attempt " << attempt);
    CHECK(hi <= full);
    CHECK(lo >= full - full / 2);
    CHECK(lo < hi);  // jitter: 200 draws are not all the same
  }
  CHECK(cg::backoff_delay_ms(1000000, 100, 30000) <= 30000);  // no overflow
  CHECK(cg::backoff_delay_ms(3, 0, 30000) == 0);
}

TEST_CASE("ws_proxy_parse reads http:// proxy URLs as curl does", "[ws]") {
  auto p = cg::ws_proxy_parse("http://proxy.corp:3128");
  REQUIRE(p);
  CHECK(p->host == "proxy.corp");
  CHECK(p->port == 3128);
  CHECK(p->authorization.empty());
  p = cg::ws_proxy_parse("http://proxy.corp/");
  REQUIRE(p);
  CHECK(p->port == 1080);
  p = cg::ws_proxy_parse("http://alice:s3cret@[::1]:8080");
  REQUIRE(p);
  CHECK(p->host == "::1");
  CHECK(p->port == 8080);
  CHECK(p->authorization == "YWxpY2U6czNjcmV0");  // base64("alice:s3cret")
  CHECK_FALSE(cg::ws_proxy_parse("https://proxy.corp:3128"));
  CHECK_FALSE(cg::ws_proxy_parse("proxy.corp:3128"));
  CHECK_FALSE(cg::ws_proxy_parse("http://"));
  CHECK_FALSE(cg::ws_proxy_parse("http://host:99999"));
}

TEST_CASE("ws_no_proxy_match takes hosts, domains and *", "[ws]") {
  CHECK(cg::ws_no_proxy_match("*", "anything.example"));
  CHECK(cg::ws_no_proxy_match("localhost, 127.0.0.1", "127.0.0.1"));
  CHECK(cg::ws_no_proxy_match("example.com", "a.example.com"));
  CHECK(cg::ws_no_proxy_match(".example.com", "a.b.EXAMPLE.com"));
  CHECK(cg::ws_no_proxy_match("example.com", "example.com"));
  CHECK_FALSE(cg::ws_no_proxy_match("example.com", "badexample.com"));
  CHECK_FALSE(cg::ws_no_proxy_match("", "example.com"));
  CHECK_FALSE(cg::ws_no_proxy_match("other.org", "example.com"));
}
