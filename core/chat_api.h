// The HTTP chat API, a built-in channel named "api":
//   POST /api/chat  {"userId","query"[,"conversationId"][,"messageId"]} -> {"answer"}
//   GET  /healthz   {"status":"ok"}
//
// THREAD: not thread-safe; loop thread only.
#pragma once

#include <simdjson.h>

#include <cstdint>
#include <string_view>
#include <unordered_map>

#include "channel.h"
#include "http_server.h"

namespace cg {

class Router;

class ChatApi final : public Channel {
 public:
  ChatApi(HttpServer &server, Router &router);
  // Registers the routes.
  int install();

  std::string_view name() const override { return "api"; }
  uint32_t capabilities() const override { return 0; }
  int send(const cg_reply_t &reply, cg_done_cb done, void *arg) override;
  void on_dropped(const InboundMessage &msg, std::string_view reason) override;

  size_t waiting() const { return waiting_.size(); }

 private:
  void handle_chat(HttpExchange *ex, const HttpRequest &req);
  void answer_error(HttpExchange *ex, int status, std::string_view message);
  HttpExchange *take(std::string_view token);

  HttpServer &server_;
  Router &router_;
  simdjson::dom::parser parser_;
  uint64_t next_token_ = 1;
  // Reply token -> the exchange waiting for its answer.
  std::unordered_map<uint64_t, HttpExchange *> waiting_;
};

}  // namespace cg
