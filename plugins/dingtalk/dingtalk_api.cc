// Outbound: the OpenAPI access token, replies through the session webhook
// (or the robot sends once it has expired), AI cards, custom group robots.
#include <simdjson.h>

#include <chatgate/json.hpp>
#include <ctime>
#include <random>

#include "dingtalk_plugin.h"
#include "dingtalk_protocol.h"

namespace dingtalk {
namespace {

constexpr auto sv = chatgate::view;
constexpr auto cs = chatgate::str;
constexpr auto jstr = chatgate::json_string;
constexpr uint64_t kBackoffBaseMs = 500;
constexpr uint64_t kBackoffCapMs = 8000;
// DingTalk's robot messages hold about 20,000 characters; parts stay under
// this many bytes.
constexpr size_t kPartLimit = 18000;
// A session webhook this close to its end is not used.
constexpr int64_t kWebhookMarginMs = 5000;

int64_t unix_ms() { return static_cast<int64_t>(std::time(nullptr)) * 1000; }

// DingTalk answers: OpenAPI errors are non-2xx with {"code","message"};
// robot webhooks are 200 with {"errcode","errmsg"}.
ApiResult parse_result(int result, const cg_http_client_response_t *resp) {
  ApiResult r;
  r.result = result;
  if (resp != nullptr) {
    r.http = resp->status;
    r.body = std::string(sv(resp->body));
  }
  if (result != 0) {
    r.msg = resp != nullptr && resp->error.len > 0 ? std::string(sv(resp->error))
                                                   : std::string(cg_strerror(result));
    return r;
  }
  thread_local simdjson::dom::parser parser;  // kept: a fresh one allocates per answer
  simdjson::dom::element doc;
  const bool json = parser.parse(r.body.data(), r.body.size()).get(doc) == simdjson::SUCCESS;
  std::string_view s;
  int64_t errcode = 0;
  if (json && doc["errcode"].get(errcode) == simdjson::SUCCESS && errcode != 0) {
    r.code = std::to_string(errcode);
    if (doc["errmsg"].get(s) == simdjson::SUCCESS) r.msg = std::string(s);
    r.result = CG_EPROTO;
  } else if (r.http < 200 || r.http > 299) {
    if (json && doc["code"].get(s) == simdjson::SUCCESS) r.code = std::string(s);
    if (json && doc["message"].get(s) == simdjson::SUCCESS) r.msg = std::string(s);
    if (r.msg.empty()) r.msg = "HTTP " + std::to_string(r.http);
    r.result = CG_EPROTO;
  }
  return r;
}

std::string why(const ApiResult &r) {
  return r.msg + " (HTTP " + std::to_string(r.http) + (r.code.empty() ? "" : ", code " + r.code) +
         ")";
}

std::string random_id() {
  static std::mt19937_64 gen(std::random_device{}());
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(gen()),
                static_cast<unsigned long long>(gen()));
  return buf;
}

// Pieces of at most kPartLimit bytes, cut at a line break in the second
// half when there is one, never inside a UTF-8 sequence.
std::vector<std::string> split(std::string_view text) {
  std::vector<std::string> parts;
  while (text.size() > kPartLimit) {
    size_t cut = text.rfind('\n', kPartLimit);
    if (cut == std::string_view::npos || cut < kPartLimit / 2) {
      cut = kPartLimit;
      while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
    } else {
      ++cut;
    }
    parts.emplace_back(text.substr(0, cut));
    text.remove_prefix(cut);
  }
  parts.emplace_back(text);
  return parts;
}

std::string title_of(std::string_view text) {
  std::string t(text.substr(0, text.find('\n')));
  if (t.size() > 60) {
    t.resize(60);
    while (!t.empty() && (static_cast<unsigned char>(t.back()) & 0xC0) == 0x80) t.pop_back();
  }
  return t.empty() ? "Reply" : t;
}

void finish(Answer *a, int status) {
  auto *owner = a->d;
  // On a later turn; inline only once the loop closes (nothing waits then).
  if (a->done != nullptr &&
      kit::defer_done(owner->api, owner->host, a->done, a->done_arg, status) != 0) {
    a->done(a->done_arg, status);
  }
  owner->answers.erase(a->id);
  owner->maybe_stopped();
}

// One message by the OpenAPI robot sends (no session webhook).
void send_openapi(Answer *a, bool markdown, const std::string &text, const ApiDone &done) {
  const std::string param =
      markdown ? "{\"title\":" + jstr(title_of(text)) + ",\"text\":" + jstr(text) + "}"
               : "{\"content\":" + jstr(text) + "}";
  const char *key = markdown ? "sampleMarkdown" : "sampleText";
  Dingtalk *d = a->d;
  if (a->target.group) {
    d->call("POST", "/v1.0/robot/groupMessages/send",
            "{\"robotCode\":" + jstr(d->robot_code) +
                ",\"openConversationId\":" + jstr(a->target.conversation_id) + ",\"msgKey\":\"" +
                key + "\",\"msgParam\":" + jstr(param) + "}",
            done);
  } else {
    d->call("POST", "/v1.0/robot/oToMessages/batchSend",
            "{\"robotCode\":" + jstr(d->robot_code) + ",\"userIds\":[" + jstr(a->target.staff_id) +
                "],\"msgKey\":\"" + key + "\",\"msgParam\":" + jstr(param) + "}",
            done);
  }
}

std::string robot_body(bool markdown, const std::string &text, const std::string &at_user) {
  std::string body =
      markdown ? "{\"msgtype\":\"markdown\",\"markdown\":{\"title\":" + jstr(title_of(text)) +
                     ",\"text\":" + jstr(text) + "}"
               : "{\"msgtype\":\"text\",\"text\":{\"content\":" + jstr(text) + "}";
  if (!at_user.empty()) body += ",\"at\":{\"atUserIds\":[" + jstr(at_user) + "]}";
  return body + "}";
}

// A POST to a robot webhook (session or custom), whose answer is errcode.
void post_robot(Dingtalk *d, const std::string &url, const std::string &body, const ApiDone &done) {
  const int rc = d->http("POST", url, {{"Content-Type", "application/json; charset=utf-8"}}, body,
                         [done](int result, const cg_http_client_response_t *resp) {
                           done(parse_result(result, resp));
                         });
  if (rc != 0) {
    ApiResult r;
    r.result = rc;
    r.msg = cg_strerror(rc);
    done(r);
  }
}

// One message to the target: the session webhook while it lives (falling
// back to the OpenAPI if it fails), a custom robot, or the OpenAPI.
void deliver_one(Answer *a, bool markdown, const std::string &text, const ApiDone &done) {
  Dingtalk *d = a->d;
  const Target &t = a->target;
  if (!t.robot.empty()) {
    const auto it = d->robots.find(t.robot);
    if (it == d->robots.end()) {
      ApiResult r;
      r.result = CG_ENOENT;
      r.msg = "no custom robot named '" + t.robot + "' in customRobots";
      return done(r);
    }
    std::string url = it->second.url;
    if (!it->second.secret.empty()) {
      const std::string ts = std::to_string(unix_ms());
      url += (url.find('?') == std::string::npos ? "?" : "&") + std::string("timestamp=") + ts +
             "&sign=" + url_encode(robot_sign(ts, it->second.secret));
    }
    const std::string name = t.robot;
    return post_robot(d, url, robot_body(markdown, text, {}), [d, name, done](const ApiResult &r) {
      if (r.code == "310000") {
        d->log(CG_LOG_ERROR, "custom robot '" + name +
                                 "': DingTalk refused the sign (310000): "
                                 "check the robot's SEC secret and this host's clock");
      }
      done(r);
    });
  }
  if (!t.webhook.empty() && t.webhook_expires_ms > unix_ms() + kWebhookMarginMs) {
    return post_robot(d, t.webhook, robot_body(markdown, text, t.group ? t.staff_id : ""),
                      [a, markdown, text, done](const ApiResult &r) {
                        if (r.result == 0) return done(r);
                        a->d->log_limited(CG_LOG_WARN, "session_webhook_refused",
                                          "session webhook refused the reply: " + why(r) +
                                              "; sending through the OpenAPI instead");
                        send_openapi(a, markdown, text, done);
                      });
  }
  send_openapi(a, markdown, text, done);
}

void deliver(Answer *a, bool markdown, std::vector<std::string> parts, size_t i) {
  if (i == parts.size()) return finish(a, 0);
  const std::string text = parts[i];
  deliver_one(a, markdown, text, [a, markdown, parts = std::move(parts), i](const ApiResult &r) {
    if (r.result != 0) {
      // As the operator guide words it, naming the custom robot when it was one.
      const std::string to = a->target.robot.empty() ? "conversation " + a->target.conversation_id
                                                     : "custom robot '" + a->target.robot + "'";
      a->d->log_limited(CG_LOG_ERROR, "reply_failed", "message to " + to + " failed: " + why(r));
      return finish(a, r.result);
    }
    deliver(a, markdown, parts, i + 1);
  });
}

void card_update(Answer *a);
void card_create(Answer *a);
void card_resume(Answer *a);
void record_card(Answer *a);

// How long a card record is kept: beyond an AI card's own life.
constexpr uint64_t kCardRecordTtlMs = uint64_t{60} * 60 * 1000;

void card_after_update(Answer *a) {
  if (a->superseded) return finish(a, 0);
  if (a->final) {
    // The last update finalizes, whatever was shown before.
    if (!a->updating) card_update(a);
    return;
  }
  if (a->shown == a->latest || a->timer || a->updating) return;
  Dingtalk *d = a->d;
  const uint64_t now = d->api->now_ms(d->host);
  const uint64_t next = a->last_update_ms + d->stream_update_ms;
  if (now >= next) return card_update(a);
  a->timer = true;
  const uint64_t id = a->id;
  d->after(next - now, [d, id] {
    auto it = d->answers.find(id);
    if (it == d->answers.end()) return;
    it->second->timer = false;
    if (!d->stopping) card_after_update(it->second.get());
  });
}

void card_update(Answer *a) {
  a->updating = true;
  const bool finalize = a->final;
  const std::string text = a->latest;
  Dingtalk *d = a->d;
  const std::string body = "{\"outTrackId\":" + jstr(a->out_track_id) +
                           ",\"guid\":" + jstr(random_id()) + ",\"key\":" + jstr(d->card_key) +
                           ",\"content\":" + jstr(text) +
                           ",\"isFull\":true,\"isFinalize\":" + (finalize ? "true" : "false") +
                           ",\"isError\":" + (finalize && a->error ? "true" : "false") + "}";
  d->call("PUT", "/v1.0/card/streaming", body, [a, text, finalize](const ApiResult &r) {
    a->updating = false;
    a->last_update_ms = a->d->api->now_ms(a->d->host);
    if (a->resuming) {
      a->resuming = false;
      if (r.result != 0) {
        // No card from an earlier attempt (it died before making one).
        a->card = Answer::Card::kNone;
        return card_create(a);
      }
      a->d->log(CG_LOG_INFO, "continued AI card " + a->out_track_id + " (attempt " +
                                 std::to_string(a->delivery) + ")");
    }
    if (r.result == 0) {
      a->shown = text;
      if (finalize) return finish(a, 0);
    } else {
      a->d->log(CG_LOG_WARN, "AI card " + a->out_track_id + " update failed: " + why(r));
      if (finalize) {
        // The card could not show the end: say it in a plain reply.
        return deliver(a, true, split(a->latest), 0);
      }
    }
    card_after_update(a);
  });
}

void card_fallback(Answer *a) {
  if (a->superseded) return finish(a, 0);
  a->card = Answer::Card::kFailed;
  if (a->final) deliver(a, true, split(a->latest), 0);
}

void card_create(Answer *a) {
  Dingtalk *d = a->d;
  a->out_track_id = a->msg_id.empty() ? "cg_" + random_id() : "cg_" + a->msg_id;
  if (a->delivery > 1 && !a->msg_id.empty() && !a->resume_tried) {
    a->resume_tried = true;
    return card_resume(a);
  }
  a->card = Answer::Card::kCreating;
  const Target &t = a->target;
  std::string body = "{\"cardTemplateId\":" + jstr(d->card_template) +
                     ",\"outTrackId\":" + jstr(a->out_track_id) +
                     ",\"callbackType\":\"STREAM\",\"cardData\":{\"cardParamMap\":{" +
                     jstr(d->card_key) + ":\"\"}}";
  if (t.group) {
    body += ",\"openSpaceId\":" + jstr("dtv1.card//IM_GROUP." + t.conversation_id) +
            ",\"imGroupOpenSpaceModel\":{\"supportForward\":true}"
            ",\"imGroupOpenDeliverModel\":{\"robotCode\":" +
            jstr(d->robot_code) + "}}";
  } else {
    body += ",\"openSpaceId\":" + jstr("dtv1.card//IM_ROBOT." + t.staff_id) +
            ",\"imRobotOpenSpaceModel\":{\"supportForward\":true}"
            ",\"imRobotOpenDeliverModel\":{\"spaceType\":\"IM_ROBOT\"}}";
  }
  d->call("POST", "/v1.0/card/instances/createAndDeliver", body, [a](const ApiResult &r) {
    if (r.result != 0) {
      a->d->log(CG_LOG_WARN, "cannot create the AI card: " + why(r) +
                                 "; answering with markdown (is cardTemplateId right, and the "
                                 "card permissions granted?)");
      return card_fallback(a);
    }
    a->card = Answer::Card::kLive;
    a->last_update_ms = 0;
    record_card(a);
    card_after_update(a);
  });
}

// The card record: that this message has an AI card, so a later attempt
// (another instance, after this one died) streams into it instead of
// leaving it typing beside a second one. Best effort.
void card_record_failed(Dingtalk *d, int status) {
  d->log_limited(
      CG_LOG_WARN, "card_record",
      std::string("cannot record an AI card for a later attempt: ") + cg_strerror(status));
}

void record_card(Answer *a) {
  Dingtalk *d = a->d;
  const int rc = d->api->cache_set(
      d->host, cs("card:" + a->msg_id), cs(a->out_track_id), kCardRecordTtlMs,
      [](void *arg, int status, cg_str_t) {
        if (status != 0) card_record_failed(static_cast<Dingtalk *>(arg), status);
      },
      d);
  if (rc != 0) card_record_failed(d, rc);
}

// A later attempt: the card an earlier one made, if the record says there
// is one, is streamed into (its content replaced, then finalized); else a
// card is created as usual.
void card_resume(Answer *a) {
  a->card = Answer::Card::kCreating;  // partials wait, as while creating
  Dingtalk *d = a->d;
  const int rc = d->api->cache_get(
      d->host, cs("card:" + a->msg_id),
      [](void *arg, int status, cg_str_t value) {
        auto *a2 = static_cast<Answer *>(arg);
        if (a2->superseded) return finish(a2, 0);
        a2->card = Answer::Card::kNone;
        if (status != 0 || value.len == 0) return card_create(a2);
        a2->out_track_id = std::string(sv(value));
        a2->card = Answer::Card::kLive;
        a2->resuming = true;  // card_update creates one if it is gone
        card_after_update(a2);
      },
      a);
  if (rc != 0) {
    a->card = Answer::Card::kNone;
    card_create(a);
  }
}

bool parse_target(std::string_view token, Target *t) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(token.data(), token.size()).get(doc) != simdjson::SUCCESS) return false;
  std::string_view s;
  if (doc["w"].get(s) == simdjson::SUCCESS) t->webhook = std::string(s);
  if (doc["u"].get(s) == simdjson::SUCCESS) t->staff_id = std::string(s);
  if (doc["c"].get(s) == simdjson::SUCCESS) t->conversation_id = std::string(s);
  int64_t e = 0;
  if (doc["e"].get(e) == simdjson::SUCCESS) t->webhook_expires_ms = e;
  bool g = false;
  if (doc["g"].get(g) == simdjson::SUCCESS) t->group = g;
  return true;
}

}  // namespace

