// HttpServer over real sockets: the server runs on a uv loop on the test
// thread, clients are blocking sockets on a std::thread. Client threads only
// collect results; every assertion runs on the test thread (Catch2 is not
// thread-safe).
#include <arpa/inet.h>
#include <llhttp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "http_server.h"

namespace cg {
namespace {

using Clock = std::chrono::steady_clock;

constexpr HttpHeader kText[] = {{"Content-Type", "text/plain"}};

struct Response {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;

  std::string header(const std::string &name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
};

std::string lower(std::string s) {
  for (char &c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// A blocking HTTP/1.1 client; responses are parsed with llhttp.
class Client {
 public:
  explicit Client(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr *>(&addr), sizeof addr) == 0;
    llhttp_settings_init(&settings_);
    settings_.on_message_begin = [](llhttp_t *p) {
      self(p)->partial_ = Response{};
      return 0;
    };
    settings_.on_header_field = [](llhttp_t *p, const char *at, size_t len) {
      Client *c = self(p);
      if (c->in_value_) c->flush_header();
      c->field_.append(at, len);
      return 0;
    };
    settings_.on_header_value = [](llhttp_t *p, const char *at, size_t len) {
      Client *c = self(p);
      c->in_value_ = true;
      c->value_.append(at, len);
      return 0;
    };
    settings_.on_headers_complete = [](llhttp_t *p) {
      Client *c = self(p);
      if (c->in_value_) c->flush_header();
      c->partial_.status = p->status_code;
      return 0;
    };
    settings_.on_body = [](llhttp_t *p, const char *at, size_t len) {
      self(p)->partial_.body.append(at, len);
      return 0;
    };
    settings_.on_message_complete = [](llhttp_t *p) {
      self(p)->done_.push_back(std::move(self(p)->partial_));
      return 0;
    };
    llhttp_init(&parser_, HTTP_RESPONSE, &settings_);
    parser_.data = this;
  }
  ~Client() { close(); }

  bool connected() const { return connected_; }
  bool eof() const { return eof_; }
  bool parse_error() const { return parse_error_; }
  const std::string &raw() const { return raw_; }

  void send(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return;
      data.remove_prefix(static_cast<size_t>(n));
    }
  }

  // Reads until `n` complete responses arrived, EOF or the timeout.
  std::vector<Response> read(size_t n, int timeout_ms = 2000) {
    auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    while (done_.size() < n && read_some(deadline)) {
    }
    std::vector<Response> out;
    while (!done_.empty() && out.size() < n) {
      out.push_back(std::move(done_.front()));
      done_.erase(done_.begin());
    }
    return out;
  }

  // True when the server closes the connection within the timeout.
  bool wait_closed(int timeout_ms = 2000) {
    auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    while (read_some(deadline)) {
    }
    return eof_;
  }

  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  static Client *self(llhttp_t *p) { return static_cast<Client *>(p->data); }

  void flush_header() {
    partial_.headers[lower(field_)] = value_;
    field_.clear();
    value_.clear();
    in_value_ = false;
  }

  bool read_some(Clock::time_point deadline) {
    if (eof_ || fd_ < 0) return false;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return false;
    pollfd pfd{fd_, POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) return false;
    char buf[16384];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) {
      eof_ = true;
      llhttp_finish(&parser_);  // completes a body that runs to EOF
      return false;
    }
    raw_.append(buf, static_cast<size_t>(n));
    if (llhttp_execute(&parser_, buf, static_cast<size_t>(n)) != HPE_OK) parse_error_ = true;
    return true;
  }

  int fd_ = -1;
  bool connected_ = false;
  bool eof_ = false;
  bool parse_error_ = false;
  llhttp_settings_t settings_{};
  llhttp_t parser_{};
  Response partial_;
  std::vector<Response> done_;
  std::string field_, value_, raw_;
  bool in_value_ = false;
};

// A loop, a server on 127.0.0.1:0, and a ticking timer that lets the loop
// stop when a condition holds.
struct Harness {
  explicit Harness(HttpListenerConfig config = {}) {
    uv_loop_init(&loop);
    uv_timer_init(&loop, &tick);
    config.address = "127.0.0.1";
    config.port = 0;
    server = std::make_unique<HttpServer>(&loop, std::move(config));
  }

