// openai.so: a model backend for any OpenAI-compatible Chat Completions
// service (OpenAI, DeepSeek, Qwen compatible mode, Moonshot, Zhipu, vLLM,
// Ollama, llama.cpp server), over the host's HTTP client (ABI 1.1).
//
//   generate -> [breaker] -> [concurrency cap / bounded queue] -> POST
//   {endpoint}/chat/completions (SSE when `stream`) -> deltas -> on_done
//
// Retries: connect failures, 429 (Retry-After honored) and 5xx, with
// exponential backoff and jitter, never once a delta reached the router.
// A circuit breaker opens after `breakerThreshold` consecutive failed calls
// and lets one probe through after `breakerCooldownMs`.
//
// THREAD: every entry point runs on the host's loop thread.
#include <chatgate/chatgate.h>
#include <simdjson.h>

#include <algorithm>
#include <cctype>
#include <chatgate/cpp.hpp>
#include <chatgate/json.hpp>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "openai_sse.h"

namespace {

constexpr auto sv = chatgate::view;
constexpr auto cs = chatgate::str;

constexpr uint64_t kBackoffBaseMs = 250;
constexpr uint64_t kBackoffCapMs = 8000;
constexpr uint64_t kRetryAfterCapMs = 30000;
constexpr size_t kMaxCause = 200;
// The most of a streamed 200 body kept while no SSE line has come (the
// host's httpClient.maxResponseBytes bounds it too).
constexpr size_t kMaxJsonBody = size_t{64} << 20;

constexpr auto json_escape = chatgate::json_append_string;

struct Openai;

struct Call {
  Openai *o = nullptr;
  uint64_t id = 0;
  cg_model_sink_t sink{};
  bool want_deltas = false;
  std::string body;  // the request JSON
  uint64_t deadline_ms = 0;
  int attempt = 0;
  uint64_t http_id = 0;
  uint64_t timer_id = 0;
  bool http_active = false;
  bool timer_active = false;
  bool queued = false;
  bool cancelled = false;
  bool finishing = false;
  bool probe = false;  // the half-open breaker's one trial call
  // The current attempt's response.
  int32_t status = 0;
  bool streamed = false;  // a delta went to the router: no retry after that
  bool done_seen = false;
  cg::openai::SseLines sse;  // unparsed SSE bytes
  std::string answer;        // text so far
  std::string error_body;
  // A 200 body before its first SSE `data:` line: the whole answer when a
  // service ignores "stream": true and answers one JSON completion.
  bool sse_seen = false;
  bool raw_over = false;  // the body passed kMaxJsonBody before any SSE line
  std::string raw;
};

struct Openai {
  const cg_host_api_t *api = nullptr;
  cg_host_t *host = nullptr;
  std::string url, api_key, model, system_prompt;
  std::vector<std::string> headers;  // "Name: value"
  bool has_temperature = false;
  double temperature = 0;
  int64_t max_tokens = 0;
  uint64_t timeout_ms = 30000;
  int retries = 3;
  size_t max_concurrent = 64, max_queue = 256;
  bool stream = true;
  int breaker_threshold = 5;
  uint64_t breaker_cooldown_ms = 30000;

  uint64_t next_id = 1;
  std::unordered_map<uint64_t, std::unique_ptr<Call>> calls;
  std::deque<Call *> waiting;
  size_t active = 0;
  int consecutive_failures = 0;
  uint64_t open_until_ms = 0;  // breaker open while now < this
  bool breaker_open = false;
  bool probe_in_flight = false;
  std::mt19937_64 rng{std::random_device{}()};
  simdjson::dom::parser parser;
  cg_done_cb stop_done = nullptr;
  void *stop_arg = nullptr;
  bool stopping = false;
  bool told_json = false;  // logged once: the service answers JSON to stream requests