int Dingtalk::fetch_token(const kit::TokenCache::Settle &settle) {
  return http("POST", api_base + "/v1.0/oauth2/accessToken",
              {{"Content-Type", "application/json; charset=utf-8"}},
              "{\"appKey\":" + jstr(client_id) + ",\"appSecret\":" + jstr(client_secret) + "}",
              [this, settle](int result, const cg_http_client_response_t *resp) {
                ApiResult r = parse_result(result, resp);
                simdjson::dom::parser parser;
                simdjson::dom::element doc;
                std::string_view tok;
                int64_t expire = 7200;
                if (r.result == 0 &&
                    (parser.parse(r.body.data(), r.body.size()).get(doc) != simdjson::SUCCESS ||
                     doc["accessToken"].get(tok) != simdjson::SUCCESS || tok.empty())) {
                  r.result = CG_EPROTO;
                  r.msg = "no accessToken in the answer";
                }
                if (r.result == 0) {
                  if (doc["expireIn"].get(expire) != simdjson::SUCCESS) expire = 7200;
                  return settle(0, std::string(tok), expire);
                }
                const std::string reason = why(r);
                log(CG_LOG_ERROR, "access token refused: " + reason +
                                      "; check clientId and clientSecret (and apiBase)");
                settle(r.result, reason, 0);
              });
}

