#include <catch2/catch.hpp>

#include "net/ip_filter.h"
#include "net/token_bucket.h"

using namespace cg;

TEST_CASE("ip_parse takes IPv4 and IPv6 literals and folds IPv4-mapped ones", "[ip]") {
  REQUIRE(ip_parse("10.1.2.3"));
  CHECK_FALSE(ip_parse("10.1.2.3")->v6);
  REQUIRE(ip_parse("2001:db8::1"));
  CHECK(ip_parse("2001:db8::1")->v6);
  CHECK(*ip_parse("::ffff:10.1.2.3") == *ip_parse("10.1.2.3"));
  for (const char *bad :
       {"", "10.1.2", "10.1.2.3.4", "example.com", "10.1.2.3 ", "::g", "1.2.3.4/8"}) {
    INFO(bad);
    CHECK_FALSE(ip_parse(bad));
  }
}

TEST_CASE("ip_block_parse checks prefixes and host bits", "[ip]") {
  std::string err;
  REQUIRE(ip_block_parse("10.0.0.0/8", &err));
  CHECK(ip_block_parse("10.0.0.0/8", &err)->prefix == 8);
  CHECK(ip_block_parse("192.0.2.7", &err)->prefix == 32);
  CHECK(ip_block_parse("2001:db8::/32", &err)->prefix == 32);
  CHECK(ip_block_parse("::1", &err)->prefix == 128);
  CHECK(ip_block_parse("0.0.0.0/0", &err));
  CHECK_FALSE(ip_block_parse("10.0.0.1/8", &err));
  CHECK(err.find("host bits") != std::string::npos);
  CHECK_FALSE(ip_block_parse("10.0.0.0/33", &err));
  CHECK(err.find("0..32") != std::string::npos);
  CHECK_FALSE(ip_block_parse("2001:db8::/129", &err));
  CHECK_FALSE(ip_block_parse("10.0.0.0/", &err));
  CHECK_FALSE(ip_block_parse("10.0.0.0/8x", &err));
  CHECK_FALSE(ip_block_parse("10.0.0.0/-1", &err));
  CHECK_FALSE(ip_block_parse("nonsense/8", &err));
}

TEST_CASE("IpBlockList matches by prefix and family", "[ip]") {
  const IpBlockList list({"10.0.0.0/8", "192.0.2.128/25", "2001:db8::/32", "::1"});
  CHECK(list.contains("10.255.0.1"));
  CHECK(list.contains("::ffff:10.0.0.1"));
  CHECK_FALSE(list.contains("11.0.0.1"));
  CHECK(list.contains("192.0.2.200"));
  CHECK_FALSE(list.contains("192.0.2.127"));
  CHECK(list.contains("2001:db8:ffff::5"));
  CHECK_FALSE(list.contains("2001:db9::5"));
  CHECK(list.contains("::1"));
  CHECK_FALSE(list.contains("::2"));
  CHECK_FALSE(list.contains("not an address"));
  // An IPv4 block never matches an IPv6 address with the same leading bytes.
  CHECK_FALSE(IpBlockList({"0.0.0.0/0"}).contains("2001:db8::1"));
  CHECK(IpBlockList({"::/0"}).contains("2001:db8::1"));
  CHECK_FALSE(IpBlockList({"::/0"}).contains("10.0.0.1"));
}

TEST_CASE("ip_client_address believes X-Forwarded-For only from trusted proxies", "[ip]") {
  const IpBlockList proxies({"10.0.0.0/8"});
  // Not a proxy: the header is the client's own claim and is ignored.
  CHECK(ip_client_address("198.51.100.9", "203.0.113.1", proxies) == "198.51.100.9");
  // No proxies configured: the peer.
  CHECK(ip_client_address("10.0.0.1", "203.0.113.1", IpBlockList()) == "10.0.0.1");
  CHECK(ip_client_address("10.0.0.1", "", proxies) == "10.0.0.1");
  CHECK(ip_client_address("10.0.0.1", "203.0.113.1", proxies) == "203.0.113.1");
  // The client may prepend anything; the rightmost untrusted entry counts.
  CHECK(ip_client_address("10.0.0.1", "192.0.2.1, 203.0.113.1", proxies) == "203.0.113.1");
  CHECK(ip_client_address("10.0.0.1", "203.0.113.1, 10.0.0.7", proxies) == "203.0.113.1");
  CHECK(ip_client_address("10.0.0.1", "10.0.0.9,10.0.0.7", proxies) == "10.0.0.9");
  CHECK(ip_client_address("10.0.0.1", " , ,", proxies) == "10.0.0.1");
  // Ports and brackets, as some proxies write them.
  CHECK(ip_client_address("10.0.0.1", "203.0.113.1:4711", proxies) == "203.0.113.1");
  CHECK(ip_client_address("10.0.0.1", "[2001:db8::1]:443", proxies) == "2001:db8::1");
  CHECK(ip_client_address("10.0.0.1", "2001:db8::1", proxies) == "2001:db8::1");
  // Garbage is passed on as written: it matches no allow list.
  CHECK(ip_client_address("10.0.0.1", "unknown", proxies) == "unknown");
}

TEST_CASE("TokenBuckets admit a burst, then the rate", "[rate]") {
  TokenBuckets b(RateLimit{2, 3});
  uint64_t t = 1000;
  CHECK(b.take("a", t) == 0);
  CHECK(b.take("a", t) == 0);
  CHECK(b.take("a", t) == 0);
  const uint64_t wait = b.take("a", t);
  CHECK(wait == 500);          // 2 a second: a token every 500 ms
  CHECK(b.take("b", t) == 0);  // keys are separate
  CHECK(b.take("a", t + 499) != 0);
  CHECK(b.take("a", t + 500) == 0);
  CHECK(b.take("a", t + 500) != 0);
  // Refills to the burst, not beyond.
  t += 100000;
  for (int i = 0; i < 3; i++) CHECK(b.take("a", t) == 0);
  CHECK(b.take("a", t) != 0);
}

TEST_CASE("TokenBuckets: disabled admits all, default burst, sweep", "[rate]") {
  TokenBuckets off;
  for (int i = 0; i < 100; i++) CHECK(off.take("x", 0) == 0);
  CHECK(off.tracked() == 0);

  TokenBuckets one(RateLimit{0.5, 0});  // burst defaults to max(1, rate)
  CHECK(one.take("x", 0) == 0);
  CHECK(one.take("x", 0) == 2000);

  TokenBuckets b(RateLimit{1, 10});
  for (int i = 0; i < 10; i++) CHECK(b.take("x", 0) == 0);
  CHECK(b.take("x", 0) != 0);

  TokenBuckets many(RateLimit{1, 1});
  for (int i = 0; i < 5000; i++) many.take("k" + std::to_string(i), 0);
  CHECK(many.tracked() == 5000);
  many.take("late", 20000);  // every bucket is full again by now
  CHECK(many.tracked() <= 2);
}
