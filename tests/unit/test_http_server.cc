// HttpServer over real sockets: keep-alive, pipelining order, routing,
// CORS, streaming, aborts and the graceful stop.
#include "http_test_support.h"

namespace cg {

using namespace http_test;

TEST_CASE("http: keep-alive serves two requests on one connection", "[http]") {
  Harness h;
  std::vector<size_t> connections_seen;
  std::string remote;
  h.server->add_route("GET", "/hello", false, [&](HttpExchange *ex, const HttpRequest &req) {
    connections_seen.push_back(h.server->connection_count());
    remote = req.remote_addr();
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
  CHECK(remote == "127.0.0.1");
}

TEST_CASE("http: request head fields reach the handler", "[http]") {
  Harness h;
  std::string method, path, query, agent, missing = "unset";
  size_t header_count = 0;
  h.server->add_route("PUT", "/item", false, [&](HttpExchange *ex, const HttpRequest &req) {
    method = req.method();
    path = req.path();
    query = req.query();
    agent = req.header("user-agent");
    missing = req.header("X-Missing");
    header_count = req.headers().size();
    h.server->respond(ex, 201, {}, "");
  });
  h.start();
  std::vector<Response> got;
  h.run_client([&] {
    Client c(h.port);
    c.send("PUT /item?id=7&x=y HTTP/1.1\r\nHost: t\r\nUser-Agent:  probe/1.0  \r\n\r\n");
    got = c.read(1);
  });
  REQUIRE(got.size() == 1);
  CHECK(got[0].status == 201);
  CHECK(method == "PUT");
  CHECK(path == "/item");
  CHECK(query == "id=7&x=y");
  CHECK(agent == "probe/1.0");
  CHECK(missing.empty());
  CHECK(header_count == 2);
}

TEST_CASE("http: Expect 100-continue gets an interim answer", "[http]") {
  Harness h;
  add_echo(h);
  h.start();
  std::vector<Response> got;
  h.run_client([&] {
    Client c(h.port);
    c.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    auto interim = c.read(1, 1000);  // a client waits for this before sending the body
    c.send("hello");
    got = c.read(1);
    got.insert(got.begin(), interim.begin(), interim.end());
  });
  REQUIRE(got.size() == 2);
  CHECK(got[0].status == 100);
  CHECK(got[1].status == 200);
  CHECK(got[1].body == "hello");
}

TEST_CASE("http: HEAD answers carry no body, and fall back to the GET route", "[http]") {
  Harness h;
  h.server->add_route("HEAD", "/doc", false, [&](HttpExchange *ex, const HttpRequest &) {
    h.server->respond(ex, 200, kText, "hello");
  });
  h.server->add_route("GET", "/doc", false, [&](HttpExchange *ex, const HttpRequest &) {
    h.server->respond(ex, 200, kText, "world!");
  });
  std::string seen_method;
  h.server->add_route("GET", "/only-get", false, [&](HttpExchange *ex, const HttpRequest &req) {
    seen_method = req.method();
    h.server->respond(ex, 200, kText, "get-body");
  });
  h.start();
  std::string raw;
  h.run_client([&] {
    Client c(h.port);
    c.send("HEAD /doc HTTP/1.1\r\n\r\n");
    c.wait_closed(100);  // collects what arrives
    c.send("GET /doc HTTP/1.1\r\n\r\n");
    c.wait_closed(100);
    c.send("HEAD /only-get HTTP/1.1\r\nConnection: close\r\n\r\n");
    c.wait_closed(1000);
    raw = c.raw();
  });
  auto first = raw.find("HTTP/1.1 200 OK\r\n");
  auto second = raw.find("HTTP/1.1 200 OK\r\n", first + 1);
  REQUIRE(second != std::string::npos);
  std::string head1 = raw.substr(0, second);
  CHECK(head1.find("Content-Length: 5\r\n") != std::string::npos);
  CHECK(head1.ends_with("\r\n\r\n"));  // no body
  auto third = raw.find("HTTP/1.1 200 OK\r\n", second + 1);
  REQUIRE(third != std::string::npos);
  CHECK(raw.substr(second, third - second).ends_with("\r\n\r\nworld!"));
  CHECK(raw.find("hello") == std::string::npos);
  CHECK(raw.substr(third).find("Content-Length: 8\r\n") != std::string::npos);
  CHECK(raw.find("get-body") == std::string::npos);
  CHECK(raw.ends_with("\r\n\r\n"));
  CHECK(seen_method == "HEAD");
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
        "OPTIONS /data HTTP/1.1\r\nOrigin: https://app.example\r\n"
        "Access-Control-Request-Method: GET\r\n"
        "Access-Control-Request-Headers: content-type, AUTHORIZATION\r\n\r\n"
        "OPTIONS /data HTTP/1.1\r\nOrigin: https://evil.example\r\n"
        "Access-Control-Request-Method: GET\r\n\r\n"
        "GET /data HTTP/1.1\r\nOrigin: https://app.example\r\n\r\n"
        "GET /data HTTP/1.1\r\nOrigin: https://evil.example\r\n\r\n"
        // A method the policy does not allow, a header it does not allow,
        // and a path no route serves.
        "OPTIONS /data HTTP/1.1\r\nOrigin: https://app.example\r\n"
        "Access-Control-Request-Method: DELETE\r\n\r\n"
        "OPTIONS /data HTTP/1.1\r\nOrigin: https://app.example\r\n"
        "Access-Control-Request-Method: GET\r\n"
        "Access-Control-Request-Headers: Content-Type, X-Secret\r\n\r\n"
        "OPTIONS /nowhere HTTP/1.1\r\nOrigin: https://app.example\r\n"
        "Access-Control-Request-Method: GET\r\n\r\n");
    got = c.read(7);
  });
  REQUIRE(got.size() == 7);
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
  CHECK(got[4].status == 403);
  CHECK(got[4].header("access-control-allow-methods").empty());
  CHECK(got[5].status == 403);
  CHECK(got[6].status == 404);
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
  int late = 0;
  h.server->set_abort_callback(held, [&] { ++late; });  // already gone: runs at once
  CHECK(late == 1);
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
    // An idle connection lingers up to kDrainLingerMs, then closes.
    idle_closed = idle.wait_closed(HttpServer::kDrainLingerMs + 1000);
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

TEST_CASE("http: a request on an idle connection that lingers in a drain is served, then closes",
          "[http]") {
  Harness h;
  h.server->add_route("GET", "/fast", false, [&](HttpExchange *ex, const HttpRequest &) {
    h.server->respond(ex, 200, kText, "fast");
  });
  h.start();
  std::atomic<int> step{0};
  std::vector<Response> first, second;
  bool closed = false;
  std::thread t([&] {
    Client c(h.port);
    c.send("GET /fast HTTP/1.1\r\n\r\n");
    first = c.read(1);
    step = 1;
    while (step != 2) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    // The client did not see the drain coming: its next request, sent on
    // the connection it holds, must be answered rather than lost.
    c.send("GET /fast HTTP/1.1\r\n\r\n");
    second = c.read(1);
    closed = c.wait_closed(1000);
    step = 3;
  });
  REQUIRE(h.run_until([&] { return step == 1; }));
  h.server->stop_accepting();
  step = 2;
  const bool finished = h.run_until([&] { return step == 3; });
  t.join();
  REQUIRE(finished);
  REQUIRE(first.size() == 1);
  CHECK(first[0].header("connection") != "close");
  REQUIRE(second.size() == 1);
  CHECK(second[0].body == "fast");
  CHECK(second[0].header("connection") == "close");
  CHECK(closed);
  CHECK(h.finish());
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