void Dingtalk::call(const std::string &method, const std::string &path, const std::string &body,
                    const ApiDone &done, int attempt, bool fresh_token) {
  if (stopping) {
    ApiResult r;
    r.result = CG_ECANCELED;
    r.msg = "shutting down";
    return done(r);
  }
  tokens.get([this, method, path, body, done, attempt, fresh_token](int rc,
                                                                    const std::string &tok) {
    if (rc != 0) {
      ApiResult r;
      r.result = rc;
      r.msg = "no access token: " + tok;
      return done(r);
    }
    const int hrc = http(
        method, api_base + path,
        {{"x-acs-dingtalk-access-token", tok}, {"Content-Type", "application/json; charset=utf-8"}},
        body,
        [this, method, path, body, done, attempt, fresh_token](
            int result, const cg_http_client_response_t *resp) {
          ApiResult r = parse_result(result, resp);
          // DingTalk says so with 400 InvalidAuthentication (401 elsewhere).
          const bool token_refused = r.http == 401 || r.code == "InvalidAuthentication";
          if (token_refused && !fresh_token) {
            log(CG_LOG_INFO, "access token rejected (" + r.code + "); fetching a new one");
            tokens.invalidate();
            return call(method, path, body, done, attempt, true);
          }
          const bool retryable =
              r.result == CG_EIO || r.result == CG_ETIMEDOUT || r.http == 429 || r.http >= 500;
          if (!retryable || attempt >= max_retries || stopping) return done(r);
          const uint64_t delay =
              api->backoff_ms(host, static_cast<uint32_t>(attempt), kBackoffBaseMs, kBackoffCapMs);
          log_limited(CG_LOG_WARN, "api_retry",
                      method + " " + path + ": " + why(r) + "; retry " +
                          std::to_string(attempt + 1) + " in " + std::to_string(delay) + " ms");
          after(delay, [this, method, path, body, done, attempt, fresh_token] {
            call(method, path, body, done, attempt + 1, fresh_token);
          });
        });
    if (hrc != 0) {
      ApiResult r;
      r.result = hrc;
      r.msg = cg_strerror(hrc);
      done(r);
    }
  });
}

