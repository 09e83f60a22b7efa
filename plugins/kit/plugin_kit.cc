#include "plugin_kit.h"

#include <algorithm>
#include <cctype>
#include <chatgate/cpp.hpp>
#include <chatgate/json.hpp>
#include <cstddef>
#include <cstdlib>
#include <ctime>
#include <memory>

namespace kit {

std::string header_value(const cg_http_header_t *headers, uint32_t n, std::string_view name) {
  for (uint32_t i = 0; i < n; ++i) {
    const std::string_view h = chatgate::view(headers[i].name);
    if (h.size() == name.size() && std::equal(h.begin(), h.end(), name.begin(), [](char a, char b) {
          return std::tolower(static_cast<unsigned char>(a)) ==
                 std::tolower(static_cast<unsigned char>(b));
        })) {
      return std::string(chatgate::view(headers[i].value));
    }
  }
  return {};
}

int defer_done(const cg_host_api_t *api, cg_host_t *host, cg_done_cb done, void *arg, int status) {
  struct Done {
    cg_done_cb fn;
    void *arg;
    int status;
  };
  auto *d = new Done{done, arg, status};
  const int rc = api->defer(
      host,
      [](void *p) {
        std::unique_ptr<Done> owned(static_cast<Done *>(p));
        owned->fn(owned->arg, owned->status);
      },
      d);
  if (rc != 0) delete d;
  return rc;
}

std::string config_string(const cg_host_api_t *api, const cg_config_t *cfg, const char *key) {
  cg_str_t s{};
  return api->config_string(cfg, key, &s) == 0 ? std::string(chatgate::view(s)) : std::string();
}

std::optional<std::string> config_string_if_set(const cg_host_api_t *api, const cg_config_t *cfg,
                                                const char *key) {
  cg_str_t s{};
  if (api->config_string(cfg, key, &s) != 0) return std::nullopt;
  return std::string(chatgate::view(s));
}

int64_t config_int(const cg_host_api_t *api, const cg_config_t *cfg, const char *key) {
  int64_t v = 0;
  api->config_int(cfg, key, &v);
  return v;
}

bool config_bool(const cg_host_api_t *api, const cg_config_t *cfg, const char *key) {
  int v = 0;
  api->config_bool(cfg, key, &v);
  return v != 0;
}

bool timestamp_fresh(std::string_view text, int64_t unit_ms, uint64_t window_ms) {
  const std::string s(text);
  char *end = nullptr;
  const long long value = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || end != s.c_str() + s.size()) return false;
  const auto now_ms = static_cast<int64_t>(std::time(nullptr)) * 1000;
  return std::llabs(now_ms - value * unit_ms) <= static_cast<long long>(window_ms);
}

void PluginBase::log(int level, const std::string &line) const {
  api->log(host, level, chatgate::str(line));
}

void PluginBase::log_limited(int level, std::string_view cause, const std::string &line) const {
  if (api->abi_minor >= 4) {
    api->log_throttled(host, level, chatgate::str(cause), chatgate::str(line));
  } else {
    log(level, line);
  }
}

std::string PluginBase::user_text(std::string_view key, std::string_view fallback) const {
  cg_str_t text{};
  if (api->abi_minor >= 8 &&
      api->struct_size >= offsetof(cg_host_api_t, user_text) + sizeof(void *) &&
      api->user_text(host, chatgate::str(key), &text) == 0) {
    return std::string(chatgate::view(text));
  }
  return std::string(fallback);
}

std::string PluginBase::unsupported_reply(const std::optional<std::string> &configured) const {
  if (configured) return *configured;
  return user_text("unsupported",
                   "Sorry, I can't read this kind of message yet. Please send it as text.");
}

void PluginBase::respond_json(cg_http_exchange_t *ex, int status, const std::string &body) const {
  const cg_http_header_t ct = {chatgate::str("Content-Type"),
                               chatgate::str("application/json; charset=utf-8")};
  api->http_respond(host, ex, status, &ct, 1, chatgate::str(body));
}

void PluginBase::refuse_callback(cg_http_exchange_t *ex, int status, const std::string &why,
                                 const cg_http_request_t *req) const {
  // The cause is the reason without its details ("malformed callback: ..."):
  // a flood of one kind of bad callback is one line a second.
  log_limited(CG_LOG_WARN, "refused: " + why.substr(0, why.find(':')),
              "webhook: refused a callback from " + std::string(chatgate::view(req->remote_addr)) +
                  ": " + why);
  respond_json(ex, status, "{\"msg\":" + chatgate::json_string(why) + "}");
}

bool PluginBase::after(uint64_t ms, std::function<void()> fn) {
  uint64_t id = 0;
  // The id is known only once timer_start returns: the callback looks it up.
  const int rc = api->timer_start(
      host, ms, 0,
      [](void *a, uint64_t timer_id) {
        auto *self = static_cast<PluginBase *>(a);
        auto it = self->timers_.find(timer_id);
        if (it == self->timers_.end()) return;
        auto run = std::move(it->second);
        self->timers_.erase(it);
        run();
      },
      this, &id);
  if (rc != 0) return false;
  timers_.emplace(id, std::move(fn));
  return true;
}

struct PluginBase::HttpCall {
  PluginBase *self;
  HttpFn fn;
  uint64_t id = 0;
};

void PluginBase::on_http_done(void *arg, int result, const cg_http_client_response_t *resp) {
  std::unique_ptr<HttpCall> c(static_cast<HttpCall *>(arg));
  PluginBase *self = c->self;
  self->http_ids_.erase(c->id);
  self->in_flight--;
  c->fn(result, resp);
  self->maybe_stopped();
}