  void log(int level, const std::string &line) const { api->log(host, level, cs(line)); }
  // A line that can repeat per request: one a second per cause (ABI 1.4).
  void log_limited(int level, std::string_view cause, const std::string &line) const {
    if (api->abi_minor >= 4) {
      api->log_throttled(host, level, cs(cause), cs(line));
    } else {
      log(level, line);
    }
  }
  void count(std::string_view name, std::string_view labels) const {
    api->metric_counter_add(host, cs(name), cs(labels), 1);
  }
  uint64_t now() const { return api->now_ms(host); }

  // What a service said, without the key in any form it might quote
  // (OpenAI's 401 text shows the key's first and last characters).
  std::string scrub(std::string_view text) const {
    std::string s(text.substr(0, kMaxCause));
    for (char &c : s) {
      if (c == '\n' || c == '\r') c = ' ';
    }
    if (api_key.size() >= 8) {
      const std::string head = api_key.substr(0, 6);
      const std::string tail = api_key.substr(api_key.size() - 4);
      if (s.find(head) != std::string::npos || s.find(tail) != std::string::npos) {
        return "(the service's message quoted the API key and is withheld)";
      }
    } else if (!api_key.empty() && s.find(api_key) != std::string::npos) {
      return "(the service's message quoted the API key and is withheld)";
    }
    return s;
  }
};

void start_attempt(Call *c);
void finish(Call *c, int status, std::string_view text);

// ---- the breaker -----------------------------------------------------------

// 0, or CG_EUNAVAIL while open. In half-open state one call goes through.
int breaker_admit(Openai *o, bool *probe) {
  *probe = false;
  if (!o->breaker_open) return 0;
  if (o->now() < o->open_until_ms || o->probe_in_flight) {
    const uint64_t wait = o->open_until_ms > o->now() ? o->open_until_ms - o->now() : 0;
    o->api->set_error(
        o->host,
        cs("circuit breaker open after " + std::to_string(o->consecutive_failures) +
           " consecutive failures; next probe in " + std::to_string((wait + 999) / 1000) + " s"));
    return CG_EUNAVAIL;
  }
  o->probe_in_flight = true;
  *probe = true;
  return 0;
}

void breaker_result(Openai *o, Call *c, bool ok) {
  if (c->probe) o->probe_in_flight = false;
  if (ok) {
    if (o->breaker_open) o->log(CG_LOG_INFO, "circuit breaker closed: the service answers again");
    o->breaker_open = false;
    o->consecutive_failures = 0;
    o->api->metric_gauge_set(o->host, cs("breaker_open"), cs(""), 0);
    return;
  }
  o->consecutive_failures++;
  if (o->breaker_threshold > 0 && (o->consecutive_failures >= o->breaker_threshold || c->probe)) {
    if (!o->breaker_open || c->probe) {
      o->log(CG_LOG_WARN, "circuit breaker open after " + std::to_string(o->consecutive_failures) +
                              " consecutive failures; probing again in " +
                              std::to_string(o->breaker_cooldown_ms) + " ms");
    }
    o->breaker_open = true;
    o->open_until_ms = o->now() + o->breaker_cooldown_ms;
    o->api->metric_gauge_set(o->host, cs("breaker_open"), cs(""), 1);
  }
}

// ---- finishing -------------------------------------------------------------

void pump(Openai *o) {
  while (o->active < o->max_concurrent && !o->waiting.empty()) {
    Call *next = o->waiting.front();
    o->waiting.pop_front();
    next->queued = false;
    o->active++;
    start_attempt(next);
  }
}

void maybe_stopped(Openai *o) {
  if (o->stopping && o->calls.empty() && o->stop_done != nullptr) {
    cg_done_cb done = o->stop_done;
    o->stop_done = nullptr;
    done(o->stop_arg, 0);
  }
}

// Ends a call: on_done once, then the slot goes to the next waiting call.
void finish(Call *c, int status, std::string_view text) {
  Openai *o = c->o;
  if (c->finishing) return;
  c->finishing = true;
  if (c->timer_active) {
    o->api->timer_stop(o->host, c->timer_id);
    c->timer_active = false;
  }
  if (!c->queued && o->active > 0) o->active--;
  if (c->queued) {
    o->waiting.erase(std::find(o->waiting.begin(), o->waiting.end(), c));
    c->queued = false;
  }
  if (status == 0) {
    o->count("requests_total", "result=\"ok\"");
  } else if (status != CG_ECANCELED) {
    o->count("requests_total", "result=\"error\"");
  }
  if (status != CG_ECANCELED) breaker_result(o, c, status == 0);
  if (c->probe && status == CG_ECANCELED) o->probe_in_flight = false;
  const std::string owned_text(text);
  std::unique_ptr<Call> owned = std::move(o->calls.at(c->id));
  o->calls.erase(c->id);
  owned->sink.on_done(owned->sink.arg, status, cs(owned_text));
  pump(o);
  maybe_stopped(o);
}

// ---- responses -------------------------------------------------------------

// The service's error message from a JSON error body, or the status alone.
std::string describe_http_error(Openai *o, int32_t status, std::string_view body) {
  std::string msg;
  simdjson::dom::element doc;
  std::string_view text;
  if (o->parser.parse(body.data(), body.size()).get(doc) == simdjson::SUCCESS &&
      doc["error"]["message"].get_string().get(text) == simdjson::SUCCESS) {
    msg = o->scrub(text);
  }
  return "HTTP " + std::to_string(status) + (msg.empty() ? "" : ": " + msg);
}

// One `data:` payload of the stream.
void on_event(Call *c, std::string_view data) {
  const cg::openai::SseDelta d =
      cg::openai::sse_delta_parse(c->o->parser, data, [c](std::string_view piece) {
        c->answer.append(piece);
        if (c->want_deltas) {
          c->streamed = true;
          c->sink.on_delta(c->sink.arg, cs(piece));
        }
      });
  if (d.done) c->done_seen = true;
}

// One event's data, handed out by the SSE parser.
void on_sse_data(Call *c, std::string_view data) {
  if (!c->sse_seen) {
    c->sse_seen = true;
    std::string().swap(c->raw);  // a real stream: the copy is not needed
  }
  on_event(c, data);
}

int on_data(void *arg, int32_t status, cg_str_t chunk) {
  auto *c = static_cast<Call *>(arg);
  c->status = status;
  if (status != 200) {
    if (c->error_body.size() < 4096) c->error_body.append(sv(chunk));
    return 0;
  }
  c->sse.feed(sv(chunk), [c](std::string_view data) { on_sse_data(c, data); });
  if (!c->sse_seen && !c->raw_over) {
    if (c->raw.size() + chunk.len > kMaxJsonBody) {
      c->raw_over = true;
      std::string().swap(c->raw);
    } else {
      c->raw.append(sv(chunk));
    }
  }
  return 0;
}

uint64_t backoff_ms(Openai *o, int attempt) {
  const uint64_t cap =
      std::min<uint64_t>(kBackoffCapMs, kBackoffBaseMs << std::min(attempt - 1, 10));
  std::uniform_int_distribution<uint64_t> jitter(cap / 2, cap);
  return jitter(o->rng);
}

void on_retry_timer(void *arg, uint64_t) {
  auto *c = static_cast<Call *>(arg);
  c->timer_active = false;
  start_attempt(c);
}

// Retries when allowed; false when the caller must finish the call.
bool maybe_retry(Call *c, uint64_t delay_ms, const std::string &why) {
  Openai *o = c->o;
  if (c->streamed || c->cancelled || o->stopping || c->attempt > o->retries) return false;
  if (c->deadline_ms != 0 && o->now() + delay_ms >= c->deadline_ms) return false;
  o->count("retries_total", "");
  // One cause per attempt number: a request's retries each show, and an
  // outage that fails every request is a line a second per attempt.
  o->log_limited(CG_LOG_WARN, "attempt_failed_" + std::to_string(c->attempt),
                 "attempt " + std::to_string(c->attempt) + " failed (" + why + "); retrying in " +
                     std::to_string(delay_ms) + " ms");
  if (o->api->timer_start(o->host, delay_ms, 0, on_retry_timer, c, &c->timer_id) != 0) {
    return false;
  }
  c->timer_active = true;
  return true;
}

// The first value of response header `lower_name` (given in lower case),
// or "" when absent.
std::string_view header_value(const cg_http_client_response_t *resp, std::string_view lower_name) {
  for (uint32_t i = 0; i < resp->header_count; i++) {
    const std::string_view name = sv(resp->headers[i].name);
    if (name.size() == lower_name.size() &&
        std::equal(name.begin(), name.end(), lower_name.begin(),
                   [](char a, char b) { return std::tolower(a) == b; })) {
      return sv(resp->headers[i].value);
    }
  }
  return {};
}

uint64_t retry_after_ms(const cg_http_client_response_t *resp) {
  const std::string value(header_value(resp, "retry-after"));
  if (value.empty()) return 0;
  char *end = nullptr;
  const double secs = std::strtod(value.c_str(), &end);
  if (end != value.c_str() && secs >= 0) {
    return std::min<uint64_t>(kRetryAfterCapMs, static_cast<uint64_t>(secs * 1000));
  }
  return 0;
}

// A whole chat.completion body (asked for without a stream, or sent by a
// service that ignored "stream": true): its answer, or CG_EPROTO.
void finish_completion(Call *c, std::string_view body) {
  std::string_view text;
  if (!cg::openai::completion_content_parse(c->o->parser, body, &text)) {
    finish(c, CG_EPROTO, "HTTP 200 without choices[0].message.content");
    return;
  }
  finish(c, 0, text);
}

void on_http_done(void *arg, int result, const cg_http_client_response_t *resp) {
  auto *c = static_cast<Call *>(arg);
  Openai *o = c->o;
  c->http_active = false;
  if (c->cancelled || result == CG_ECANCELED) {
    finish(c, CG_ECANCELED, "cancelled");
    return;
  }
  if (result != 0) {
    const std::string why = std::string(cg_strerror(result)) + ": " + std::string(sv(resp->error));
    // A timeout used the call's whole budget: no time left to retry.
    if (result != CG_ETIMEDOUT && maybe_retry(c, backoff_ms(o, c->attempt), why)) return;
    finish(c, result, why);
    return;
  }
  const int32_t status = resp->status;
  if (status == 200) {
    if (o->stream) {
      // The body is whole: an event that lacks only its blank line counts.
      c->sse.finish([c](std::string_view data) { on_sse_data(c, data); });
      if (c->done_seen) {
        finish(c, 0, c->answer);
        return;
      }
      // Some services and proxies ignore "stream": true and answer one
      // chat.completion: the Content-Type says which it is.
      if (!c->sse_seen && cg::openai::is_json_content_type(header_value(resp, "content-type"))) {
        if (c->raw_over) {
          finish(c, CG_EPROTO, "a JSON answer over " + std::to_string(kMaxJsonBody) + " bytes");
          return;
        }
        if (!o->told_json) {
          o->told_json = true;
          o->log(CG_LOG_INFO,
                 "the service answered a streaming request with one JSON completion (it "
                 "ignores \"stream\": true): its answers arrive whole, not word by word");
        }
        const std::string body = std::move(c->raw);
        finish_completion(c, body);
        return;
      }
      const std::string why = "the stream ended early (no [DONE])";
      if (maybe_retry(c, backoff_ms(o, c->attempt), why)) return;
      finish(c, CG_EPROTO, why);
      return;
    }
    finish_completion(c, sv(resp->body));
    return;
  }
  const std::string why =
      describe_http_error(o, status, o->stream ? std::string_view(c->error_body) : sv(resp->body));
  if (status == 429 || status >= 500) {
    const uint64_t after = status == 429 ? retry_after_ms(resp) : 0;
    if (maybe_retry(c, after != 0 ? after : backoff_ms(o, c->attempt), why)) return;
    finish(c, status == 429 ? CG_EBUSY : CG_EUNAVAIL, why);
    return;
  }
  finish(c, status == 401 || status == 403 ? CG_EPERM : CG_EPROTO, why);
}

void start_attempt(Call *c) {
  Openai *o = c->o;
  // A cancelled call is finished by its deferred cancel; starting it would
  // leave a transfer pointing at a freed call.
  if (c->cancelled) return;
  c->attempt++;
  c->status = 0;
  c->done_seen = false;
  c->sse.clear();
  c->answer.clear();
  c->error_body.clear();
  c->sse_seen = false;
  c->raw_over = false;
  c->raw.clear();
  uint64_t timeout = o->timeout_ms;
  if (c->deadline_ms != 0) {
    const uint64_t now = o->now();
    if (now >= c->deadline_ms) {
      finish(c, CG_ETIMEDOUT, "no time left for another attempt");
      return;
    }
    timeout = std::min(timeout, c->deadline_ms - now);
  }
  std::vector<cg_http_header_t> headers;
  const std::string auth = "Bearer " + o->api_key;
  headers.push_back({cs("Content-Type"), cs("application/json")});
  headers.push_back({cs("Accept"), cs(o->stream ? "text/event-stream" : "application/json")});
  if (!o->api_key.empty()) headers.push_back({cs("Authorization"), cs(auth)});
  for (const std::string &h : o->headers) {
    const size_t colon = h.find(':');
    std::string_view name(h.data(), colon);
    std::string_view value(h.data() + colon + 1, h.size() - colon - 1);
    while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    headers.push_back({cs(name), cs(value)});
  }
  cg_http_client_request_t req{};
  req.struct_size = sizeof req;
  req.method = cs("POST");
  req.url = cs(o->url);
  req.headers = headers.data();
  req.header_count = static_cast<uint32_t>(headers.size());
  req.body = cs(c->body);
  req.timeout_ms = timeout;
  const int rc = o->api->http_request(o->host, &req, o->stream ? on_data : nullptr, on_http_done, c,
                                      &c->http_id);
  if (rc != 0) {
    // Attempts start from deferred tasks, timers or another call's end,
    // never inside generate, so finishing here is allowed.
    finish(c, rc, std::string("cannot start the request: ") + cg_strerror(rc));
    return;
  }
  c->http_active = true;
}

std::string build_body(Openai *o, const cg_model_request_t *req) {
  std::string b;
  b.reserve(256);
  b += "{\"model\":";
  json_escape(b, o->model);
  b += ",\"messages\":[";
  bool first = true;
  if (!o->system_prompt.empty()) {
    b += "{\"role\":\"system\",\"content\":";
    json_escape(b, o->system_prompt);
    b += '}';
    first = false;
  }
  const auto *base = reinterpret_cast<const unsigned char *>(req->turns);
  const size_t stride = req->turn_count > 0 ? req->turns[0].struct_size : 0;
  for (uint32_t i = 0; i < req->turn_count; i++) {
    const auto *t = reinterpret_cast<const cg_model_turn_t *>(base + i * stride);
    if (!first) b += ',';
    first = false;
    b += t->role == CG_ROLE_ASSISTANT ? "{\"role\":\"assistant\",\"content\":"
                                      : "{\"role\":\"user\",\"content\":";
    json_escape(b, sv(t->content));
    b += '}';
  }
  b += ']';
  if (o->stream) b += ",\"stream\":true";
  if (o->has_temperature) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.4g", o->temperature);
    b += ",\"temperature\":";
    b += buf;
  }
  if (o->max_tokens > 0) b += ",\"max_tokens\":" + std::to_string(o->max_tokens);
  b += '}';
  return b;
}