  ~Harness() {
    finish();
    server.reset();
    int rc = uv_loop_close(&loop);
    if (std::uncaught_exceptions() == 0) CHECK(rc == 0);
  }

  void start() {
    REQUIRE(server->listen() == 0);
    port = server->port();
    REQUIRE(port > 0);
  }

  // Runs the loop until `pred` holds (checked every millisecond) or timeout.
  bool run_until(const std::function<bool()> &pred, int timeout_ms = 3000) {
    auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    struct Ctx {
      const std::function<bool()> *pred;
      Clock::time_point deadline;
    } ctx{&pred, deadline};
    tick.data = &ctx;
    uv_timer_start(
        &tick,
        [](uv_timer_t *t) {
          auto *c = static_cast<Ctx *>(t->data);
          if ((*c->pred)() || Clock::now() > c->deadline) uv_stop(t->loop);
        },
        1, 1);
    if (!pred()) uv_run(&loop, UV_RUN_DEFAULT);
    uv_timer_stop(&tick);
    return pred();
  }

  // Runs `client` on a thread while the loop serves it.
  void run_client(const std::function<void()> &client) {
    std::atomic<bool> done{false};
    std::thread t([&] {
      client();
      done = true;
    });
    bool finished = run_until([&] { return done.load(); }, 8000);
    t.join();
    REQUIRE(finished);
  }

  // Closes everything; true when close's callback fired and uv_run returned.
  bool finish() {
    if (finished) return closed;
    finished = true;
    uv_close(reinterpret_cast<uv_handle_t *>(&tick), nullptr);
    server->close([this] { closed = true; });
    uv_run(&loop, UV_RUN_DEFAULT);
    return closed;
  }

