// HttpServer limits and protocol errors over real sockets: 400, 408, 413,
// 431, 503, request smuggling, idle and non-keep-alive closes.
#include "http_test_support.h"

namespace cg {

using namespace http_test;

TEST_CASE("http: malformed request is 400 and the connection closes", "[http]") {
  Harness h;
  h.start();
  std::vector<Response> got;
  bool closed = false;
  h.run_client([&] {
    Client c(h.port);
    c.send("GET /x HTTP/1.1\r\nBad Header Line\r\n\r\n");
    got = c.read(1);
    closed = c.wait_closed();
  });
  REQUIRE(got.size() == 1);
  CHECK(got[0].status == 400);
  CHECK(got[0].header("connection") == "close");
  CHECK(got[0].body == R"({"error":"bad request"})");
  CHECK(closed);
}

TEST_CASE("http: Content-Length with Transfer-Encoding is refused (smuggling)", "[http]") {
  Harness h;
  bool handler_ran = false;
  h.server->add_route("POST", "/echo", false, [&](HttpExchange *ex, const HttpRequest &) {
    handler_ran = true;
    h.server->respond(ex, 200, kText, "");
  });
  h.start();
  std::vector<Response> got;
  bool closed = false;
  h.run_client([&] {
    Client c(h.port);
    c.send(
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    got = c.read(1);
    closed = c.wait_closed();
  });
  REQUIRE(got.size() == 1);
  CHECK(got[0].status == 400);
  CHECK(closed);
  CHECK_FALSE(handler_ran);
}

TEST_CASE("http: body over the limit is 413, by Content-Length and by chunked size", "[http]") {
  Harness h(small_limits());
  add_echo(h);
  h.start();
  std::vector<Response> by_length, by_chunks, fits;
  bool closed1 = false, closed2 = false;
  h.run_client([&] {
    Client a(h.port);
    // Refused from the head alone: the body is never sent.
    a.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n");
    by_length = a.read(1);
    closed1 = a.wait_closed();
    Client b(h.port);
    b.send(
        "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        "a\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n");
    by_chunks = b.read(1);
    closed2 = b.wait_closed();
    Client c(h.port);
    c.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 16\r\n\r\n0123456789abcdef");
    fits = c.read(1);
  });
  REQUIRE(by_length.size() == 1);
  CHECK(by_length[0].status == 413);
  CHECK(closed1);
  REQUIRE(by_chunks.size() == 1);
  CHECK(by_chunks[0].status == 413);
  CHECK(closed2);
  REQUIRE(fits.size() == 1);
  CHECK(fits[0].status == 200);
}

TEST_CASE("http: header over the limit is 431 and the connection closes", "[http]") {
  Harness h(small_limits());
  h.start();
  std::vector<Response> got;
  bool closed = false;
  h.run_client([&] {
    Client c(h.port);
    c.send("GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + std::string(4000, 'a') + "\r\n\r\n");
    got = c.read(1);
    closed = c.wait_closed();
  });
  REQUIRE(got.size() == 1);
  CHECK(got[0].status == 431);
  CHECK(closed);
}

TEST_CASE("http: whitespace padding counts against the header limit", "[http]") {
  Harness h(small_limits());
  h.server->add_route("GET", "/", false, [&](HttpExchange *ex, const HttpRequest &) {
    h.server->respond(ex, 200, kText, "");
  });
  h.start();
  std::vector<Response> got;
  h.run_client([&] {
    Client c(h.port);
    // llhttp drops leading whitespace of a value, so only raw byte counting
    // sees these 3000 bytes.
    c.send("GET / HTTP/1.1\r\nHost: t\r\nX-Pad:" + std::string(3000, ' ') + "v\r\n\r\n");
    got = c.read(1);
  });
  REQUIRE(got.size() == 1);
  CHECK(got[0].status == 431);
}

TEST_CASE("http: a slow request head gets 408 and the connection closes", "[http]") {
  Harness h(small_limits());
  h.server->add_route("GET", "/", false, [&](HttpExchange *ex, const HttpRequest &) {
    h.server->respond(ex, 200, kText, "");
  });
  h.start();
  std::vector<Response> got;
  bool closed = false;
  auto started = Clock::now();
  h.run_client([&] {
    Client c(h.port);
    c.send("GET / HTTP/1.1\r\nHost: t\r\n");  // never finishes the head
    got = c.read(1);
    closed = c.wait_closed();
  });
  auto elapsed = Clock::now() - started;
  REQUIRE(got.size() == 1);
  CHECK(got[0].status == 408);
  CHECK(closed);
  CHECK(elapsed < std::chrono::milliseconds(900));
}

TEST_CASE("http: a slow request body gets 408", "[http]") {
  Harness h(small_limits());
  add_echo(h);
  h.start();
  std::vector<Response> got;
  bool closed = false;
  h.run_client([&] {
    Client c(h.port);
    c.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc");
    got = c.read(1);
    closed = c.wait_closed();
  });
  REQUIRE(got.size() == 1);
  CHECK(got[0].status == 408);
  CHECK(closed);
}

TEST_CASE("http: idle keep-alive connections close silently", "[http]") {
  Harness h(small_limits());
  h.server->add_route("GET", "/", false, [&](HttpExchange *ex, const HttpRequest &) {
    h.server->respond(ex, 200, kText, "ok");
  });
  h.start();
  std::vector<Response> got;
  bool closed = false;
  std::string raw;
  h.run_client([&] {
    Client c(h.port);
    c.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    got = c.read(1);
    closed = c.wait_closed(1000);
    raw = c.raw();
  });
  REQUIRE(got.size() == 1);
  CHECK(closed);
  CHECK(raw.find("408") == std::string::npos);
  CHECK(h.server->connection_count() == 0);
}

TEST_CASE("http: HTTP/1.0 and Connection: close end the connection after the answer", "[http]") {
  Harness h;
  h.server->add_route("GET", "/", false, [&](HttpExchange *ex, const HttpRequest &) {
    h.server->respond(ex, 200, kText, "ok");
  });
  h.start();
  std::vector<Response> r10, rclose;
  bool closed10 = false, closed_close = false;
  h.run_client([&] {
    Client a(h.port);
    a.send("GET / HTTP/1.0\r\n\r\n");
    r10 = a.read(1);
    closed10 = a.wait_closed();
    Client b(h.port);
    // The second request must be ignored.
    b.send("GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n");
    rclose = b.read(2, 500);
    closed_close = b.wait_closed();
  });
  REQUIRE(r10.size() == 1);
  CHECK(r10[0].header("connection") == "close");
  CHECK(closed10);
  REQUIRE(rclose.size() == 1);
  CHECK(rclose[0].header("connection") == "close");
  CHECK(closed_close);
}

TEST_CASE("http: connections beyond max_connections get 503", "[http]") {
  HttpListenerConfig config;
  config.limits.max_connections = 1;
  Harness h(config);
  h.server->add_route("GET", "/", false, [&](HttpExchange *ex, const HttpRequest &) {
    h.server->respond(ex, 200, kText, "ok");
  });
  h.start();
  std::vector<Response> first, rejected, again;
  bool rejected_closed = false;
  h.run_client([&] {
    Client a(h.port);
    a.send("GET / HTTP/1.1\r\n\r\n");
    first = a.read(1);  // `a` is now surely accepted and counted
    Client b(h.port);
    b.send("GET / HTTP/1.1\r\n\r\n");
    rejected = b.read(1);
    rejected_closed = b.wait_closed();
    a.send("GET / HTTP/1.1\r\n\r\n");
    again = a.read(1);
  });
  REQUIRE(first.size() == 1);
  REQUIRE(rejected.size() == 1);
  CHECK(rejected[0].status == 503);
  CHECK(rejected[0].header("connection") == "close");
  CHECK(rejected_closed);
  REQUIRE(again.size() == 1);
  CHECK(again[0].status == 200);
}

TEST_CASE("http: a connection that never sends a byte closes after the head timeout", "[http]") {
  HttpListenerConfig config = small_limits();
  config.limits.idle_timeout_ms = 60000;  // the idle limit must not apply before the first byte
  Harness h(config);
  h.start();
  bool closed = false;
  std::string raw;
  h.run_client([&] {
    Client c(h.port);
    closed = c.wait_closed(1500);
    raw = c.raw();
  });
  CHECK(closed);
  CHECK(raw.empty());  // silent: nothing was asked, so nothing is answered
  CHECK(h.server->connection_count() == 0);
}

}  // namespace cg
