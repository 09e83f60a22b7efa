// The HTTP chat API, a built-in channel named "api":
//   POST /api/chat  {"userId","query"[,"conversationId"][,"messageId"][,"stream"]}
//                   -> {"answer"}, or with "stream": true server-sent events:
//                   data: {"delta":"..."} ... then data: {"answer":"...","done":true}
// The admin listener runs a second one, the "web" channel of the admin
// page, on its own path behind the admin auth (see admin/admin_auth.cc).
//
// THREAD: not thread-safe; loop thread only.
#pragma once

#include <simdjson.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "host/channel_port.h"
#include "net/http_server.h"

namespace cg {

class Router;

class ChatApi final : public ChannelPort {
 public:
  // Refuses a request (answering it) by returning false.
  using Guard = std::function<bool(HttpExchange *ex, const HttpRequest &req)>;

  ChatApi(HttpServer &server, Router &router, std::string name = "api");
  // Registers POST `path`; `guard`, when given, runs first.
  int install(std::string_view path = "/api/chat", Guard guard = {});

  std::string_view name() const override { return name_; }
  uint32_t capabilities() const override { return 0; }
  bool answers_every_message() const override { return true; }
  int send(const cg_reply_t &reply, cg_done_cb done, void *arg) override;
  void on_dropped(const InboundMessage &msg, std::string_view reason) override;

  size_t waiting() const { return waiting_.size(); }

 private:
  // A request waiting for its answer.
  struct Waiting {
    HttpExchange *ex = nullptr;
    bool stream = false;  // answer as server-sent events
    bool begun = false;   // the event stream's head went out
    size_t sent = 0;      // bytes of the answer already sent as deltas
  };
  void handle_chat(HttpExchange *ex, const HttpRequest &req);
  void answer_error(HttpExchange *ex, int status, std::string_view message);
  void send_event(Waiting &w, std::string_view event);
  Waiting *find(std::string_view token);
  bool take(std::string_view token, Waiting *out);

  HttpServer &server_;
  Router &router_;
  std::string name_;
  Guard guard_;
  simdjson::dom::parser parser_;
  uint64_t next_token_ = 1;
  // Reply token -> the exchange waiting for its answer.
  std::unordered_map<uint64_t, Waiting> waiting_;
};

}  // namespace cg
