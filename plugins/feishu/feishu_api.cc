// The open platform's HTTP API: the tenant token, calls with retries,
// replies in every style, and CardKit streaming cards.
#include <simdjson.h>

#include <chatgate/json.hpp>
#include <random>

#include "feishu_crypto.h"
#include "feishu_plugin.h"

namespace feishu {

namespace {

constexpr auto sv = chatgate::view;
constexpr auto cs = chatgate::str;
constexpr auto jstr = chatgate::json_string;

// Escaped JSON text per message: Feishu allows 150 KB of text content and
// 30 KB of post or card content; the margins cover the JSON around it.
constexpr size_t kTextLimit = size_t{100} * 1024;
constexpr size_t kCardLimit = size_t{25} * 1024;
constexpr uint64_t kBackoffBaseMs = 500;
constexpr uint64_t kBackoffCapMs = 8000;
constexpr int64_t kRateLimited = 99991400;
constexpr const char *kElement = "stream_md";

ApiResult parse_result(int result, const cg_http_client_response_t *resp) {
  ApiResult r;
  r.result = result;
  r.code = -1;
  if (resp != nullptr) {
    r.http = resp->status;
    r.body = std::string(sv(resp->body));
  }
  if (result != 0) {
    r.msg = resp != nullptr && resp->error.len > 0 ? std::string(sv(resp->error))
                                                   : std::string(cg_strerror(result));
    return r;
  }
  // Kept across answers (the loop thread's): a fresh parser allocates its
  // buffers for every reply the platform acknowledges.
  thread_local simdjson::dom::parser parser;
  simdjson::dom::element doc;
  int64_t code = 0;
  std::string_view msg;
  if (parser.parse(r.body.data(), r.body.size()).get(doc) != simdjson::SUCCESS ||
      doc["code"].get(code) != simdjson::SUCCESS) {
    r.result = CG_EPROTO;
    r.msg = "HTTP " + std::to_string(r.http) + " without a JSON code";
    return r;
  }
  r.code = code;
  if (doc["msg"].get(msg) == simdjson::SUCCESS) r.msg = std::string(msg);
  if (code != 0) r.result = CG_EPROTO;
  return r;
}

// The escaped size of one byte in a JSON string.
size_t escaped_size(unsigned char c) {
  if (c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t') return 2;
  return c < 0x20 ? 6 : 1;
}

// Splits `text` into pieces whose JSON-escaped size stays under `limit`,
// at a line break in the second half of a piece when there is one, never
// inside a UTF-8 sequence.
// How long a card record is kept: beyond a streaming card's own life.
constexpr uint64_t kCardRecordTtlMs = uint64_t{60} * 60 * 1000;

std::vector<std::string> split(std::string_view text, size_t limit) {
  std::vector<std::string> parts;
  while (!text.empty()) {
    size_t size = 0, cut = 0, newline = 0;
    while (cut < text.size() &&
           size + escaped_size(static_cast<unsigned char>(text[cut])) <= limit) {
      size += escaped_size(static_cast<unsigned char>(text[cut]));
      if (text[cut] == '\n') newline = cut + 1;
      ++cut;
    }
    if (cut < text.size()) {
      if (newline > cut / 2) {
        cut = newline;
      } else {
        while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
      }
    }
    parts.emplace_back(text.substr(0, cut));
    text.remove_prefix(cut);
  }
  if (parts.empty()) parts.emplace_back();
  return parts;
}

std::string random_uuid() {
  static std::random_device rd;
  std::mt19937_64 gen(rd());
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(gen()),
                static_cast<unsigned long long>(gen()));
  return buf;
}

std::string card_json(std::string_view markdown, bool streaming) {
  std::string card = R"({"schema":"2.0","config":{"update_multi":true)";
  if (streaming) card += R"(,"streaming_mode":true,"summary":{"content":""})";
  card += R"(},"body":{"elements":[{"tag":"markdown","element_id":")";
  card += kElement;
  card += R"(","content":)" + jstr(markdown) + "}]}}";
  return card;
}

// A message's msg_type and content string for `style`.
std::pair<const char *, std::string> content_of(Style style, std::string_view text) {
  switch (style) {
    case Style::kText:
      return {"text", "{\"text\":" + jstr(text) + "}"};
    case Style::kPost: {
      std::string lines;
      size_t start = 0;
      while (start <= text.size()) {
        const size_t nl = text.find('\n', start);
        const std::string_view line =
            text.substr(start, nl == std::string_view::npos ? nl : nl - start);
        if (!lines.empty()) lines += ",";
        lines += R"([{"tag":"text","text":)" + jstr(line) + "}]";
        if (nl == std::string_view::npos) break;
        start = nl + 1;
      }
      return {"post", R"({"zh_cn":{"title":"","content":[)" + lines + "]}}"};
    }
    default:
      return {"interactive", card_json(text, false)};
  }
}

}  // namespace

