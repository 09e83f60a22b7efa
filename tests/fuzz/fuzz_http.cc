// The HTTP server as a client meets it: each input is sent over a real
// loopback connection to an HttpServer (llhttp, our connection code,
// pipelining, routing, CORS, the access policy with X-Forwarded-For), and
// the connection is read until the server closes it.
#include <uv.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "net/http_server.h"

namespace {

using cg::HttpExchange;
using cg::HttpHeader;
using cg::HttpRequest;
using cg::HttpServer;

constexpr HttpHeader kText[] = {{"Content-Type", "text/plain"}};

struct World {
  uv_loop_t loop{};
  std::unique_ptr<HttpServer> server;
  int port = 0;
};

World &world() {
  static World *w = [] {
    auto *w = new World;  // lives for the whole run
    uv_loop_init(&w->loop);
    cg::HttpListenerConfig cfg;
    cfg.name = "fuzz";
    cfg.address = "127.0.0.1";
    cfg.port = 0;
    cfg.limits.max_body_bytes = 4096;
    cfg.limits.max_header_bytes = 2048;
    cfg.limits.max_pipeline = 4;
    cfg.cors.allowed_origins = {"https://chat.example"};
    cfg.access.trusted_proxies = {"127.0.0.1/32"};
    cfg.access.routes = {{"/private", {"10.0.0.0/8", "2001:db8::/32"}}};
    w->server = std::make_unique<HttpServer>(&w->loop, cfg);
    HttpServer *s = w->server.get();
    s->add_route("POST", "/echo", false, [s](HttpExchange *ex, const HttpRequest &req) {
      s->respond(ex, 200, kText, req.body());
    });
    s->add_route("GET", "/h", false, [s](HttpExchange *ex, const HttpRequest &req) {
      std::string out(req.remote_addr());
      out += ' ';
      out += req.header("X-Forwarded-For");
      s->respond(ex, 200, kText, out);
    });
    s->add_route("GET", "/stream/", true, [s](HttpExchange *ex, const HttpRequest &req) {
      s->stream_begin(ex, 200, kText);
      s->stream_write(ex, req.path());
      s->stream_write(ex, req.query());
      s->stream_end(ex);
    });
    s->add_route("GET", "/private", true,
                 [s](HttpExchange *ex, const HttpRequest &) { s->respond(ex, 204, {}, {}); });
    if (s->listen() != 0) std::abort();
    w->port = s->port();
    return w;
  }();
  return *w;
}

struct Client {
  uv_tcp_t tcp{};
  uv_connect_t connect{};
  uv_write_t write{};
  uv_shutdown_t shutdown{};
  std::string data;
  char buf[65536];
  bool closed = false;
};

void on_close(uv_handle_t *h) { static_cast<Client *>(h->data)->closed = true; }

void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *) {
  if (n < 0) uv_close(reinterpret_cast<uv_handle_t *>(s), on_close);
}

void on_alloc(uv_handle_t *h, size_t, uv_buf_t *b) {
  auto *c = static_cast<Client *>(h->data);
  *b = uv_buf_init(c->buf, sizeof c->buf);
}

void on_connect(uv_connect_t *req, int status) {
  auto *c = static_cast<Client *>(req->data);
  auto *stream = reinterpret_cast<uv_stream_t *>(&c->tcp);
  if (status < 0) {
    uv_close(reinterpret_cast<uv_handle_t *>(&c->tcp), on_close);
    return;
  }
  uv_buf_t b = uv_buf_init(c->data.data(), static_cast<unsigned>(c->data.size()));
  uv_write(&c->write, stream, &b, 1, [](uv_write_t *, int) {});
  // The end of the input: the server answers what it parsed, then closes.
  uv_shutdown(&c->shutdown, stream, [](uv_shutdown_t *, int) {});
  uv_read_start(stream, on_alloc, on_read);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  World &w = world();
  Client c;
  c.data.assign(reinterpret_cast<const char *>(data), size);
  c.tcp.data = &c;
  c.connect.data = &c;
  uv_tcp_init(&w.loop, &c.tcp);
  sockaddr_in addr{};
  uv_ip4_addr("127.0.0.1", w.port, &addr);
  uv_tcp_connect(&c.connect, &c.tcp, reinterpret_cast<const sockaddr *>(&addr), on_connect);
  while (!c.closed) uv_run(&w.loop, UV_RUN_ONCE);
  return 0;
}
