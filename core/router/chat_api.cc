#include "router/chat_api.h"

#include <charconv>
#include <memory>
#include <string>

#include "base/json.h"
#include "base/loop.h"
#include "router/chat_request.h"
#include "router/router.h"

namespace cg {
namespace {

const HttpHeader kJson[] = {{"Content-Type", "application/json"}};

// A reply token back to the number handle_chat wrote into it.
uint64_t token_id(std::string_view token) {
  uint64_t id = 0;
  std::from_chars(token.data(), token.data() + token.size(), id);
  return id;
}

}  // namespace

ChatApi::ChatApi(HttpServer &server, Router &router, std::string name)
    : server_(server), router_(router), name_(std::move(name)) {}

int ChatApi::install(std::string_view path, Guard guard) {
  guard_ = std::move(guard);
  return server_.add_route("POST", path, false, [this](HttpExchange *ex, const HttpRequest &req) {
    if (guard_ && !guard_(ex, req)) return;
    handle_chat(ex, req);
  });
}

void ChatApi::answer_error(HttpExchange *ex, int status, std::string_view message) {
  std::string body = "{\"error\":";
  json_append_string(body, message);
  body += '}';
  server_.respond(ex, status, kJson, body);
}

void ChatApi::handle_chat(HttpExchange *ex, const HttpRequest &req) {
  ChatRequest r;
  if (std::string err = chat_request_parse(parser_, req.body(), &r); !err.empty()) {
    answer_error(ex, 400, err);
    return;
  }
  InboundMessage msg;
  msg.channel = this;
  msg.conversation_type = CG_CONV_DIRECT;
  msg.mentioned = true;
  msg.stream = r.stream;
  msg.id = r.message_id;
  msg.dedupe_key = r.message_id;
  msg.sender_id = r.user_id;
  msg.sender_name = r.user_id;
  msg.conversation_id = r.conversation_id.empty() ? r.user_id : r.conversation_id;
  msg.text = r.query;
  const uint64_t token = next_token_++;
  msg.reply_token = std::to_string(token);
  const int rc = router_.submit(std::move(msg));
  if (rc == CG_EBUSY) {
    answer_error(ex, 503, "busy, try again later");
    return;
  }
  if (rc != 0) {
    answer_error(ex, 503, "shutting down");
    return;
  }
  // If the client leaves first, the exchange stays here until the router's
  // answer frees it (the server drops that answer); the router is told, so
  // it cancels the model call and stores no turn.
  waiting_.emplace(token, Waiting{ex, r.stream, false, 0});
  server_.set_abort_callback(ex, [this, token] { router_.abandon(this, std::to_string(token)); });
}

ChatApi::Waiting *ChatApi::find(std::string_view token) {
  auto it = waiting_.find(token_id(token));
  return it == waiting_.end() ? nullptr : &it->second;
}

bool ChatApi::take(std::string_view token, Waiting *out) {
  auto it = waiting_.find(token_id(token));
  if (it == waiting_.end()) return false;
  *out = it->second;
  waiting_.erase(it);
  return true;
}

void ChatApi::send_event(Waiting &w, std::string_view event) {
  if (!w.begun) {
    static const HttpHeader kSse[] = {{"Content-Type", "text/event-stream"},
                                      {"Cache-Control", "no-cache"}};
    server_.stream_begin(w.ex, 200, kSse);
    w.begun = true;
  }
  server_.stream_write(w.ex, event);
}

int ChatApi::send(const cg_reply_t &reply, cg_done_cb done, void *arg) {
  const std::string_view token(reply.reply_token.ptr, reply.reply_token.len);
  const std::string_view text(reply.text.ptr, reply.text.len);
  int status = 0;
  if (!(reply.flags & CG_REPLY_FINAL)) {
    // A partial answer: the text so far. Only the new part goes out.
    Waiting *w = find(token);
    if (w == nullptr || !w->stream) return CG_ENOTSUP;
    if (text.size() > w->sent) {
      std::string event = "data: {\"delta\":";
      json_append_string(event, text.substr(w->sent));
      event += "}\n\n";
      send_event(*w, event);
      w->sent = text.size();
    }
  } else {
    Waiting w;
    if (!take(token, &w)) {
      status = CG_ECLOSED;
    } else if (w.stream) {
      std::string event = "data: {\"answer\":";
      json_append_string(event, text);
      if (reply.flags & CG_REPLY_ERROR) event += ",\"error\":\"model_unavailable\"";
      event += ",\"done\":true}\n\n";
      send_event(w, event);
      server_.stream_end(w.ex);
    } else {
      std::string body = "{\"answer\":";
      json_append_string(body, text);
      // A failed answer is still shown to the user, with a status that says so.
      if (reply.flags & CG_REPLY_ERROR) body += ",\"error\":\"model_unavailable\"";
      body += '}';
      server_.respond(w.ex, (reply.flags & CG_REPLY_ERROR) ? 503 : 200, kJson, body);
    }
  }
  // Completion never runs inside send.
  struct Done {
    cg_done_cb fn;
    void *arg;
    int status;
  };
  auto d = std::make_unique<Done>(Done{done, arg, status});
  router_.loop().defer(
      [](void *p) {
        std::unique_ptr<Done> owned(static_cast<Done *>(p));
        owned->fn(owned->arg, owned->status);
      },
      d.release());
  return 0;
}

void ChatApi::on_dropped(const InboundMessage &msg, std::string_view reason) {
  Waiting w;
  if (!take(msg.reply_token, &w)) return;
  const bool duplicate = reason == "duplicate", limited = reason == "rate_limited";
  const int status = duplicate ? 409 : limited ? 429 : 503;
  const std::string_view text = duplicate ? "duplicate messageId: this message was already answered"
                                : limited ? "too many messages; slow down and try again in a moment"
                                          : reason;
  if (w.begun) {
    std::string event = "data: {\"error\":";
    json_append_string(event, text);
    event += ",\"done\":true}\n\n";
    server_.stream_write(w.ex, event);
    server_.stream_end(w.ex);
    return;
  }
  answer_error(w.ex, status, text);
}

}  // namespace cg