  uv_loop_t loop{};
  uv_timer_t tick{};
  std::unique_ptr<HttpServer> server;
  int port = 0;
  bool finished = false;
  bool closed = false;
};

HttpListenerConfig small_limits() {
  HttpListenerConfig c;
  c.limits.max_header_bytes = 1024;
  c.limits.max_body_bytes = 16;
  c.limits.header_timeout_ms = 100;
  c.limits.body_timeout_ms = 100;
  c.limits.idle_timeout_ms = 100;
  return c;
}

void add_echo(Harness &h) {
  h.server->add_route("POST", "/echo", false, [&h](HttpExchange *ex, const HttpRequest &req) {
    h.server->respond(ex, 200, kText, req.body());
  });
}

}  // namespace

TEST_CASE("http: keep-alive serves two requests on one connection", "[http]") {
  Harness h;
  std::vector<size_t> connections_seen;
  h.server->add_route("GET", "/hello", false, [&](HttpExchange *ex, const HttpRequest &req) {
    connections_seen.push_back(h.server->connection_count());
    h.server->respond(ex, 200, kText, "hi " + std::string(req.query()));
  });
  h.start();
  std::vector<Response> r1, r2;
  h.run_client([&] {
    Client c(h.port);
    c.send("GET /hello?x=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    r1 = c.read(1);
    c.send("GET /hello?x=2 HTTP/1.1\r\nHost: t\r\n\r\n");
    r2 = c.read(1);
  });
  REQUIRE(r1.size() == 1);
  REQUIRE(r2.size() == 1);
  CHECK(r1[0].status == 200);
  CHECK(r1[0].body == "hi x=1");
  CHECK(r1[0].header("connection") == "keep-alive");
  CHECK(r1[0].header("content-length") == "6");
  CHECK(!r1[0].header("date").empty());
  CHECK(r2[0].body == "hi x=2");
  CHECK(connections_seen == std::vector<size_t>{1, 1});
}

TEST_CASE("http: pipelined requests are answered in order when handlers answer out of order",
          "[http]") {
  Harness h;
  std::vector<HttpExchange *> held;
  std::vector<std::string> paths;
  uv_timer_t later;
  uv_timer_init(&h.loop, &later);
  struct Ctx {
    Harness *h;
    std::vector<HttpExchange *> *held;
    std::vector<std::string> *paths;
  } ctx{&h, &held, &paths};
  later.data = &ctx;
  h.server->add_route("GET", "/p/", true, [&](HttpExchange *ex, const HttpRequest &req) {
    held.push_back(ex);
    paths.emplace_back(req.path());
    if (held.size() < 3) return;
    // Answer asynchronously, newest first.
    uv_timer_start(
        &later,
        [](uv_timer_t *t) {
          auto *c = static_cast<Ctx *>(t->data);
          for (size_t i = c->held->size(); i-- > 0;) {
            c->h->server->respond((*c->held)[i], 200, kText, (*c->paths)[i]);
          }
          c->held->clear();
        },
        10, 0);
  });
  h.start();
  std::vector<Response> got;
  h.run_client([&] {
    Client c(h.port);
    c.send(
        "GET /p/1 HTTP/1.1\r\nHost: t\r\n\r\n"
        "GET /p/2 HTTP/1.1\r\nHost: t\r\n\r\n"
        "GET /p/3 HTTP/1.1\r\nHost: t\r\n\r\n");
    got = c.read(3);
  });
  uv_close(reinterpret_cast<uv_handle_t *>(&later), nullptr);
  REQUIRE(got.size() == 3);
  CHECK(got[0].body == "/p/1");
  CHECK(got[1].body == "/p/2");
  CHECK(got[2].body == "/p/3");
  CHECK(h.server->in_flight() == 0);
}

TEST_CASE("http: pipeline depth is capped by max_pipeline", "[http]") {
  HttpListenerConfig config;
  config.limits.max_pipeline = 2;
  Harness h(config);
  std::vector<HttpExchange *> held;
  std::vector<std::string> paths;
  size_t max_in_flight = 0;
  h.server->add_route("GET", "/p/", true, [&](HttpExchange *ex, const HttpRequest &req) {
    held.push_back(ex);
    paths.emplace_back(req.path());
    max_in_flight = std::max(max_in_flight, h.server->in_flight());
  });
  h.start();
  std::atomic<bool> client_done{false};
  std::vector<Response> got;
  std::thread t([&] {
    Client c(h.port);
    std::string burst;
    for (int i = 1; i <= 5; ++i) burst += "GET /p/" + std::to_string(i) + " HTTP/1.1\r\n\r\n";
    c.send(burst);
    got = c.read(5);
    client_done = true;
  });
  // Answer whatever is held, a batch at a time, newest first.
  while (!client_done) {
    h.run_until([&] { return held.size() >= 2 || client_done.load(); }, 200);
    for (size_t i = held.size(); i-- > 0;) h.server->respond(held[i], 200, kText, paths[i]);
    held.clear();
    paths.clear();
  }
  t.join();
  REQUIRE(got.size() == 5);
  for (int i = 0; i < 5; ++i) CHECK(got[i].body == "/p/" + std::to_string(i + 1));
  CHECK(max_in_flight == 2);
}

TEST_CASE("http: chunked request bodies are decoded", "[http]") {
  Harness h;
  add_echo(h);
  h.start();
  std::vector<Response> got;
  h.run_client([&] {
    Client c(h.port);
    c.send("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    c.send("6\r\n world\r\n0\r\n\r\n");
    got = c.read(1);
  });
  REQUIRE(got.size() == 1);
  CHECK(got[0].status == 200);
  CHECK(got[0].body == "hello world");
}

TEST_CASE("http: routing picks exact over prefix and the longest prefix", "[http]") {
  Harness h;
  auto answer = [&](std::string name) {
    return [&h, name](HttpExchange *ex, const HttpRequest &) {
      h.server->respond(ex, 200, kText, name);
    };
  };
  REQUIRE(h.server->add_route("GET", "/api/chat", false, answer("exact")) == 0);
  REQUIRE(h.server->add_route("GET", "/api/", true, answer("short")) == 0);
  REQUIRE(h.server->add_route("GET", "/api/chat/", true, answer("long")) == 0);
  CHECK(h.server->add_route("GET", "/api/", true, answer("dup")) == -EEXIST);
  h.start();
  std::vector<Response> got;
  h.run_client([&] {
    Client c(h.port);
    c.send(
        "GET /api/chat HTTP/1.1\r\n\r\nGET /api/chat/x?q=1 HTTP/1.1\r\n\r\n"
        "GET /api/other HTTP/1.1\r\n\r\n");
    got = c.read(3);
  });
  REQUIRE(got.size() == 3);
  CHECK(got[0].body == "exact");
  CHECK(got[1].body == "long");
  CHECK(got[2].body == "short");
}

TEST_CASE("http: unknown path is 404 with a JSON body", "[http]") {
  Harness h;
  h.start();
  std::vector<Response> got;
  h.run_client([&] {
    Client c(h.port);
    c.send("GET /nope HTTP/1.1\r\nHost: t\r\n\r\n");
    got = c.read(1);
  });
  REQUIRE(got.size() == 1);
  CHECK(got[0].status == 404);
  CHECK(got[0].header("content-type") == "application/json");
  CHECK(got[0].body == R"({"error":"not found"})");
  CHECK(got[0].header("connection") == "keep-alive");
}

TEST_CASE("http: known path with another method is 405 with Allow", "[http]") {
  Harness h;
  auto ok = [&](HttpExchange *ex, const HttpRequest &) { h.server->respond(ex, 200, kText, ""); };
  h.server->add_route("GET", "/r", false, ok);
  h.server->add_route("POST", "/r", false, ok);
  h.start();
  std::vector<Response> got;
  h.run_client([&] {
    Client c(h.port);
    c.send("DELETE /r HTTP/1.1\r\nHost: t\r\n\r\n");
    got = c.read(1);
  });
  REQUIRE(got.size() == 1);
  CHECK(got[0].status == 405);
  CHECK(got[0].header("allow") == "GET, POST");
  CHECK(got[0].header("content-type") == "application/json");
}

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

TEST_CASE("http: CORS preflight and origin echo", "[http]") {
  HttpListenerConfig config;
  config.cors.allowed_origins = {"https://app.example"};
  Harness h(config);
  h.server->add_route("GET", "/data", false, [&](HttpExchange *ex, const HttpRequest &) {
    h.server->respond(ex, 200, kText, "d");
  });
  h.start();
  std::vector<Response> got;
  h.run_client([&] {
    Client c(h.port);
    c.send(
        "OPTIONS /anything HTTP/1.1\r\nOrigin: https://app.example\r\n"
        "Access-Control-Request-Method: POST\r\n\r\n"
        "OPTIONS /data HTTP/1.1\r\nOrigin: https://evil.example\r\n"
        "Access-Control-Request-Method: GET\r\n\r\n"
        "GET /data HTTP/1.1\r\nOrigin: https://app.example\r\n\r\n"
        "GET /data HTTP/1.1\r\nOrigin: https://evil.example\r\n\r\n");
    got = c.read(4);
  });
  REQUIRE(got.size() == 4);
  CHECK(got[0].status == 204);
  CHECK(got[0].header("access-control-allow-origin") == "https://app.example");
  CHECK(got[0].header("access-control-allow-methods") == "GET, POST, OPTIONS");
  CHECK(got[0].header("access-control-allow-headers") == "Content-Type, Authorization");
  CHECK(got[0].header("access-control-max-age") == "600");
  CHECK(got[0].header("vary") == "Origin");
  CHECK(got[1].status == 403);
  CHECK(got[1].header("access-control-allow-origin").empty());
  CHECK(got[2].status == 200);
  CHECK(got[2].header("access-control-allow-origin") == "https://app.example");
  CHECK(got[2].header("vary") == "Origin");
  CHECK(got[3].status == 200);
  CHECK(got[3].header("access-control-allow-origin").empty());
}

TEST_CASE("http: without CORS, OPTIONS goes through normal routing", "[http]") {
  Harness h;
  h.server->add_route("GET", "/data", false, [&](HttpExchange *ex, const HttpRequest &) {
    h.server->respond(ex, 200, kText, "d");
  });
  h.start();
  std::vector<Response> got;
  h.run_client([&] {
    Client c(h.port);
    c.send(
        "OPTIONS /data HTTP/1.1\r\nOrigin: https://app.example\r\n"
        "Access-Control-Request-Method: GET\r\n\r\n");
    got = c.read(1);
  });
  REQUIRE(got.size() == 1);
  CHECK(got[0].status == 405);
  CHECK(got[0].header("access-control-allow-origin").empty());
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

TEST_CASE("http: client disconnect aborts pending exchanges; a later answer is safe", "[http]") {
  Harness h;
  HttpExchange *held = nullptr;
  const HttpRequest *held_req = nullptr;
  int aborts = 0;
  std::atomic<bool> received{false};
  h.server->add_route("GET", "/slow", false, [&](HttpExchange *ex, const HttpRequest &req) {
    held = ex;
    held_req = &req;
    h.server->set_abort_callback(ex, [&] { ++aborts; });
    received = true;
  });
  h.start();
  h.run_client([&] {
    Client c(h.port);
    c.send("GET /slow HTTP/1.1\r\n\r\n");
    while (!received) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });  // the client closes here
  REQUIRE(held != nullptr);
  REQUIRE(h.run_until([&] { return aborts > 0; }));
  CHECK(h.server->aborted(held));
  CHECK(h.server->in_flight() == 1);
  CHECK(h.server->connection_count() == 0);
  // The request stays valid until answered.
  CHECK(held_req->path() == "/slow");
  h.server->respond(held, 200, kText, "too late");
  CHECK(h.server->in_flight() == 0);
  h.run_until([] { return false; }, 20);
  CHECK(aborts == 1);
}

TEST_CASE("http: streaming answer is chunked and holds back later pipelined answers", "[http]") {
  Harness h;
  HttpExchange *stream = nullptr;
  uv_timer_t later;
  uv_timer_init(&h.loop, &later);
  struct Ctx {
    Harness *h;
    HttpExchange **stream;
  } ctx{&h, &stream};
  later.data = &ctx;
  h.server->add_route("GET", "/stream", false, [&](HttpExchange *ex, const HttpRequest &) {
    stream = ex;
    const HttpHeader sse[] = {{"Content-Type", "text/event-stream"}};
    h.server->stream_begin(ex, 200, sse);
    h.server->stream_write(ex, "data: a\n\n");
    uv_timer_start(
        &later,
        [](uv_timer_t *t) {
          auto *c = static_cast<Ctx *>(t->data);
          c->h->server->stream_write(*c->stream, "data: b\n\n");
          c->h->server->stream_end(*c->stream);
        },
        20, 0);
  });
  h.server->add_route("GET", "/plain", false, [&](HttpExchange *ex, const HttpRequest &) {
    h.server->respond(ex, 200, kText, "plain");
  });
  h.start();
  std::vector<Response> got;
  bool parse_error = true;
  h.run_client([&] {
    Client c(h.port);
    c.send("GET /stream HTTP/1.1\r\n\r\nGET /plain HTTP/1.1\r\n\r\n");
    got = c.read(2);
    parse_error = c.parse_error();
  });
  uv_close(reinterpret_cast<uv_handle_t *>(&later), nullptr);
  CHECK_FALSE(parse_error);
  REQUIRE(got.size() == 2);
  CHECK(got[0].header("transfer-encoding") == "chunked");
  CHECK(got[0].header("content-type") == "text/event-stream");
  CHECK(got[0].body == "data: a\n\ndata: b\n\n");
  CHECK(got[1].body == "plain");
  CHECK(h.server->in_flight() == 0);
}

TEST_CASE("http: stop_accepting drains, close completes and uv_run returns", "[http]") {
  Harness h;
  HttpExchange *slow = nullptr;
  h.server->add_route("GET", "/fast", false, [&](HttpExchange *ex, const HttpRequest &) {
    h.server->respond(ex, 200, kText, "fast");
  });
  h.server->add_route("GET", "/slow", false,
                      [&](HttpExchange *ex, const HttpRequest &) { slow = ex; });
  h.start();
  std::atomic<int> step{0};
  std::vector<Response> fast, slow_answer;
  bool idle_closed = false, busy_closed = false, refused = false;
  std::thread t([&] {
    Client idle(h.port);
    idle.send("GET /fast HTTP/1.1\r\n\r\n");
    fast = idle.read(1);
    Client busy(h.port);
    busy.send("GET /slow HTTP/1.1\r\n\r\n");
    step = 1;
    while (step != 2) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    idle_closed = idle.wait_closed(1000);
    refused = !Client(h.port).connected();
    slow_answer = busy.read(1);
    busy_closed = busy.wait_closed(1000);
    step = 3;
  });
  REQUIRE(h.run_until([&] { return step == 1 && slow != nullptr; }));
  h.server->stop_accepting();
  step = 2;
  h.run_until([] { return false; }, 50);  // the idle client sees its close
  CHECK(h.server->in_flight() == 1);
  h.server->respond(slow, 200, kText, "slow");
  bool finished = h.run_until([&] { return step == 3; });
  t.join();
  REQUIRE(finished);
  REQUIRE(fast.size() == 1);
  CHECK(idle_closed);
  CHECK(refused);
  REQUIRE(slow_answer.size() == 1);
  CHECK(slow_answer[0].body == "slow");
  CHECK(slow_answer[0].header("connection") == "close");
  CHECK(busy_closed);
  CHECK(h.finish());  // close's callback fired and uv_run returned
}

TEST_CASE("http: close with a pending exchange aborts it; answering later frees it", "[http]") {
  Harness h;
  HttpExchange *held = nullptr;
  const HttpRequest *held_req = nullptr;
  bool aborted = false;
  std::atomic<bool> received{false};
  std::atomic<bool> release{false};
  h.server->add_route("GET", "/slow", false, [&](HttpExchange *ex, const HttpRequest &req) {
    held = ex;
    held_req = &req;
    h.server->set_abort_callback(ex, [&] { aborted = true; });
    received = true;
  });
  h.start();
  std::thread t([&] {
    Client c(h.port);
    c.send("GET /slow HTTP/1.1\r\n\r\n");
    while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  REQUIRE(h.run_until([&] { return received.load(); }));
  CHECK(h.finish());
  CHECK(aborted);
  CHECK(h.server->in_flight() == 1);
  CHECK(held_req->path() == "/slow");  // still valid until answered
  h.server->respond(held, 200, kText, "late");
  CHECK(h.server->in_flight() == 0);
  release = true;
  t.join();
}

TEST_CASE("http: a throwing handler gets a 500 answer", "[http]") {
  Harness h;
  h.server->add_route("GET", "/boom", false, [](HttpExchange *, const HttpRequest &) {
    throw std::runtime_error("boom");
  });
  h.start();
  std::vector<Response> got;
  h.run_client([&] {
    Client c(h.port);
    c.send("GET /boom HTTP/1.1\r\n\r\n");
    got = c.read(1);
  });
  REQUIRE(got.size() == 1);
  CHECK(got[0].status == 500);
  CHECK(h.server->in_flight() == 0);
}

}  // namespace cg