std::string Answer::uuid(std::string_view what, size_t part) const {
  if (message_id.empty()) return random_uuid();
  return sha256_hex(message_id + ":" + std::string(what) + ":" + std::to_string(part))
      .substr(0, 32);
}

namespace {

// A later attempt at a reply to a message may find an earlier one's card.
bool resumable(const Answer *a) { return a->delivery > 1 && !a->message_id.empty(); }

void finish(Answer *a, int status);
void send_parts(Answer *a, Style style, std::vector<std::string> parts, size_t i);
void card_update(Answer *a);
void record_card(Answer *a);
void card_start(Answer *a);

// Completes an answer: its FINAL's done (on a later turn) and its end.
void finish(Answer *a, int status) {
  auto *owner = a->f;
  // On a later turn; inline only once the loop closes (nothing waits then).
  if (a->done != nullptr &&
      kit::defer_done(owner->api, owner->host, a->done, a->done_arg, status) != 0) {
    a->done(a->done_arg, status);
  }
  owner->answers.erase(a->id);
  owner->maybe_stopped();
}

// Replies (or sends) one message.
void post_message(Answer *a, const char *msg_type, const std::string &content, size_t part,
                  const ApiDone &done) {
  std::string body = "{\"msg_type\":\"" + std::string(msg_type) +
                     "\",\"content\":" + jstr(content) +
                     ",\"uuid\":" + jstr(a->uuid(msg_type, part));
  if (a->message_id.empty()) {
    body += ",\"receive_id\":" + jstr(a->chat_id) + "}";
    a->f->call("POST", "/open-apis/im/v1/messages?receive_id_type=chat_id", body, done);
  } else {
    body += std::string(",\"reply_in_thread\":") + (a->thread ? "true" : "false") + "}";
    a->f->call("POST", "/open-apis/im/v1/messages/" + a->message_id + "/reply", body, done);
  }
}

void send_parts(Answer *a, Style style, std::vector<std::string> parts, size_t i) {
  if (i == parts.size()) return finish(a, a->status);
  const auto [type, content] = content_of(style, parts[i]);
  post_message(a, type, content, i, [a, style, parts = std::move(parts), i](const ApiResult &r) {
    if (r.result != 0) {
      a->f->log_limited(CG_LOG_ERROR, "reply_failed",
                        "reply to " + (a->message_id.empty() ? a->chat_id : a->message_id) +
                            " failed: " + r.msg + " (code " + std::to_string(r.code) + ", HTTP " +
                            std::to_string(r.http) + ")");
      return finish(a, r.result);
    }
    send_parts(a, style, parts, i + 1);
  });
}

// The card is done streaming: its final text stands, the rest (beyond a
// card's size) follows as text replies.
void card_close(Answer *a) {
  a->closing = true;
  const std::string body = R"({"settings":"{\"config\":{\"streaming_mode\":false}}","sequence":)" +
                           std::to_string(++a->sequence) +
                           ",\"uuid\":" + jstr(a->uuid("close", 0)) + "}";
  a->f->call("PATCH", "/open-apis/cardkit/v1/cards/" + a->card_id + "/settings", body,
             [a](const ApiResult &r) {
               if (r.result != 0) {
                 a->f->log(CG_LOG_WARN, "closing streaming card " + a->card_id + " failed: " +
                                            r.msg + " (Feishu ends it after 10 minutes)");
               }
               std::vector<std::string> parts = split(a->latest, kCardLimit);
               parts.erase(parts.begin());
               if (parts.empty()) return finish(a, a->status);
               send_parts(a, Style::kText, std::move(parts), 0);
             });
}

void card_after_update(Answer *a) {
  if (a->superseded) return finish(a, 0);
  // The close is under way (a timer armed before the FINAL came must not
  // close it twice: the first close's end frees the answer).
  if (a->closing) return;
  if (a->final) {
    if (a->shown == split(a->latest, kCardLimit).front()) return card_close(a);
    return card_update(a);
  }
  if (a->shown == a->latest || a->timer) return;
  const uint64_t now = a->f->api->now_ms(a->f->host);
  const uint64_t next = a->last_update_ms + a->f->stream_update_ms;
  if (now >= next) return card_update(a);
  a->timer = true;
  const uint64_t id = a->id;
  Feishu *f = a->f;
  f->after(next - now, [f, id] {
    auto it = f->answers.find(id);
    if (it == f->answers.end()) return;
    it->second->timer = false;
    if (!f->stopping && !it->second->updating) card_after_update(it->second.get());
  });
}

void card_update(Answer *a) {
  a->updating = true;
  const std::string text = split(a->latest, kCardLimit).front();
  const int64_t seq = ++a->sequence;
  const std::string body = "{\"content\":" + jstr(text) + ",\"sequence\":" + std::to_string(seq) +
                           ",\"uuid\":" + jstr(a->uuid("update", static_cast<size_t>(seq))) + "}";
  a->f->call(
      "PUT", "/open-apis/cardkit/v1/cards/" + a->card_id + "/elements/" + kElement + "/content",
      body, [a, text](const ApiResult &r) {
        a->updating = false;
        a->last_update_ms = a->f->api->now_ms(a->f->host);
        if (r.result == 0) {
          a->shown = text;
        } else {
          a->f->log(CG_LOG_WARN, "streaming card " + a->card_id + " update failed: " + r.msg +
                                     " (code " + std::to_string(r.code) + ")");
          if (a->final) {
            // The card cannot show the end: say it in a plain reply.
            a->status = 0;
            return card_close(a);
          }
        }
        card_after_update(a);
      });
}

void card_fallback(Answer *a) {
  if (a->superseded) return finish(a, 0);
  a->card = Answer::Card::kFailed;
  if (a->final) send_parts(a, Style::kText, split(a->latest, kTextLimit), 0);
}

void card_create(Answer *a) {
  a->card = Answer::Card::kCreating;
  const std::string text = split(a->latest, kCardLimit).front();
  const std::string body = "{\"type\":\"card_json\",\"data\":" + jstr(card_json(text, true)) + "}";
  a->f->call("POST", "/open-apis/cardkit/v1/cards", body, [a, text](const ApiResult &r) {
    std::string_view card_id;
    simdjson::dom::parser parser;
    simdjson::dom::element doc;
    if (r.result != 0 || parser.parse(r.body.data(), r.body.size()).get(doc) != simdjson::SUCCESS ||
        doc["data"]["card_id"].get(card_id) != simdjson::SUCCESS) {
      a->f->log(CG_LOG_WARN, "cannot create a streaming card (" + r.msg + ", code " +
                                 std::to_string(r.code) +
                                 "): answering with a text reply; does the app have the "
                                 "cardkit:card:write scope?");
      return card_fallback(a);
    }
    a->card_id = std::string(card_id);
    const std::string content = R"({"type":"card","data":{"card_id":)" + jstr(a->card_id) + "}}";
    post_message(a, "interactive", content, 0, [a, text](const ApiResult &sent) {
      if (sent.result != 0) {
        a->f->log(CG_LOG_WARN, "cannot send streaming card " + a->card_id + " (" + sent.msg +
                                   "): answering with a text reply");
        return card_fallback(a);
      }
      a->card = Answer::Card::kLive;
      a->shown = text;
      a->last_update_ms = a->f->api->now_ms(a->f->host);
      record_card(a);
      card_after_update(a);
    });
  });
}

// The card record: which card answers this message, so that a later
// attempt (another instance, after this one died) continues the card
// instead of leaving it typing beside a second one. Best effort: without
// a cache the later attempt starts a new card.
void record_card(Answer *a) {
  if (a->message_id.empty()) return;
  Feishu *f = a->f;
  const std::string key = "card:" + a->message_id;
  const int rc = f->api->cache_set(
      f->host, cs(key), cs(a->card_id), kCardRecordTtlMs,
      [](void *arg, int status, cg_str_t) {
        if (status != 0) {
          auto *f2 = static_cast<Feishu *>(arg);
          f2->log_limited(CG_LOG_WARN, "card_record",
                          std::string("cannot record a streaming card for a later attempt: ") +
                              cg_strerror(status));
        }
      },
      f);
  if (rc != 0) {
    f->log_limited(
        CG_LOG_WARN, "card_record",
        std::string("cannot record a streaming card for a later attempt: ") + cg_strerror(rc));
  }
}

// A later attempt at a message: the card an earlier one left, if any, is
// continued (its content replaced by this answer, then closed); else a
// card as usual, or a plain card for a FINAL with nothing streamed.
void card_resume(Answer *a) {
  a->card = Answer::Card::kCreating;  // partials wait, as while creating
  Feishu *f = a->f;
  const std::string key = "card:" + a->message_id;
  const int rc = f->api->cache_get(
      f->host, cs(key),
      [](void *arg, int status, cg_str_t value) {
        auto *a2 = static_cast<Answer *>(arg);
        if (status == 0 && value.len > 0) {
          a2->card_id = std::string(sv(value));
          a2->card = Answer::Card::kLive;
          // Above every sequence an earlier attempt can have used (one
          // update per streamUpdateMs at most; the card takes only rising
          // numbers).
          a2->sequence = static_cast<int64_t>(a2->delivery) * 1000000;
          a2->shown.clear();
          a2->last_update_ms = 0;
          a2->f->log(CG_LOG_INFO, "continuing streaming card " + a2->card_id + " for message " +
                                      a2->message_id + " (attempt " + std::to_string(a2->delivery) +
                                      ")");
          return card_after_update(a2);
        }
        card_start(a2);
      },
      a);
  if (rc != 0) card_start(a);
}

void card_start(Answer *a) {
  a->card = Answer::Card::kNone;
  if (a->superseded) return finish(a, 0);
  if (a->final) {
    return send_parts(a, Style::kCard, split(a->latest, kCardLimit), 0);
  }
  card_create(a);
}

}  // namespace

