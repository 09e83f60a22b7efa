// HttpServer's TLS: the certificate's load, its expiry gauge, watching the
// files, and reloads built on the thread pool and swapped in on the loop.
#include <spdlog/spdlog.h>

#include <memory>
#include <string>
#include <utility>

#include "base/metrics.h"
#include "net/http_server_impl.h"

namespace cg {

// --- TLS -----------------------------------------------------------------------

void HttpServer::Impl::tls_failed(std::string_view why) {
  // A scanner or a plain-HTTP client on a TLS port is routine: debug only,
  // and counted.
  spdlog::debug("listener '{}': TLS: {}", config.name, why);
  if (metrics == nullptr) return;
  if (double *c = metrics->counter("chatgate_tls_handshake_errors_total",
                                   "listener=\"" + config.name + "\"",
                                   "TLS connections that failed (handshake or record errors)")) {
    *c += 1;
  }
}

// The certificate's end of validity, for the expiry gauge and the log.
void HttpServer::Impl::tls_installed(SslCtxPtr ctx, bool reload) {
  tls_ctx = std::move(ctx);
  X509 *cert = SSL_CTX_get0_certificate(tls_ctx.get());
  int days = 0, secs = 0;
  const ASN1_TIME *not_after = cert != nullptr ? X509_get0_notAfter(cert) : nullptr;
  const bool known = not_after != nullptr && ASN1_TIME_diff(&days, &secs, nullptr, not_after) == 1;
  const double left = known ? days * 86400.0 + secs : 0;
  if (metrics != nullptr) {
    const std::string labels = "listener=\"" + config.name + "\"";
    if (double *g = metrics->gauge("chatgate_tls_certificate_expiry_seconds", labels,
                                   "Seconds until the listener's certificate expires")) {
      *g = left;
    }
    if (reload) {
      if (double *c = metrics->counter("chatgate_tls_reloads_total", labels + ",result=\"ok\"",
                                       "TLS certificate reloads by result")) {
        *c += 1;
      }
    }
  }
  spdlog::info("listener '{}': TLS certificate {} from {} ({} days left)", config.name,
               reload ? "reloaded" : "loaded", config.tls.cert_file,
               known ? std::to_string(days) : std::string("expiry unknown"));
  if (known && left <= 0) {
    spdlog::error("listener '{}': the certificate in {} has expired", config.name,
                  config.tls.cert_file);
  }
}

void HttpServer::Impl::tls_watch() {
  if (!config.tls.enabled() || config.tls.reload_check_ms == 0 || tls_watching) return;
  tls_watching = true;
  uv_timer_init(loop, &tls_debounce);
  tls_debounce.data = this;
  ++tls_handles;
  const auto interval = static_cast<unsigned>(config.tls.reload_check_ms);
  for (auto [poll, path] :
       {std::pair{&cert_poll, &config.tls.cert_file}, std::pair{&key_poll, &config.tls.key_file}}) {
    uv_fs_poll_init(loop, poll);
    poll->data = this;
    ++tls_handles;
    if (const int rc = uv_fs_poll_start(poll, on_tls_file_changed, path->c_str(), interval);
        rc != 0) {
      spdlog::warn("listener '{}': cannot watch {} for changes ({}); reload with SIGHUP",
                   config.name, *path, uv_strerror(rc));
    }
  }
}

void HttpServer::Impl::tls_unwatch() {
  if (!tls_watching) return;
  tls_watching = false;
  uv_close(reinterpret_cast<uv_handle_t *>(&cert_poll), on_tls_handle_closed);
  uv_close(reinterpret_cast<uv_handle_t *>(&key_poll), on_tls_handle_closed);
  uv_close(reinterpret_cast<uv_handle_t *>(&tls_debounce), on_tls_handle_closed);
}

void HttpServer::Impl::on_tls_handle_closed(uv_handle_t *h) {
  auto *self = static_cast<Impl *>(h->data);
  --self->tls_handles;
  self->maybe_done();
}

// Renewal tools write the certificate and the key one after the other:
// the reload waits for the files to settle.
void HttpServer::Impl::on_tls_file_changed(uv_fs_poll_t *h, int status, const uv_stat_t *,
                                           const uv_stat_t *) {
  auto *self = static_cast<Impl *>(h->data);
  if (!self->tls_watching) return;
  if (status < 0 && status != UV_ENOENT) return;
  uv_timer_start(&self->tls_debounce, on_tls_debounced, 500, 0);
}

void HttpServer::Impl::on_tls_debounced(uv_timer_t *t) {
  auto *self = static_cast<Impl *>(t->data);
  spdlog::info("listener '{}': TLS certificate or key file changed; reloading", self->config.name);
  self->reload_tls_now();
}

namespace {

struct TlsReloadWork {
  uv_work_t req{};
  HttpServer::Impl *impl = nullptr;
  TlsServerConfig config;
  SslCtxPtr ctx;
  std::string error;
};

}  // namespace

void HttpServer::Impl::reload_tls_now() {
  if (!config.tls.enabled() || listen_state == ListenState::kClosed || on_closed) return;
  if (tls_reloading) {
    tls_reload_again = true;
    return;
  }
  auto work = std::make_unique<TlsReloadWork>();
  work->impl = this;
  work->config = config.tls;
  work->req.data = work.get();
  const int rc = uv_queue_work(
      loop, &work->req,
      [](uv_work_t *req) {
        auto *w = static_cast<TlsReloadWork *>(req->data);
        w->ctx = tls_server_context(w->config, &w->error);
      },
      [](uv_work_t *req, int) {
        std::unique_ptr<TlsReloadWork> w(static_cast<TlsReloadWork *>(req->data));
        Impl *self = w->impl;
        self->tls_reloading = false;
        if (self->on_closed) {  // closing: nothing to swap in
          self->maybe_done();
          return;
        }
        if (w->ctx) {
          self->tls_installed(std::move(w->ctx), true);
        } else {
          spdlog::error(
              "listener '{}': TLS reload failed, the current certificate stays: "
              "listeners.{}.tls: {}",
              self->config.name, self->config.name, w->error);
          if (self->metrics != nullptr) {
            if (double *c = self->metrics->counter(
                    "chatgate_tls_reloads_total",
                    "listener=\"" + self->config.name + "\",result=\"failed\"")) {
              *c += 1;
            }
          }
        }
        if (std::exchange(self->tls_reload_again, false)) self->reload_tls_now();
      });
  if (rc != 0) {
    spdlog::error("listener '{}': cannot queue the TLS reload: {}", config.name, uv_strerror(rc));
    return;
  }
  tls_reloading = true;
  (void)work.release();  // the after-work callback owns it
}

std::string HttpServer::load_tls() {
  Impl &s = *impl_;
  if (!s.config.tls.enabled()) return {};
  std::string error;
  SslCtxPtr ctx = tls_server_context(s.config.tls, &error);
  if (!ctx) return error;
  s.tls_installed(std::move(ctx), false);
  return {};
}

void HttpServer::reload_tls() { impl_->reload_tls_now(); }

}  // namespace cg