// An earlier attempt at this message still here (a retry after a model
// failure mid-stream): the new one streams to its card; the old one ends
// quietly once nothing of it is in flight.
void Dingtalk::supersede(const std::string &msg_id) {
  if (msg_id.empty()) return;
  std::vector<uint64_t> idle;
  for (auto &[id, old] : answers) {
    if (old->msg_id != msg_id || old->final || old->superseded) continue;
    old->superseded = true;
    if (!old->updating && !old->timer && old->card != Answer::Card::kCreating) idle.push_back(id);
  }
  for (uint64_t id : idle) finish(answers[id].get(), 0);
}

void Dingtalk::reply_plain(const std::string &token, const std::string &msg_id,
                           const std::string &text) {
  if (stopping) return;
  auto a = std::make_unique<Answer>();
  a->d = this;
  a->id = next_own_answer++;
  a->msg_id = msg_id;
  a->final = true;
  if (!parse_target(token, &a->target)) return;
  Answer *raw = a.get();
  answers.emplace(raw->id, std::move(a));
  deliver(raw, false, split(text), 0);
}

int Dingtalk::send(const cg_reply_t &reply, cg_done_cb done, void *arg) {
  if (stopping) return CG_ECLOSED;
  const bool final = (reply.flags & CG_REPLY_FINAL) != 0;
  auto it = answers.find(reply.answer_id);
  if (it == answers.end()) {
    auto a = std::make_unique<Answer>();
    a->d = this;
    a->id = reply.answer_id;
    a->msg_id = std::string(sv(reply.in_reply_to));
    const std::string_view token = sv(reply.reply_token);
    if (!token.empty()) {
      if (!parse_target(token, &a->target)) return CG_EINVAL;
    } else {
      // A proactive send: a conversation id, or "robot:<name>" for a
      // custom group robot.
      const std::string_view conv = sv(reply.conversation_id);
      if (conv.empty()) return CG_EINVAL;
      if (conv.starts_with("robot:")) {
        a->target.robot = std::string(conv.substr(6));
      } else {
        a->target.conversation_id = std::string(conv);
        a->target.staff_id = std::string(conv);
        a->target.group = reply.conversation_type == CG_CONV_GROUP;
      }
    }
    if (reply.struct_size >= offsetof(cg_reply_t, delivery) + sizeof(uint32_t) &&
        reply.delivery > 1) {
      a->delivery = reply.delivery;
      supersede(a->msg_id);
    }
    it = answers.emplace(reply.answer_id, std::move(a)).first;
  }
  Answer *a = it->second.get();
  a->latest = std::string(sv(reply.text));
  const bool card = style == Style::kAiCard && a->target.robot.empty();
  if (!final) {
    if (card) {
      if (a->card == Answer::Card::kNone) {
        card_create(a);
      } else if (a->card == Answer::Card::kLive) {
        card_after_update(a);
      }
    }
    // Taken at once; done on a later turn, as the ABI wants.
    if (kit::defer_done(api, host, done, arg, 0) != 0) return CG_ECLOSED;
    return 0;
  }
  a->final = true;
  a->error = (reply.flags & CG_REPLY_ERROR) != 0;
  a->done = done;
  a->done_arg = arg;
  if (!card) {
    const bool markdown = style == Style::kMarkdown || reply.format == CG_REPLY_MARKDOWN;
    deliver(a, markdown, split(a->latest), 0);
  } else if (a->card == Answer::Card::kNone) {
    card_create(a);
  } else if (a->card == Answer::Card::kFailed) {
    card_fallback(a);
  } else if (a->card == Answer::Card::kLive) {
    card_after_update(a);
  }
  return 0;
}

}  // namespace dingtalk
