#include "net/ws_client.h"

#include <spdlog/spdlog.h>
#include <uv.h>

#include <algorithm>
#include <chatgate/cpp.hpp>
#include <random>
#include <utility>

#include "base/json.h"
#include "base/loop.h"
#include "base/metrics.h"
#include "net/ws_connection.h"
#include "net/ws_url.h"

namespace cg {

using namespace ws_internal;

uint64_t backoff_delay_ms(uint32_t attempt, uint64_t base_ms, uint64_t max_ms) {
  uint64_t d = base_ms;
  for (uint32_t i = 0; i < attempt && d < max_ms; ++i) d = d > max_ms / 2 ? max_ms : d * 2;
  d = std::min(d, max_ms);
  if (d < 2) return d;
  thread_local std::mt19937_64 rng{std::random_device{}()};
  // "Equal jitter": at least half the delay, so retries still slow down.
  return d - std::uniform_int_distribution<uint64_t>(0, d / 2)(rng);
}

void WsClient::set_metrics(Metrics *metrics, std::function<std::string(const void *)> owner_name) {
  metrics_ = metrics;
  owner_name_ = std::move(owner_name);
}

// Connections come and go rarely: the series are looked up each time.
void WsClient::count(const void *owner, std::string_view event) {
  if (metrics_ == nullptr || !owner_name_) return;
  const std::string label = "plugin_instance=" + json_quote(owner_name_(owner));
  static constexpr std::string_view kConnects =
      "WebSocket connections attempted, by whether they opened";
  double *open = metrics_->gauge("chatgate_websocket_open", label, "open WebSocket connections");
  if (event == "closed") {
    if (double *c = metrics_->counter("chatgate_websocket_disconnects_total", label,
                                      "open WebSocket connections that ended")) {
      *c += 1;
    }
    if (open != nullptr) *open -= 1;
    return;
  }
  if (double *c = metrics_->counter("chatgate_websocket_connects_total",
                                    label + ",result=\"" + std::string(event) + "\"", kConnects)) {
    *c += 1;
  }
  if (open != nullptr && event == "open") {
    *open += 1;
    // The series exists from the first open, at 0: the alert rule's
    // increase() over it then also sees the first disconnect.
    (void)metrics_->counter("chatgate_websocket_disconnects_total", label,
                            "open WebSocket connections that ended");
  }
}

WsClient::WsClient(Loop &loop, std::string ca_file)
    : loop_(loop),
      ca_file_(std::move(ca_file)),
      https_proxy_(proxy_from_env({"https_proxy", "HTTPS_PROXY"})),
      http_proxy_(proxy_from_env({"http_proxy", "HTTP_PROXY"})),
      no_proxy_(env_first({"no_proxy", "NO_PROXY"})) {}

const WsProxy *WsClient::proxy_for(bool tls, std::string_view host) const {
  const std::optional<WsProxy> &p = tls ? https_proxy_ : http_proxy_;
  if (!p || ws_no_proxy_match(no_proxy_, host)) return nullptr;
  return &*p;
}

WsClient::~WsClient() = default;

void WsClient::erase(uint64_t id) { conns_.erase(id); }

struct WsClient::CtxJob {
  WsClient *client = nullptr;
  std::string ca_file;
  SslCtxPtr ctx;
  std::string error;
};

void WsClient::on_ctx_work(void *arg) {
  auto *job = static_cast<CtxJob *>(arg);
  job->ctx = tls_client_context(job->ca_file, &job->error);
}

void WsClient::on_ctx_done(void *arg, int status) {
  std::unique_ptr<CtxJob> job(static_cast<CtxJob *>(arg));
  WsClient *self = job->client;
  std::vector<uint64_t> waiting;
  waiting.swap(self->waiting_);
  if (status == 0 && job->ctx) {
    self->ctx_ = std::move(job->ctx);
    self->ctx_state_ = CtxState::kReady;
  } else {
    // Tried again on the next wss:// connect: the operator may fix the file.
    self->ctx_state_ = CtxState::kNone;
    if (job->error.empty()) job->error = "TLS context not built (shutting down)";
    spdlog::error("websocket: {}", job->error);
  }
  for (uint64_t id : waiting) {
    auto it = self->conns_.find(id);
    if (it == self->conns_.end()) continue;
    Conn *c = it->second.get();
    if (c->state != Conn::State::kWaitCtx) continue;
    if (self->ctx_state_ == CtxState::kReady) {
      self->start_resolve(c);
    } else {
      c->end(CG_EIO, kWsAbnormal, job->error);
    }
  }
}

void WsClient::start_resolve(Conn *c) {
  c->state = Conn::State::kResolving;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_ADDRCONFIG;
  c->gai.data = c;
  c->gai_pending = true;
  const std::string &host = c->proxy != nullptr ? c->proxy->host : c->url.host;
  const std::string port = std::to_string(c->proxy != nullptr ? c->proxy->port : c->url.port);
  const int rc = uv_getaddrinfo(
      loop_.uv(), &c->gai,
      [](uv_getaddrinfo_t *req, int status, addrinfo *res) {
        auto *conn = static_cast<Conn *>(req->data);
        conn->gai_pending = false;
        conn->addrs = res;
        if (conn->state == Conn::State::kEnded) {
          conn->maybe_free();
          return;
        }
        if (status != 0) {
          conn->end(CG_EIO, kWsAbnormal, std::string("DNS: ") + uv_strerror(status));
          return;
        }
        conn->next_addr = res;
        conn->try_connect();
      },
      host.c_str(), port.c_str(), &hints);
  if (rc != 0) {
    c->gai_pending = false;
    c->end(CG_EIO, kWsAbnormal, std::string("DNS: ") + uv_strerror(rc));
  }
}

int WsClient::connect(const void *owner, const cg_ws_connect_t &opts, cg_ws_cb cb, void *arg,
                      uint64_t *ws_id) {
  if (closing_) return CG_ECLOSED;
  if (cb == nullptr) return CG_EINVAL;
  if (opts.header_count > 0 && opts.headers == nullptr) return CG_EINVAL;
  const std::string_view url = chatgate::view(opts.url);
  auto c = std::make_unique<Conn>(opts.max_message_bytes > 0 ? opts.max_message_bytes
                                                             : kDefaultMaxMessage);
  if (!parse_ws_url(url, &c->url)) return CG_EINVAL;
  for (uint32_t i = 0; i < opts.header_count; ++i) {
    const std::string_view name = chatgate::view(opts.headers[i].name);
    const std::string_view value = chatgate::view(opts.headers[i].value);
    if (name.empty() || bad_header_text(name) || bad_header_text(value) ||
        name.find(':') != std::string_view::npos) {
      return CG_EINVAL;
    }
    // The host writes these itself; a second copy would break the upgrade.
    for (std::string_view own : {"host", "upgrade", "connection", "sec-websocket-key",
                                 "sec-websocket-version", "sec-websocket-extensions"}) {
      if (iequals(name, own)) return CG_EINVAL;
    }
    c->headers.emplace_back(name, value);
  }
  c->proxy = proxy_for(c->url.tls, c->url.host);
  c->client = this;
  c->id = next_id_++;
  c->cb = cb;
  c->arg = arg;
  c->owner = owner;
  c->connect_timeout_ms =
      opts.connect_timeout_ms > 0 ? opts.connect_timeout_ms : kDefaultConnectTimeoutMs;
  c->ping_interval_ms = opts.ping_interval_ms;
  uv_timer_init(loop_.uv(), &c->timer);
  c->timer.data = c.get();
  c->open_handles = 1;
  uv_timer_start(
      &c->timer, [](uv_timer_t *t) { static_cast<Conn *>(t->data)->on_timer(); },
      c->connect_timeout_ms, 0);
  Conn *conn = c.get();
  conns_.emplace(conn->id, std::move(c));
  if (ws_id != nullptr) *ws_id = conn->id;

  if (!conn->url.tls || ctx_state_ == CtxState::kReady) {
    start_resolve(conn);
    return 0;
  }
  waiting_.push_back(conn->id);
  if (ctx_state_ == CtxState::kNone) {
    auto job = std::make_unique<CtxJob>();
    job->client = this;
    job->ca_file = ca_file_;
    if (loop_.queue_work(on_ctx_work, on_ctx_done, job.get()) == 0) {
      (void)job.release();  // on_ctx_done owns it
      ctx_state_ = CtxState::kLoading;
    } else {
      waiting_.pop_back();
      conn->end(CG_EIO, kWsAbnormal, "cannot queue the TLS context build");
    }
  }
  return 0;
}

int WsClient::send(const void *owner, uint64_t ws_id, uint32_t opcode, std::string_view data) {
  auto it = conns_.find(ws_id);
  // Another instance's connection is as good as unknown.
  if (it == conns_.end() || it->second->owner != owner) return CG_ENOENT;
  Conn *c = it->second.get();
  if (opcode != CG_WS_TEXT && opcode != CG_WS_BINARY) return CG_EINVAL;
  if (c->state == Conn::State::kEnded || c->state == Conn::State::kClosing) return CG_ENOENT;
  if (c->state != Conn::State::kOpen) return CG_EAGAIN;
  if (uv_stream_get_write_queue_size(reinterpret_cast<uv_stream_t *>(&c->tcp)) > kMaxQueuedWrite) {
    return CG_EBUSY;
  }
  return c->write_frame(static_cast<uint8_t>(opcode), data) == 0 ? 0 : CG_EIO;
}

int WsClient::ping(const void *owner, uint64_t ws_id, std::string_view data) {
  auto it = conns_.find(ws_id);
  // Another instance's connection is as good as unknown.
  if (it == conns_.end() || it->second->owner != owner) return CG_ENOENT;
  Conn *c = it->second.get();
  if (data.size() > 125) return CG_EINVAL;
  if (c->state == Conn::State::kEnded || c->state == Conn::State::kClosing) return CG_ENOENT;
  if (c->state != Conn::State::kOpen) return CG_EAGAIN;
  return c->write_frame(kWsPing, data) == 0 ? 0 : CG_EIO;
}

int WsClient::close(const void *owner, uint64_t ws_id, int32_t code, std::string_view reason) {
  auto it = conns_.find(ws_id);
  // Another instance's connection is as good as unknown.
  if (it == conns_.end() || it->second->owner != owner) return CG_ENOENT;
  Conn *c = it->second.get();
  if (code != 0 &&
      (code < 1000 || code > 4999 || !ws_close_code_valid(static_cast<uint16_t>(code)))) {
    return CG_EINVAL;
  }
  if (reason.size() > 123 || (code == 0 && !reason.empty())) return CG_EINVAL;
  if (c->state == Conn::State::kEnded || c->state == Conn::State::kClosing) return CG_ENOENT;
  if (c->state != Conn::State::kOpen) {
    c->end(CG_ECANCELED, kWsAbnormal, "closed before it opened");
    return 0;
  }
  c->send_close(static_cast<uint16_t>(code), reason);
  if (c->state == Conn::State::kEnded) return 0;  // the write failed; CLOSED says why
  c->state = Conn::State::kClosing;
  c->close_code = code == 0 ? kWsNoStatus : code;
  c->reason.assign(reason);
  uv_timer_start(
      &c->timer, [](uv_timer_t *t) { static_cast<Conn *>(t->data)->on_timer(); }, kCloseWaitMs, 0);
  return 0;
}

void WsClient::close_all() {
  closing_ = true;
  std::vector<Conn *> all;
  all.reserve(conns_.size());
  for (auto &[id, c] : conns_) all.push_back(c.get());
  for (Conn *c : all) {
    const bool open = c->state == Conn::State::kOpen;
    if (open) c->send_close(kWsGoingAway, "shutting down");
    c->end(CG_ECANCELED, open ? kWsGoingAway : kWsAbnormal, "shutting down");
  }
}

}  // namespace cg