int Feishu::fetch_token(const kit::TokenCache::Settle &settle) {
  const std::string body =
      "{\"app_id\":" + jstr(app_id) + ",\"app_secret\":" + jstr(app_secret) + "}";
  return http("POST", base_url + "/open-apis/auth/v3/tenant_access_token/internal",
              {{"Content-Type", "application/json; charset=utf-8"}}, body,
              [this, settle](int result, const cg_http_client_response_t *resp) {
                ApiResult r = parse_result(result, resp);
                std::string_view tok;
                int64_t expire = 0;
                simdjson::dom::parser parser;
                simdjson::dom::element doc;
                if (r.result == 0 &&
                    (parser.parse(r.body.data(), r.body.size()).get(doc) != simdjson::SUCCESS ||
                     doc["tenant_access_token"].get(tok) != simdjson::SUCCESS || tok.empty())) {
                  r.result = CG_EPROTO;
                  r.msg = "no tenant_access_token in the answer";
                }
                if (r.result == 0) {
                  if (doc["expire"].get(expire) != simdjson::SUCCESS) expire = 7200;
                  return settle(0, std::string(tok), expire);
                }
                const std::string why = r.msg + " (code " + std::to_string(r.code) + ", HTTP " +
                                        std::to_string(r.http) + ")";
                log(CG_LOG_ERROR, "tenant_access_token refused: " + why +
                                      "; check appId and appSecret (and domain)");
                settle(r.result, why, 0);
              });
}