// ---- ops -------------------------------------------------------------------

void start_deferred(void *arg) { start_attempt(static_cast<Call *>(arg)); }

int oa_generate(void *state, const cg_model_request_t *req, const cg_model_sink_t *sink,
                uint64_t *call_id) noexcept {
  auto *o = static_cast<Openai *>(state);
  if (req == nullptr || sink == nullptr || sink->on_done == nullptr || req->turn_count == 0 ||
      req->turns == nullptr) {
    return CG_EINVAL;
  }
  if (o->stopping) return CG_ECLOSED;
  try {
    if (o->active >= o->max_concurrent && o->waiting.size() >= o->max_queue) {
      o->api->set_error(o->host, cs("all " + std::to_string(o->max_concurrent) +
                                    " request slots and the queue of " +
                                    std::to_string(o->max_queue) + " are taken"));
      o->count("requests_total", "result=\"busy\"");
      return CG_EBUSY;
    }
    bool probe = false;
    if (const int rc = breaker_admit(o, &probe); rc != 0) {
      o->count("requests_total", "result=\"breaker_open\"");
      return rc;
    }
    auto c = std::make_unique<Call>();
    c->o = o;
    c->id = o->next_id++;
    c->sink = *sink;
    c->probe = probe;
    c->want_deltas = req->stream != 0 && sink->on_delta != nullptr;
    c->body = build_body(o, req);
    if (req->timeout_ms != 0) c->deadline_ms = o->now() + req->timeout_ms;
    Call *raw = c.get();
    if (o->active < o->max_concurrent) {
      // Started on the next loop turn, so no callback can run inside
      // generate even if the request is refused at once.
      if (o->api->defer(o->host, start_deferred, raw) != 0) {
        if (probe) o->probe_in_flight = false;
        return CG_ECLOSED;
      }
      o->active++;
    } else {
      raw->queued = true;
      o->waiting.push_back(raw);
    }
    o->calls.emplace(raw->id, std::move(c));
    *call_id = raw->id;
    return 0;
  } catch (const std::bad_alloc &) {
    return CG_ENOMEM;
  }
}

