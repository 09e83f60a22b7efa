// The cg_host_api_t table: the functions plugins call, routed to the
// instance's services. Every function checks its arguments, because a
// plugin's mistake must end in an error code, not a host crash.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <chatgate/cpp.hpp>
#include <string>
#include <vector>

#include "base/log.h"
#include "base/log_throttle.h"
#include "base/loop.h"
#include "base/metrics.h"
#include "host/cache.h"
#include "host/channel_port.h"
#include "host/inbound_message.h"
#include "host/message_sink.h"
#include "host/plugin_instance.h"
#include "net/http_client.h"
#include "net/http_server.h"
#include "net/ws_client.h"

namespace cg {
namespace {

constexpr auto sv = chatgate::view;
constexpr auto cs = chatgate::str;

PluginInstance *inst(cg_host_t *h) { return h ? h->instance : nullptr; }

const PluginConfigValue *cfg_value(const cg_config_t *cfg, const char *key, uint32_t type) {
  if (cfg == nullptr || key == nullptr) return nullptr;
  const auto *values = reinterpret_cast<const PluginConfig *>(cfg);
  const PluginConfigValue *v = values->find(key);
  return (v != nullptr && v->type == type) ? v : nullptr;
}

// ---- identity and logging ----

cg_str_t h_instance_name(cg_host_t *h) {
  auto *i = inst(h);
  return i ? cs(i->name()) : cg_str_t{nullptr, 0};
}

// One line of a plugin's, prefixed with its instance name.
void log_line(const PluginInstance &i, int level, cg_str_t msg, std::string_view suffix) {
  spdlog::log(static_cast<spdlog::level::level_enum>(log_level_from_cg(level)), "[{}] {}{}",
              i.name(), sv(msg), suffix);
}

void h_log(cg_host_t *h, int level, cg_str_t msg) {
  if (auto *i = inst(h)) log_line(*i, level, msg, {});
}

void h_log_throttled(cg_host_t *h, int level, cg_str_t cause, cg_str_t msg) {
  auto *i = inst(h);
  if (i == nullptr) return;
  LogThrottle &throttle = i->log_throttle();
  if (!throttle.attached()) {
    // A held-back stretch whose cause then went quiet still gets its line.
    throttle.attach(*i->services()->loop, [i](std::string_view, uint64_t held, int lvl,
                                              std::string_view line) {
      spdlog::log(static_cast<spdlog::level::level_enum>(log_level_from_cg(lvl)),
                  "[{}] {} more like this were held back, none since: {}", i->name(), held, line);
    });
  }
  if (std::string more;
      throttle.due(sv(cause), i->services()->loop->now_ms(), &more, level, sv(msg))) {
    log_line(*i, level, msg, more);
  }
}

void h_set_error(cg_host_t *h, cg_str_t msg) {
  if (auto *i = inst(h)) i->set_error(sv(msg));
}

void h_set_state(cg_host_t *h, int state, cg_str_t reason) {
  if (auto *i = inst(h); i && state >= CG_STATE_STARTING && state <= CG_STATE_FAILED) {
    i->set_health(state, sv(reason));
  }
}

uint64_t h_now_ms(cg_host_t *h) {
  auto *i = inst(h);
  return i ? i->services()->loop->now_ms() : 0;
}

// ---- config ----

int h_config_string(const cg_config_t *cfg, const char *key, cg_str_t *out) {
  const PluginConfigValue *v = cfg_value(cfg, key, CG_CFG_STRING);
  if (v == nullptr) v = cfg_value(cfg, key, CG_CFG_ENUM);
  if (v == nullptr || out == nullptr) return CG_EINVAL;
  if (!v->present) return CG_ENOENT;
  *out = cs(v->str);
  return 0;
}

int h_config_int(const cg_config_t *cfg, const char *key, int64_t *out) {
  const PluginConfigValue *v = cfg_value(cfg, key, CG_CFG_INT);
  if (v == nullptr || out == nullptr) return CG_EINVAL;
  if (!v->present) return CG_ENOENT;
  *out = v->i;
  return 0;
}

int h_config_double(const cg_config_t *cfg, const char *key, double *out) {
  const PluginConfigValue *v = cfg_value(cfg, key, CG_CFG_DOUBLE);
  if (v == nullptr || out == nullptr) return CG_EINVAL;
  if (!v->present) return CG_ENOENT;
  *out = v->d;
  return 0;
}

int h_config_bool(const cg_config_t *cfg, const char *key, int *out) {
  const PluginConfigValue *v = cfg_value(cfg, key, CG_CFG_BOOL);
  if (v == nullptr || out == nullptr) return CG_EINVAL;
  if (!v->present) return CG_ENOENT;
  *out = v->b ? 1 : 0;
  return 0;
}

int h_config_list_size(const cg_config_t *cfg, const char *key, size_t *out) {
  const PluginConfigValue *v = cfg_value(cfg, key, CG_CFG_STRING_LIST);
  if (v == nullptr || out == nullptr) return CG_EINVAL;
  if (!v->present) return CG_ENOENT;
  *out = v->list.size();
  return 0;
}

int h_config_list_item(const cg_config_t *cfg, const char *key, size_t index, cg_str_t *out) {
  const PluginConfigValue *v = cfg_value(cfg, key, CG_CFG_STRING_LIST);
  if (v == nullptr || out == nullptr) return CG_EINVAL;
  if (!v->present || index >= v->list.size()) return CG_ENOENT;
  *out = cs(v->list[index]);
  return 0;
}

// ---- scheduling ----

int h_post(cg_host_t *h, cg_fn fn, void *arg) {
  auto *i = inst(h);
  if (i == nullptr || fn == nullptr) return CG_EINVAL;
  return i->services()->loop->post(fn, arg);
}

int h_defer(cg_host_t *h, cg_fn fn, void *arg) {
  auto *i = inst(h);
  if (i == nullptr || fn == nullptr) return CG_EINVAL;
  return i->services()->loop->defer(fn, arg);
}

int h_timer_start(cg_host_t *h, uint64_t timeout_ms, uint64_t repeat_ms, cg_timer_cb cb, void *arg,
                  uint64_t *timer_id) {
  auto *i = inst(h);
  if (i == nullptr || cb == nullptr) return CG_EINVAL;
  return i->services()->loop->timer_start(timeout_ms, repeat_ms, cb, arg, timer_id);
}

int h_timer_stop(cg_host_t *h, uint64_t timer_id) {
  auto *i = inst(h);
  if (i == nullptr) return CG_EINVAL;
  return i->services()->loop->timer_stop(timer_id);
}

int h_queue_work(cg_host_t *h, cg_fn work, cg_work_done_cb done, void *arg) {
  auto *i = inst(h);
  if (i == nullptr || work == nullptr || done == nullptr) return CG_EINVAL;
  return i->services()->loop->queue_work(work, done, arg);
}

// ---- messages ----

// What both emits refuse at once; 0 with *sink set otherwise.
int emit_check(PluginInstance *i, const cg_message_t *msg, MessageSink **sink) {
  if (i == nullptr || msg == nullptr) return CG_EINVAL;
  if (i->kind() != CG_KIND_CHANNEL) return CG_EPERM;
  if (msg->struct_size < offsetof(cg_message_t, reply_token) + sizeof(cg_str_t)) return CG_EINVAL;
  if (msg->conversation_id.len == 0 || msg->sender_id.len == 0) return CG_EINVAL;
  *sink = i->services()->sink;
  return *sink == nullptr ? CG_EUNAVAIL : 0;
}

int h_emit_message(cg_host_t *h, const cg_message_t *msg) {
  auto *i = inst(h);
  MessageSink *sink = nullptr;
  if (int rc = emit_check(i, msg, &sink); rc != 0) return rc;
  return sink->submit(InboundMessage::from_c(i->channel_port(), *msg));
}

int h_emit_message_durable(cg_host_t *h, const cg_message_t *msg, cg_done_cb done, void *arg) {
  auto *i = inst(h);
  if (done == nullptr) return CG_EINVAL;
  MessageSink *sink = nullptr;
  if (int rc = emit_check(i, msg, &sink); rc != 0) return rc;
  sink->submit_durable(InboundMessage::from_c(i->channel_port(), *msg), done, arg);
  return 0;
}

// ---- HTTP routes ----

int h_http_route_add(cg_host_t *h, cg_str_t method, cg_str_t path, uint32_t flags,
                     cg_http_handler_cb cb, void *arg) {
  auto *i = inst(h);
  if (i == nullptr || cb == nullptr || path.len == 0 || method.len == 0) return CG_EINVAL;
  HttpServer *api = i->services()->api;
  if (api == nullptr) return CG_EUNAVAIL;
  const int rc = api->add_route(sv(method), sv(path), (flags & CG_ROUTE_PREFIX) != 0,
                                [cb, arg](HttpExchange *ex, const HttpRequest &req) {
                                  // Views into the request, which outlives this call.
                                  thread_local std::vector<cg_http_header_t> headers;
                                  headers.clear();
                                  for (const HttpHeader &hd : req.headers())
                                    headers.push_back({cs(hd.name), cs(hd.value)});
                                  cg_http_request_t r{};
                                  r.struct_size = sizeof r;
                                  r.header_count = static_cast<uint32_t>(headers.size());
                                  r.method = cs(req.method());
                                  r.path = cs(req.path());
                                  r.query = cs(req.query());
                                  r.headers = headers.data();
                                  r.body = cs(req.body());
                                  r.remote_addr = cs(req.remote_addr());
                                  cb(arg, reinterpret_cast<cg_http_exchange_t *>(ex), &r);
                                });
  if (rc == 0) return 0;
  return rc == -EEXIST ? CG_EEXIST : CG_EINVAL;
}

int h_http_respond(cg_host_t *h, cg_http_exchange_t *ex, int status,
                   const cg_http_header_t *headers, size_t header_count, cg_str_t body) {
  auto *i = inst(h);
  if (i == nullptr || ex == nullptr || status < 100 || status > 999) return CG_EINVAL;
  if (header_count > 0 && headers == nullptr) return CG_EINVAL;
  std::vector<HttpHeader> hs;
  hs.reserve(header_count);
  for (size_t k = 0; k < header_count; k++)
    hs.push_back({sv(headers[k].name), sv(headers[k].value)});
  i->services()->api->respond(reinterpret_cast<HttpExchange *>(ex), status, hs, sv(body));
  return 0;
}

// ---- cache: namespaced per instance ----

std::string cache_key(PluginInstance *i, cg_str_t key) {
  return fmt::format("p:{}:{}", i->name(), sv(key));
}

Cache *cache_of(PluginInstance *i) {
  Cache *c = i->services()->cache;
  return (c != nullptr && c->available()) ? c : nullptr;
}

constexpr auto kDeferred = Cache::Delivery::kDeferred;

int h_cache_get(cg_host_t *h, cg_str_t key, cg_cache_cb cb, void *arg) {
  auto *i = inst(h);
  if (i == nullptr || cb == nullptr) return CG_EINVAL;
  Cache *c = cache_of(i);
  if (c == nullptr) return CG_EUNAVAIL;
  const std::string k = cache_key(i, key);
  return c->get(k, cb, arg, kDeferred);
}

int h_cache_set(cg_host_t *h, cg_str_t key, cg_str_t value, uint64_t ttl_ms, cg_cache_cb cb,
                void *arg) {
  auto *i = inst(h);
  if (i == nullptr || cb == nullptr) return CG_EINVAL;
  Cache *c = cache_of(i);
  if (c == nullptr) return CG_EUNAVAIL;
  const std::string k = cache_key(i, key);
  return c->set(k, sv(value), ttl_ms, cb, arg, kDeferred);
}

int h_cache_set_nx(cg_host_t *h, cg_str_t key, cg_str_t value, uint64_t ttl_ms, cg_cache_cb cb,
                   void *arg) {
  auto *i = inst(h);
  if (i == nullptr || cb == nullptr) return CG_EINVAL;
  Cache *c = cache_of(i);
  if (c == nullptr) return CG_EUNAVAIL;
  const std::string k = cache_key(i, key);
  return c->set_nx(k, sv(value), ttl_ms, cb, arg, kDeferred);
}

int h_cache_del(cg_host_t *h, cg_str_t key, cg_cache_cb cb, void *arg) {
  auto *i = inst(h);
  if (i == nullptr || cb == nullptr) return CG_EINVAL;
  Cache *c = cache_of(i);
  if (c == nullptr) return CG_EUNAVAIL;
  const std::string k = cache_key(i, key);
  return c->del(k, cb, arg, kDeferred);
}

// ---- metrics: chatgate_plugin_<name>{plugin_instance="...",<labels>} ----
// Not "instance": Prometheus gives that label to the scraped target.

template <typename Fn>
int with_series(cg_host_t *h, cg_str_t name, cg_str_t labels, Fn fn) {
  auto *i = inst(h);
  if (i == nullptr) return CG_EINVAL;
  const std::string full = fmt::format("chatgate_plugin_{}", sv(name));
  const std::string lbl = labels.len
                              ? fmt::format("plugin_instance=\"{}\",{}", i->name(), sv(labels))
                              : fmt::format("plugin_instance=\"{}\"", i->name());
  return fn(*i->services()->metrics, full, lbl) ? 0 : CG_EINVAL;
}

int h_metric_counter_add(cg_host_t *h, cg_str_t name, cg_str_t labels, double value) {
  if (value < 0) return CG_EINVAL;
  return with_series(h, name, labels,
                     [value](Metrics &m, const std::string &n, const std::string &l) {
                       double *c = m.counter(n, l);
                       if (c) *c += value;
                       return c != nullptr;
                     });
}

int h_metric_gauge_set(cg_host_t *h, cg_str_t name, cg_str_t labels, double value) {
  return with_series(h, name, labels,
                     [value](Metrics &m, const std::string &n, const std::string &l) {
                       double *g = m.gauge(n, l);
                       if (g) *g = value;
                       return g != nullptr;
                     });
}

int h_metric_observe(cg_host_t *h, cg_str_t name, cg_str_t labels, double value) {
  return with_series(h, name, labels,
                     [value](Metrics &m, const std::string &n, const std::string &l) {
                       Histogram *hist = m.histogram(n, l);
                       if (hist) hist->observe(value);
                       return hist != nullptr;
                     });
}

// ---- outbound HTTP (since 1.1) ----

int h_http_request(cg_host_t *h, const cg_http_client_request_t *req, cg_http_data_cb on_data,
                   cg_http_done_cb done, void *arg, uint64_t *request_id) {
  auto *i = inst(h);
  if (i == nullptr || req == nullptr || done == nullptr) return CG_EINVAL;
  if (req->struct_size < sizeof(cg_http_client_request_t)) return CG_EINVAL;
  HttpClient *http = i->services()->http;
  if (http == nullptr) return CG_EUNAVAIL;
  return http->request(*req, on_data, done, arg, request_id);
}

int h_http_cancel(cg_host_t *h, uint64_t request_id) {
  auto *i = inst(h);
  if (i == nullptr) return CG_EINVAL;
  HttpClient *http = i->services()->http;
  if (http == nullptr) return CG_ENOENT;
  return http->cancel(request_id);
}

// ---- channels: drops and proactive sends (since 1.3) ----

int h_message_dropped(cg_host_t *h, cg_str_t reason) {
  auto *i = inst(h);
  if (i == nullptr) return CG_EINVAL;
  const std::string_view r = sv(reason);
  if (r.empty() || r.size() > 32 ||
      !std::all_of(r.begin(), r.end(), [](char c) { return (c >= 'a' && c <= 'z') || c == '_'; })) {
    return CG_EINVAL;
  }
  if (i->kind() != CG_KIND_CHANNEL) return CG_EPERM;
  if (i->services()->sink == nullptr) return CG_EUNAVAIL;
  i->services()->sink->count_dropped(i->name(), r);
  return 0;
}

int h_send_message(cg_host_t *h, cg_str_t channel, const cg_reply_t *msg, cg_done_cb done,
                   void *arg) {
  auto *i = inst(h);
  if (i == nullptr || msg == nullptr || done == nullptr) return CG_EINVAL;
  if (msg->struct_size < offsetof(cg_reply_t, answer_id) + sizeof(uint64_t)) return CG_EINVAL;
  MessageSink *sink = i->services()->sink;
  if (sink == nullptr) return CG_EUNAVAIL;
  ProactiveMessage m;
  m.channel = sv(channel);
  m.conversation = sv(msg->conversation_id);
  m.conversation_type = msg->conversation_type;
  m.format = msg->format;
  m.text = sv(msg->text);
  const ProactiveResult res = sink->send_proactive(m, done, arg);
  if (res.status != 0) spdlog::warn("[{}] send_message: {}", i->name(), res.why);
  return res.status;
}

// ---- what end users read (since 1.8) ----

int h_user_text(cg_host_t *h, cg_str_t key, cg_str_t *out) {
  auto *i = inst(h);
  if (i == nullptr || out == nullptr) return CG_EINVAL;
  MessageSink *sink = i->services()->sink;
  if (sink == nullptr) return CG_EUNAVAIL;
  const std::optional<std::string_view> text = sink->user_text(i->name(), sv(key));
  if (!text) return CG_ENOENT;
  *out = cs(*text);
  return 0;
}

// ---- per-instance capabilities (since 1.4) ----

int h_set_capabilities(cg_host_t *h, uint64_t capabilities) {
  auto *i = inst(h);
  if (i == nullptr) return CG_EINVAL;
  return i->set_capabilities(capabilities);
}

// ---- WebSocket client (since 1.2) ----

int h_ws_connect(cg_host_t *h, const cg_ws_connect_t *opts, cg_ws_cb cb, void *arg,
                 uint64_t *ws_id) {
  auto *i = inst(h);
  if (i == nullptr || opts == nullptr || cb == nullptr) return CG_EINVAL;
  if (opts->struct_size < sizeof(cg_ws_connect_t)) return CG_EINVAL;
  WsClient *ws = i->services()->ws;
  if (ws == nullptr) return CG_EUNAVAIL;
  return ws->connect(i, *opts, cb, arg, ws_id);
}

int h_ws_send(cg_host_t *h, uint64_t ws_id, uint32_t opcode, cg_str_t data) {
  auto *i = inst(h);
  if (i == nullptr) return CG_EINVAL;
  WsClient *ws = i->services()->ws;
  return ws == nullptr ? CG_ENOENT : ws->send(i, ws_id, opcode, chatgate::view(data));
}

int h_ws_ping(cg_host_t *h, uint64_t ws_id, cg_str_t data) {
  auto *i = inst(h);
  if (i == nullptr) return CG_EINVAL;
  WsClient *ws = i->services()->ws;
  return ws == nullptr ? CG_ENOENT : ws->ping(i, ws_id, chatgate::view(data));
}

int h_ws_close(cg_host_t *h, uint64_t ws_id, int32_t code, cg_str_t reason) {
  auto *i = inst(h);
  if (i == nullptr) return CG_EINVAL;
  WsClient *ws = i->services()->ws;
  return ws == nullptr ? CG_ENOENT : ws->close(i, ws_id, code, chatgate::view(reason));
}

uint64_t h_backoff_ms(cg_host_t * /*h*/, uint32_t attempt, uint64_t base_ms, uint64_t max_ms) {
  return backoff_delay_ms(attempt, base_ms, max_ms);
}

// ---- file descriptor readiness (since 1.1) ----

int h_fd_watch_start(cg_host_t *h, int fd, uint32_t events, cg_fd_cb cb, void *arg,
                     uint64_t *watch_id) {
  auto *i = inst(h);
  if (i == nullptr || cb == nullptr) return CG_EINVAL;
  Loop *loop = i->services()->loop;
  if (loop == nullptr) return CG_EUNAVAIL;
  return loop->fd_watch_start(fd, events, cb, arg, watch_id);
}

int h_fd_watch_update(cg_host_t *h, uint64_t watch_id, uint32_t events) {
  auto *i = inst(h);
  if (i == nullptr || i->services()->loop == nullptr) return CG_EINVAL;
  return i->services()->loop->fd_watch_update(watch_id, events);
}

int h_fd_watch_stop(cg_host_t *h, uint64_t watch_id) {
  auto *i = inst(h);
  if (i == nullptr || i->services()->loop == nullptr) return CG_EINVAL;
  return i->services()->loop->fd_watch_stop(watch_id);
}

const cg_host_api_t kHostApi = {
    sizeof(cg_host_api_t),
    CG_ABI_MAJOR,
    CG_ABI_MINOR,
    h_instance_name,
    h_log,
    h_set_error,
    h_set_state,
    h_now_ms,
    h_config_string,
    h_config_int,
    h_config_double,
    h_config_bool,
    h_config_list_size,
    h_config_list_item,
    h_post,
    h_defer,
    h_timer_start,
    h_timer_stop,
    h_queue_work,
    h_emit_message,
    h_http_route_add,
    h_http_respond,
    h_cache_get,
    h_cache_set,
    h_cache_set_nx,
    h_cache_del,
    h_metric_counter_add,
    h_metric_gauge_set,
    h_metric_observe,
    h_http_request,
    h_http_cancel,
    h_fd_watch_start,
    h_fd_watch_update,
    h_fd_watch_stop,
    h_ws_connect,
    h_ws_send,
    h_ws_ping,
    h_ws_close,
    h_backoff_ms,
    h_message_dropped,
    h_send_message,
    h_set_capabilities,
    h_log_throttled,
    h_emit_message_durable,
    h_user_text,
};

}  // namespace

const cg_host_api_t *host_api_table() { return &kHostApi; }

}  // namespace cg