int PluginBase::http(std::string_view method, const std::string &url,
                     const std::vector<std::pair<std::string, std::string>> &headers,
                     std::string_view body, HttpFn fn) {
  if (stopping) return CG_ECLOSED;
  std::vector<cg_http_header_t> hs;
  hs.reserve(headers.size());
  for (const auto &[n, v] : headers) hs.push_back({chatgate::str(n), chatgate::str(v)});
  cg_http_client_request_t req{};
  req.struct_size = sizeof req;
  req.method = chatgate::str(method);
  req.url = chatgate::str(url);
  req.headers = hs.data();
  req.header_count = static_cast<uint32_t>(hs.size());
  req.body = chatgate::str(body);
  req.timeout_ms = request_timeout_ms;
  auto call = std::make_unique<HttpCall>(HttpCall{this, std::move(fn)});
  HttpCall *raw = call.get();
  uint64_t id = 0;
  const int rc = api->http_request(host, &req, nullptr, on_http_done, raw, &id);
  if (rc != 0) return rc;
  (void)call.release();  // on_http_done owns it now
  raw->id = id;
  http_ids_.insert(id);
  in_flight++;
  return 0;
}

void PluginBase::stop_io() {
  stopping = true;
  const std::set<uint64_t> ids = http_ids_;
  for (uint64_t id : ids) api->http_cancel(host, id);
  auto timers = std::move(timers_);
  timers_.clear();
  for (auto &[id, fn] : timers) {
    api->timer_stop(host, id);
    fn();
  }
}

void PluginBase::begin_stop(cg_done_cb done, void *arg) {
  stop_done_ = done;
  stop_arg_ = arg;
  maybe_stopped();
}

struct PluginBase::Emit {
  PluginBase *self;
  std::string label, retry;
  std::function<void(bool)> taken;
};

void PluginBase::settle(int status, const std::string &label, const std::string &retry,
                        const std::function<void(bool)> &taken) const {
  if (status == CG_EBUSY || status == CG_EUNAVAIL || status == CG_ECLOSED) {
    const char *cause = status == CG_EBUSY      ? "router_busy"
                        : status == CG_EUNAVAIL ? "router_unavailable"
                                                : "router_closed";
    const char *why = status == CG_EBUSY      ? "the router is full"
                      : status == CG_EUNAVAIL ? "the router's queue is unreachable"
                                              : "shutting down";
    log_limited(CG_LOG_WARN, cause, std::string(why) + ": " + retry);
    return taken(false);
  }
  // CG_EEXIST: a duplicate the router holds or answered. Anything else the
  // router can never take: acknowledged, or the platform would deliver it
  // again and again.
  if (status != 0 && status != CG_EEXIST) {
    log_limited(CG_LOG_ERROR, "router_refused",
                "the router refused " + label + ": " + cg_strerror(status));
  }
  taken(true);
}

void PluginBase::on_emitted(void *arg, int status) {
  std::unique_ptr<Emit> e(static_cast<Emit *>(arg));
  PluginBase *self = e->self;
  self->in_flight--;
  self->settle(status, e->label, e->retry, e->taken);
  e.reset();
  self->maybe_stopped();  // last: it may end the stop
}

void PluginBase::emit(const cg_message_t &msg, const std::string &label, const std::string &retry,
                      std::function<void(bool)> taken) {
  if (api->abi_minor < 5) return settle(api->emit_message(host, &msg), label, retry, taken);
  auto e = std::make_unique<Emit>(Emit{this, label, retry, std::move(taken)});
  in_flight++;  // before the call: a host whose loop is closing answers inside it
  if (const int rc = api->emit_message_durable(host, &msg, &PluginBase::on_emitted, e.get());
      rc != 0) {
    in_flight--;  // refused at once: no done follows
    return settle(rc, label, retry, e->taken);
  }
  (void)e.release();  // on_emitted owns it now, and may have run already
}

void PluginBase::maybe_stopped() {
  if (!stopping || stop_done_ == nullptr || in_flight > 0 || !can_stop()) return;
  cg_done_cb done = stop_done_;
  stop_done_ = nullptr;
  done(stop_arg_, 0);
}

TokenCache::TokenCache(PluginBase &owner, int64_t refresh_before_s, Fetch fetch)
    : owner_(owner), refresh_before_s_(refresh_before_s), fetch_(std::move(fetch)) {}

void TokenCache::get(Ready fn) {
  if (!token_.empty() && owner_.api->now_ms(owner_.host) < expires_ms_) return fn(0, token_);
  waiters_.push_back(std::move(fn));
  if (fetching_) return;
  fetching_ = true;
  const int rc = fetch_([this](int status, const std::string &value, int64_t expires_in_s) {
    settle(status, value, expires_in_s);
  });
  if (rc != 0) settle(rc, cg_strerror(rc), 0);
}

void TokenCache::invalidate() {
  token_.clear();
  expires_ms_ = 0;
}

void TokenCache::settle(int status, const std::string &value, int64_t expires_in_s) {
  fetching_ = false;
  if (status == 0) {
    token_ = value;
    const int64_t keep = expires_in_s > 2 * refresh_before_s_
                             ? expires_in_s - refresh_before_s_
                             : std::max<int64_t>(expires_in_s / 2, 1);
    expires_ms_ = owner_.api->now_ms(owner_.host) + static_cast<uint64_t>(keep) * 1000;
  }
  auto waiters = std::move(waiters_);
  waiters_.clear();
  for (auto &w : waiters) w(status, status == 0 ? token_ : value);
}

}  // namespace kit