void on_cancel_deferred(void *arg) {
  auto *c = static_cast<Call *>(arg);
  finish(c, CG_ECANCELED, "cancelled");
}

int oa_cancel(void *state, uint64_t call_id) noexcept {
  auto *o = static_cast<Openai *>(state);
  auto it = o->calls.find(call_id);
  if (it == o->calls.end() || it->second->cancelled) return CG_ENOENT;
  Call *c = it->second.get();
  c->cancelled = true;
  if (c->http_active) {
    // Its done callback (CG_ECANCELED) finishes the call on a later turn.
    if (o->api->http_cancel(o->host, c->http_id) == 0) return 0;
  }
  // Queued, between attempts, or about to start: finish on the next turn.
  if (o->api->defer(o->host, on_cancel_deferred, c) != 0) return CG_ECLOSED;
  return 0;
}

int oa_init(const cg_host_api_t *api, cg_host_t *host, const cg_config_t *config,
            void **state) noexcept {
  if (api->abi_minor < 1 || api->struct_size < offsetof(cg_host_api_t, http_cancel) + 8) {
    api->set_error(host, cs("needs a host with ABI 1.1 (outbound HTTP)"));
    return CG_ENOTSUP;
  }
  try {
    auto o = std::make_unique<Openai>();
    o->api = api;
    o->host = host;
    cg_str_t s{};
    int64_t n = 0;
    int b = 0;
    if (api->config_string(config, "endpoint", &s) != 0) return CG_ECONFIG;
    std::string endpoint(sv(s));
    if (!endpoint.starts_with("http://") && !endpoint.starts_with("https://")) {
      api->set_error(host, cs("endpoint must start with http:// or https://"));
      return CG_ECONFIG;
    }
    while (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
    o->url = endpoint.ends_with("/chat/completions") ? endpoint : endpoint + "/chat/completions";
    if (api->config_string(config, "apiKey", &s) == 0) o->api_key.assign(sv(s));
    if (o->api_key.find_first_of("\r\n") != std::string::npos) {
      api->set_error(host, cs("apiKey must not contain a line break"));
      return CG_ECONFIG;
    }
    if (api->config_string(config, "model", &s) != 0) return CG_ECONFIG;
    o->model.assign(sv(s));
    if (api->config_string(config, "systemPrompt", &s) == 0) o->system_prompt.assign(sv(s));
    double t = 0;
    if (api->config_double(config, "temperature", &t) == 0) {
      o->has_temperature = true;
      o->temperature = t;
    }
    if (api->config_int(config, "maxTokens", &n) == 0) o->max_tokens = n;
    if (api->config_int(config, "timeout", &n) == 0) o->timeout_ms = static_cast<uint64_t>(n);
    if (api->config_int(config, "retries", &n) == 0) o->retries = static_cast<int>(n);
    if (api->config_int(config, "maxConcurrent", &n) == 0) {
      o->max_concurrent = static_cast<size_t>(n);
    }
    if (api->config_int(config, "maxQueue", &n) == 0) o->max_queue = static_cast<size_t>(n);
    if (api->config_bool(config, "stream", &b) == 0) o->stream = b != 0;
    if (api->config_int(config, "breakerThreshold", &n) == 0) {
      o->breaker_threshold = static_cast<int>(n);
    }
    if (api->config_int(config, "breakerCooldownMs", &n) == 0) {
      o->breaker_cooldown_ms = static_cast<uint64_t>(n);
    }
    size_t count = 0;
    if (api->config_list_size(config, "headers", &count) == 0) {
      for (size_t i = 0; i < count; i++) {
        if (api->config_list_item(config, "headers", i, &s) != 0) return CG_ECONFIG;
        const std::string h(sv(s));
        const size_t colon = h.find(':');
        if (colon == std::string::npos || colon == 0 ||
            h.find_first_of("\r\n") != std::string::npos) {
          api->set_error(
              host, cs("headers[" + std::to_string(i) + "] must be \"Name: value\" on one line"));
          return CG_ECONFIG;
        }
        o->headers.push_back(h);
      }
    }
    *state = o.release();
    return 0;
  } catch (const std::bad_alloc &) {
    return CG_ENOMEM;
  }
}

int oa_start(void *state) noexcept {
  auto *o = static_cast<Openai *>(state);
  o->api->metric_gauge_set(o->host, cs("breaker_open"), cs(""), 0);
  o->log(CG_LOG_INFO, "model '" + o->model + "' at " + o->url +
                          (o->api_key.empty() ? " (no API key)" : " (API key set)"));
  return 0;
}

void oa_stop(void *state, cg_done_cb done, void *done_arg) noexcept {
  auto *o = static_cast<Openai *>(state);
  o->stopping = true;
  o->stop_done = done;
  o->stop_arg = done_arg;
  if (o->calls.empty()) {
    // done must not run inside stop: defer it like everything else.
    if (o->api->defer(
            o->host, [](void *arg) { maybe_stopped(static_cast<Openai *>(arg)); }, o) != 0) {
      o->stop_done = nullptr;
      done(done_arg, 0);
    }
    return;
  }
  std::vector<uint64_t> ids;
  for (const auto &[id, c] : o->calls) ids.push_back(id);
  for (uint64_t id : ids) oa_cancel(o, id);
}

void oa_destroy(void *state) noexcept {
  std::unique_ptr<Openai> owned(static_cast<Openai *>(state));
}

const cg_model_ops_t kOps = {sizeof(cg_model_ops_t), oa_generate, oa_cancel};

constexpr int64_t kMaxMs = int64_t{24} * 3600 * 1000;

const cg_config_field_t kFields[] = {
    {sizeof(cg_config_field_t), CG_CFG_STRING, CG_CFG_REQUIRED, "endpoint", nullptr,
     "base URL, e.g. https://api.openai.com/v1 (/chat/completions is appended)", nullptr, 0, 0},
    {sizeof(cg_config_field_t), CG_CFG_STRING, CG_CFG_SECRET, "apiKey", "",
     "sent as Authorization: Bearer; empty for none (Ollama, vLLM)", nullptr, 0, 0},
    {sizeof(cg_config_field_t), CG_CFG_STRING, CG_CFG_REQUIRED, "model", nullptr,
     "model name, e.g. gpt-4o-mini, deepseek-chat, qwen-plus", nullptr, 0, 0},
    {sizeof(cg_config_field_t), CG_CFG_STRING, 0, "systemPrompt", "",
     "sent first as the system message; empty for none", nullptr, 0, 0},
    {sizeof(cg_config_field_t), CG_CFG_DOUBLE, 0, "temperature", nullptr,
     "sampling temperature; unset: the service's default", nullptr, 0, 0},
    {sizeof(cg_config_field_t), CG_CFG_INT, 0, "maxTokens", "0",
     "max_tokens of the answer; 0: the service's default", nullptr, 0, 1000000},
    {sizeof(cg_config_field_t), CG_CFG_INT, 0, "timeout", "30000",
     "ms for one attempt (the router's modelTimeoutMs bounds the whole call)", nullptr, 100,
     kMaxMs},
    {sizeof(cg_config_field_t), CG_CFG_INT, 0, "retries", "3",
     "extra attempts on connect errors, 429 and 5xx (never after streaming began)", nullptr, 0, 10},
    {sizeof(cg_config_field_t), CG_CFG_INT, 0, "maxConcurrent", "64",
     "requests in flight to the service; more wait in the queue", nullptr, 1, 100000},
    {sizeof(cg_config_field_t), CG_CFG_INT, 0, "maxQueue", "256",
     "requests waiting for a slot; beyond, the user is told the model is busy", nullptr, 0,
     1000000},
    {sizeof(cg_config_field_t), CG_CFG_BOOL, 0, "stream", "true",
     "ask for server-sent events (partial answers reach streaming channels)", nullptr, 0, 0},
    {sizeof(cg_config_field_t), CG_CFG_STRING_LIST, CG_CFG_SECRET, "headers", nullptr,
     "extra request headers, each \"Name: value\" (secret: values may carry keys)", nullptr, 0, 0},
    {sizeof(cg_config_field_t), CG_CFG_INT, 0, "breakerThreshold", "5",
     "consecutive failed calls that open the circuit breaker; 0: never", nullptr, 0, 1000},
    {sizeof(cg_config_field_t), CG_CFG_INT, 0, "breakerCooldownMs", "30000",
     "how long the breaker stays open before one probe call", nullptr, 100, kMaxMs},
};

const cg_plugin_t kPlugin = {
    sizeof(cg_plugin_t),
    CG_ABI_MAJOR,
    1,  // needs the host's outbound HTTP (1.1)
    CG_KIND_MODEL,
    "openai",
    "1.0.0",
    "OpenAI-compatible Chat Completions backend (streaming, retries, circuit breaker)",
    0,
    kFields,
    sizeof(kFields) / sizeof(kFields[0]),
    0,
    oa_init,
    oa_start,
    oa_stop,
    oa_destroy,
    &kOps,
};

}  // namespace

extern "C" CG_EXPORT const cg_plugin_t *cg_plugin_entry(uint32_t host_major, uint32_t host_minor) {
  // Declines a 1.0 host cleanly: it has no outbound HTTP.
  return host_major == CG_ABI_MAJOR && host_minor >= 1 ? &kPlugin : nullptr;
}
