// Test support for the HTTP server tests: a blocking client on real sockets
// (responses parsed with llhttp) and a harness that runs the server's uv
// loop on the test thread. Client threads only collect results; assertions
// run on the test thread (Catch2 is not thread-safe).
#pragma once

#include <arpa/inet.h>
#include <llhttp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cctype>
#include <chrono>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "net/http_server.h"

namespace cg::http_test {

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

inline std::string lower(std::string s) {
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

inline HttpListenerConfig small_limits() {
  HttpListenerConfig c;
  c.limits.max_header_bytes = 1024;
  c.limits.max_body_bytes = 16;
  c.limits.header_timeout_ms = 100;
  c.limits.body_timeout_ms = 100;
  c.limits.idle_timeout_ms = 100;
  return c;
}

inline void add_echo(Harness &h) {
  h.server->add_route("POST", "/echo", false, [&h](HttpExchange *ex, const HttpRequest &req) {
    h.server->respond(ex, 200, kText, req.body());
  });
}

}  // namespace cg::http_test