void Feishu::call(const std::string &method, const std::string &path, const std::string &body,
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
      r.msg = "no tenant token: " + tok;
      return done(r);
    }
    const int hrc = http(
        method, base_url + path,
        {{"Authorization", "Bearer " + tok}, {"Content-Type", "application/json; charset=utf-8"}},
        body,
        [this, method, path, body, done, attempt, fresh_token](
            int result, const cg_http_client_response_t *resp) {
          ApiResult r = parse_result(result, resp);
          if (token_error(r.code) && !fresh_token) {
            // Revoked or expired early: a new token, one more try.
            log(CG_LOG_INFO,
                "tenant token rejected (code " + std::to_string(r.code) + "); fetching a new one");
            tokens.invalidate();
            return call(method, path, body, done, attempt, true);
          }
          const bool retryable = r.result == CG_EIO || r.result == CG_ETIMEDOUT || r.http == 429 ||
                                 r.code == kRateLimited || r.http >= 500;
          if (!retryable || attempt >= max_retries || stopping) return done(r);
          uint64_t delay =
              api->backoff_ms(host, static_cast<uint32_t>(attempt), kBackoffBaseMs, kBackoffCapMs);
          const std::string reset =
              resp ? kit::header_value(resp->headers, resp->header_count, "x-ogw-ratelimit-reset")
                   : "";
          if (!reset.empty()) {
            delay = std::min<uint64_t>(std::strtoull(reset.c_str(), nullptr, 10) * 1000, 60000);
          }
          log_limited(CG_LOG_WARN, "api_retry",
                      method + " " + path.substr(0, path.find('?')) + ": " + r.msg + " (HTTP " +
                          std::to_string(r.http) + ", code " + std::to_string(r.code) +
                          "); retry " + std::to_string(attempt + 1) + " in " +
                          std::to_string(delay) + " ms");
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

void Feishu::fetch_bot_info() {
  call("GET", "/open-apis/bot/v3/info", "", [this](const ApiResult &r) {
    simdjson::dom::parser parser;
    simdjson::dom::element doc;
    std::string_view id;
    if (r.result == 0 && parser.parse(r.body.data(), r.body.size()).get(doc) == simdjson::SUCCESS &&
        doc["bot"]["open_id"].get(id) == simdjson::SUCCESS) {
      bot_open_id = std::string(id);
      log(CG_LOG_INFO, "the bot's open_id is " + bot_open_id);
      return;
    }
    if (stopping) return;
    log(CG_LOG_WARN,
        "cannot learn the bot's open_id (" + r.msg +
            "); until then no @-mention counts as the bot's, so groups that require the "
            "mention go unanswered; retrying in 30 s");
    after(30000, [this] {
      if (!stopping) fetch_bot_info();
    });
  });
}

void Feishu::reply_text(const std::string &message_id, bool in_thread, const std::string &text) {
  const auto [type, content] = content_of(Style::kText, text);
  const std::string body = "{\"msg_type\":\"text\",\"content\":" + jstr(content) + ",\"uuid\":" +
                           jstr(sha256_hex(message_id + ":unsupported").substr(0, 32)) +
                           ",\"reply_in_thread\":" + (in_thread ? "true" : "false") + "}";
  call("POST", "/open-apis/im/v1/messages/" + message_id + "/reply", body,
       [this, message_id](const ApiResult &r) {
         if (r.result != 0) {
           log_limited(CG_LOG_WARN, "unsupported_reply_failed",
                       "reply to " + message_id + " failed: " + r.msg);
         }
       });
}

std::string Feishu::card_toast_json() const {
  return R"({"toast":{"type":"info","content":)" + jstr(user_text("received", "Received")) + "}}";
}

// An earlier attempt at this message still here (a retry after a model
// failure mid-stream): the new one takes its card over, the old one ends
// quietly once nothing of it is in flight.
void Feishu::supersede(const std::string &message_id) {
  std::vector<uint64_t> idle;
  for (auto &[id, old] : answers) {
    if (old->message_id != message_id || old->final || old->superseded) continue;
    old->superseded = true;
    if (!old->updating && !old->timer && old->card != Answer::Card::kCreating) idle.push_back(id);
  }
  for (uint64_t id : idle) finish(answers[id].get(), 0);
}

int Feishu::send(const cg_reply_t &reply, cg_done_cb done, void *arg) {
  if (stopping) return CG_ECLOSED;
  const bool final = (reply.flags & CG_REPLY_FINAL) != 0;
  auto it = answers.find(reply.answer_id);
  if (it == answers.end()) {
    auto a = std::make_unique<Answer>();
    a->f = this;
    a->id = reply.answer_id;
    const std::string_view token = sv(reply.reply_token);
    a->message_id = std::string(token.substr(0, token.find('|')));
    a->thread = token.ends_with("|t");
    const std::string_view conv = sv(reply.conversation_id);
    a->chat_id = std::string(conv.substr(0, conv.find(':')));
    if (a->message_id.empty() && a->chat_id.empty()) return CG_EINVAL;
    if (reply.struct_size >= offsetof(cg_reply_t, delivery) + sizeof(uint32_t) &&
        reply.delivery > 1) {
      a->delivery = reply.delivery;
      supersede(a->message_id);
    }
    it = answers.emplace(reply.answer_id, std::move(a)).first;
  }
  Answer *a = it->second.get();
  a->latest = std::string(sv(reply.text));
  if (!final) {
    // Partial text is taken at once; only the streaming card shows it.
    if (style == Style::kStreamingCard) {
      if (a->card == Answer::Card::kNone) {
        resumable(a) ? card_resume(a) : card_create(a);
      } else if (a->card == Answer::Card::kLive && !a->updating) {
        card_after_update(a);
      }
    }
    // Taken at once; done on a later turn, as the ABI wants.
    if (kit::defer_done(api, host, done, arg, 0) != 0) return CG_ECLOSED;
    return 0;
  }
  a->final = true;
  a->done = done;
  a->done_arg = arg;
  if (style == Style::kStreamingCard && a->card == Answer::Card::kNone && resumable(a)) {
    card_resume(a);
  } else if (style != Style::kStreamingCard || a->card == Answer::Card::kNone) {
    // No partial came first: one message (or several, when long) of the
    // style, a plain card for streaming-card.
    const Style s = style == Style::kStreamingCard ? Style::kCard : style;
    send_parts(a, s, split(a->latest, s == Style::kText ? kTextLimit : kCardLimit), 0);
  } else if (a->card == Answer::Card::kFailed) {
    card_fallback(a);
  } else if (a->card == Answer::Card::kLive && !a->updating && !a->closing) {
    card_after_update(a);
  }
  // kCreating, or an update in flight: their completion sees `final`.
  return 0;
}

}  // namespace feishu
