// The admin API's actions: reset a conversation, reload the config, send a
// message through a channel.
#include <chatgate/chatgate.h>
#include <simdjson.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <string>

#include "admin/admin.h"
#include "admin/admin_internal.h"
#include "base/json.h"
#include "base/metrics.h"
#include "host/message_sink.h"
#include "router/conversations_port.h"

namespace cg {

void AdminApi::reset_conversation(HttpServer &server, HttpExchange *ex, const HttpRequest &req) {
  if (!authorize(server, ex, req, true)) return;
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  std::string_view channel, conversation;
  if (parser.parse(req.body().data(), req.body().size()).get(doc) != simdjson::SUCCESS ||
      doc["channel"].get(channel) != simdjson::SUCCESS ||
      doc["conversation"].get(conversation) != simdjson::SUCCESS) {
    respond_json(server, ex, 400,
                 R"({"error":"expected {\"channel\": ..., \"conversation\": ...}"})");
    return;
  }
  // The exchange stays valid until answered; the callback answers it.
  const int rc =
      conversations_.reset_conversation(channel, conversation, [&server, ex](int status) {
        if (status == 0 || status == CG_ENOENT) {
          respond_json(server, ex, 200, R"({"reset":true})");
        } else {
          respond_json(
              server, ex, 503,
              "{\"error\":" + json_quote(std::string("cache: ") + cg_strerror(status)) + "}");
        }
      });
  if (rc != 0) {
    respond_json(server, ex, 503,
                 "{\"error\":" + json_quote(std::string("cache: ") + cg_strerror(rc)) + "}");
  }
}

void AdminApi::reload(HttpServer &server, HttpExchange *ex, const HttpRequest &req) {
  if (!authorize(server, ex, req, true)) return;
  if (!reload_) {
    respond_json(server, ex, 503, R"({"error":"reload is not available"})");
    return;
  }
  // The exchange stays valid until answered; the completion answers it.
  reload_([&server, ex](int status, const std::string &json) {
    respond_json(server, ex, status, json);
  });
}

namespace {

// One POST /admin/api/send waiting for its channel's done.
struct SendCall {
  HttpServer *server;
  HttpExchange *ex;
  std::string channel;
  double *ok;
  double *failed;
};

void send_done(void *arg, int status) {
  std::unique_ptr<SendCall> call(static_cast<SendCall *>(arg));
  if (status == 0) {
    if (call->ok != nullptr) *call->ok += 1;
    respond_json(*call->server, call->ex, 200,
                 "{\"sent\":true,\"channel\":" + json_quote(call->channel) + "}");
    return;
  }
  if (call->failed != nullptr) *call->failed += 1;
  const std::string why =
      "channel '" + call->channel + "' could not deliver: " + cg_strerror(status);
  spdlog::warn("admin send: {}", why);
  respond_json(*call->server, call->ex, 502, "{\"error\":" + json_quote(why) + "}");
}

}  // namespace

void AdminApi::send(HttpServer &server, HttpExchange *ex, const HttpRequest &req) {
  if (!authorize(server, ex, req, true)) return;
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  std::string_view channel, conversation, text, type = "direct", format = "text";
  auto optional = [&doc](const char *key, std::string_view *out) {
    const auto field = doc[key];
    return field.error() == simdjson::NO_SUCH_FIELD || field.get(*out) == simdjson::SUCCESS;
  };
  if (parser.parse(req.body().data(), req.body().size()).get(doc) != simdjson::SUCCESS ||
      doc["channel"].get(channel) != simdjson::SUCCESS ||
      doc["conversationId"].get(conversation) != simdjson::SUCCESS ||
      doc["text"].get(text) != simdjson::SUCCESS || !optional("conversationType", &type) ||
      !optional("format", &format)) {
    respond_json(
        server, ex, 400,
        R"x({"error":"expected {\"channel\": ..., \"conversationId\": ..., \"text\": ...} )x"
        R"x(and optionally \"conversationType\" (direct|group) and \"format\" (text|markdown)"})x");
    return;
  }
  auto bad = [&](std::string_view why) {
    respond_json(server, ex, 400, "{\"error\":" + json_quote(why) + "}");
  };
  if (type != "direct" && type != "group") return bad("conversationType must be direct or group");
  if (format != "text" && format != "markdown") return bad("format must be text or markdown");
  const std::string labels = "channel=" + json_quote(channel);
  auto call = std::make_unique<SendCall>(SendCall{
      &server, ex, std::string(channel),
      metrics_.counter("chatgate_admin_sends_total", labels + ",result=\"ok\"",
                       "messages sent from the admin API, by channel instance and result"),
      metrics_.counter("chatgate_admin_sends_total", labels + ",result=\"failed\"",
                       "messages sent from the admin API, by channel instance and result")});
  ProactiveMessage msg;
  msg.channel = channel;
  msg.conversation = conversation;
  msg.conversation_type = type == "group" ? CG_CONV_GROUP : CG_CONV_DIRECT;
  msg.format = format == "markdown" ? CG_REPLY_MARKDOWN : CG_REPLY_TEXT;
  msg.text = text;
  SendCall *raw = call.release();  // send_done owns it from here
  const ProactiveResult r = sends_.send_proactive(msg, send_done, raw);
  if (r.status == 0) return;
  if (r.refused) return send_done(raw, r.status);
  std::unique_ptr<SendCall> unused(raw);
  const int http = r.status == CG_ENOENT ? 404 : r.status == CG_EUNAVAIL ? 503 : 400;
  respond_json(server, ex, http, "{\"error\":" + json_quote(r.why) + "}");
}

}  // namespace cg
