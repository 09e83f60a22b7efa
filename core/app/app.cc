#include "app/app.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>

#include "admin/admin.h"
#include "app/handover.h"
#include "app/inherited_sockets.h"
#include "app/service_notify.h"
#include "base/loop.h"
#include "base/metrics.h"
#include "base/version.h"
#include "config/config_schema.h"
#include "host/cache.h"
#include "host/channel_port.h"
#include "host/model_backend.h"
#include "host/plugin_instance.h"
#include "host/queue.h"
#include "net/http_client.h"
#include "net/http_server.h"
#include "net/ws_client.h"
#include "router/chat_api.h"
#include "router/router.h"

namespace cg {
namespace {

constexpr uint64_t kDrainTickMs = 20;
// After the deadline, cancelled model calls get this long to reply.
constexpr uint64_t kCancelGraceMs = 2000;
// A handover's new process has this long to say it is ready (it waits up
// to 15 s of that for its long connections: app_handover.cc).
constexpr uint64_t kHandoverReadyMs = 60000;

}  // namespace

std::string app_load_plugins(const Config &config, HostServices *services,
                             std::vector<std::unique_ptr<PluginInstance>> *out) {
  for (size_t i = 0; i < config.plugins.size(); i++) {
    const PluginInstanceConfig &pc = config.plugins[i];
    LoadedPlugin loaded;
    std::string error;
    if (plugin_load(pc.path, &loaded, &error) != 0) {
      return fmt::format("{}:{}: plugins.instances[{}] '{}': {}", config.file, pc.line, i, pc.name,
                         error);
    }
    PluginConfig values;
    const std::string prefix = fmt::format("plugins.instances[{}].config", i);
    if (auto err = plugin_config_validate(config_plugin_section(pc), loaded.fields, config.file,
                                          prefix, &values, pc.line)) {
      return err->to_string();
    }
    out->push_back(
        std::make_unique<PluginInstance>(pc.name, std::move(loaded), std::move(values), services));
  }
  return {};
}

std::string app_check_router(const Config &config,
                             const std::vector<std::unique_ptr<PluginInstance>> &plugins) {
  auto check = [&](std::string_view key, int line, const std::string &name, uint32_t kind,
                   std::string_view what) -> std::string {
    auto it = std::find_if(plugins.begin(), plugins.end(),
                           [&](const auto &p) { return p->name() == name; });
    if (it != plugins.end() && (*it)->kind() == kind) return {};
    return fmt::format(
        "{}:{}: {}: '{}' must name {} instance, found {}", config.file, line, key, name, what,
        it == plugins.end() ? std::string("no such instance")
                            : fmt::format("a {} plugin", plugin_kind_name((*it)->kind())));
  };
  std::string err = check("router.model", config.router.model_line, config.router.model,
                          CG_KIND_MODEL, "a model backend");
  if (err.empty()) {
    err = check("router.cache", config.router.cache_line, config.router.cache, CG_KIND_CACHE,
                "a cache");
  }
  if (err.empty() && !config.router.queue.empty()) {
    auto it = std::find_if(plugins.begin(), plugins.end(),
                           [&](const auto &p) { return p->name() == config.router.queue; });
    if (it != plugins.end() && (*it)->queue_ops() == nullptr) {
      err = fmt::format(
          "{}:{}: router.queue: '{}' ({}) offers no durable queue (a cache plugin built for "
          "ABI 1.6 with cg_cache_ops_t.queue, such as redis.so, does)",
          config.file, config.router.queue_line, config.router.queue, (*it)->desc()->name);
    }
  }
  return err;
}

std::string app_check_config(const Config &config, size_t *instances) {
  uv_loop_t uv{};
  if (const int rc = uv_loop_init(&uv); rc != 0) {
    return fmt::format("cannot create an event loop: {}", uv_strerror(rc));
  }
  std::string err;
  {
    // The same services a run gets, with a listener that never listens, so
    // a plugin's init sees exactly what it would see in production.
    Loop loop(&uv);
    Metrics metrics;
    HttpServer api(&uv, config.api);
    HostServices services;
    services.loop = &loop;
    services.metrics = &metrics;
    services.api = &api;
    std::vector<std::unique_ptr<PluginInstance>> plugins;
    for (const HttpListenerConfig *l : {&config.api, &config.admin_listener}) {
      if (!l->tls.enabled() || (l == &config.admin_listener && !config.admin_enabled)) continue;
      std::string e;
      if (!tls_server_context(l->tls, &e) && err.empty()) {
        err = fmt::format("{}: listeners.{}.tls: {}", config.file, l->name, e);
      }
    }
    if (err.empty()) err = app_load_plugins(config, &services, &plugins);
    if (err.empty()) err = app_check_router(config, plugins);
    for (size_t i = 0; i < plugins.size() && err.empty(); i++) {
      std::string e;
      if (plugins[i]->init(&e) != 0) {
        err = fmt::format("{}:{}: plugins.instances[{}]: {}", config.file, config.plugins[i].line,
                          i, e);
      }
    }
    *instances = plugins.size();
    while (!plugins.empty()) plugins.pop_back();  // destroy in reverse order
    loop.close();
    uv_run(&uv, UV_RUN_DEFAULT);
  }
  if (uv_loop_close(&uv) != 0) spdlog::warn("check: loop closed with handles still open");
  return err;
}

App::App() = default;

App::~App() = default;

PluginInstance *App::instance(const std::string &name) {
  for (auto &p : plugins_) {
    if (p->name() == name) return p.get();
  }
  return nullptr;
}

int App::run(Config config) {
  config_ = std::move(config);
  const uint64_t t0 = uv_hrtime();
  uv_loop_init(&uv_loop_);
  loop_ = std::make_unique<Loop>(&uv_loop_);
  metrics_ = std::make_unique<Metrics>();
  services_ = std::make_unique<HostServices>();
  services_->loop = loop_.get();
  services_->metrics = metrics_.get();
  api_ = std::make_unique<HttpServer>(&uv_loop_, config_.api);
  services_->api = api_.get();
  api_->set_metrics(metrics_.get());
  if (config_.admin_enabled) {
    admin_ = std::make_unique<HttpServer>(&uv_loop_, config_.admin_listener);
    admin_->set_metrics(metrics_.get());
  }
  http_ = std::make_unique<HttpClient>(*loop_, config_.http_client);
  services_->http = http_.get();
  ws_ = std::make_unique<WsClient>(*loop_, config_.http_client.ca_file);
  services_->ws = ws_.get();
  ws_->set_metrics(metrics_.get(), [](const void *owner) {
    return std::string(static_cast<const PluginInstance *>(owner)->name());
  });
  uv_timer_init(&uv_loop_, &drain_timer_);
  drain_timer_.data = this;

  notify_ = std::make_unique<ServiceNotify>(*loop_);
  handover_ = std::make_unique<Handover>(*loop_, kHandoverReadyMs);
  ready_fd_ = app_take_env_fd("CHATGATE_READY_FD");
  int exit_code = start();
  if (exit_code == 0) {
    if (ready_fd_ >= 0) {
      announce_ready();  // the old process tells systemd, once we told it
    } else {
      notify_->ready(fmt::format("api on {}:{}", config_.api.address, api_->port()));
    }
    auto scheme = [](const HttpListenerConfig &l) { return l.tls.enabled() ? "https" : "http"; };
    spdlog::info(
        "chatgate {} ready in {:.1f} ms (pid {}): api on {}://{}:{}{} ({} plugin instances)",
        build_version(), static_cast<double>(uv_hrtime() - t0) / 1e6, getpid(), scheme(config_.api),
        config_.api.address, api_->port(),
        admin_ ? fmt::format(", admin on {}://{}:{}", scheme(config_.admin_listener),
                             config_.admin_listener.address, admin_->port())
               : std::string(),
        plugins_.size());
  } else {
    // Stop what did start, then leave with the error.
    shutting_down_ = true;
    close_listeners();
  }
  uv_run(&uv_loop_, UV_RUN_DEFAULT);

  handover_.reset();
  notify_.reset();
  chat_api_.reset();
  admin_api_.reset();
  web_chat_.reset();
  router_.reset();
  queue_.reset();
  cache_.reset();
  model_.reset();
  while (!plugins_.empty()) plugins_.pop_back();  // destroy in reverse order
  api_.reset();
  admin_.reset();
  http_.reset();
  ws_.reset();
  loop_.reset();
  if (uv_loop_close(&uv_loop_) != 0) spdlog::warn("loop closed with handles still open");
  if (exit_code == 0 && successor_refused_) exit_code = 1;
  if (exit_code == 0) spdlog::info("chatgate stopped");
  return exit_code;
}

int App::start() {
  if (std::string err = app_load_plugins(config_, services_.get(), &plugins_); !err.empty()) {
    spdlog::error("{}", err);
    return 1;
  }
  if (std::string err = app_check_router(config_, plugins_); !err.empty()) {
    spdlog::error("{}", err);
    return 1;
  }
  PluginInstance *model = instance(config_.router.model);
  PluginInstance *cache = instance(config_.router.cache);
  model_ = std::make_unique<ModelBackend>(*model);
  if (cache != nullptr) cache_ = std::make_unique<Cache>(*cache, *loop_, *metrics_);
  services_->cache = cache_.get();
  if (!config_.router.queue.empty()) {
    queue_ = std::make_unique<Queue>(*instance(config_.router.queue), *metrics_);
  }
  router_ = std::make_unique<Router>(*loop_, config_.router, *model_, cache_.get(), *metrics_,
                                     queue_.get());
  router_->track_conversations(config_.admin.show_content);
  for (auto &p : plugins_) {
    if (PluginChannelPort *port = p->channel_port()) router_->add_channel(port);
  }
  services_->sink = router_.get();
  chat_api_ = std::make_unique<ChatApi>(*api_, *router_);
  if (chat_api_->install() != 0) {
    spdlog::error("listener 'api': cannot register the chat API routes");
    return 1;
  }
  admin_api_ =
      std::make_unique<AdminApi>(config_, *loop_, *metrics_, plugins_, *api_, *router_, *router_);
  admin_api_->set_reload([this](AdminApi::ReloadDone done) { reload(std::move(done)); });
  if (const std::string state = app_take_handover_state(); !state.empty()) {
    const size_t sessions = admin_api_->import_state(state);
    spdlog::info("admin page: {} session(s) carried over from the process before", sessions);
  }
  if (admin_api_->install_probes(*api_, true) != 0 ||
      (admin_ && admin_api_->install(*admin_) != 0)) {
    spdlog::error("cannot register the probe and admin routes");
    return 1;
  }
  if (admin_) {
    // The admin page's chat: a chat API of its own, the "web" channel,
    // behind the admin's auth.
    web_chat_ = std::make_unique<ChatApi>(*admin_, *router_, "web");
    if (web_chat_->install("/admin/api/chat", admin_api_->guard(*admin_)) != 0) {
      spdlog::error("listener 'admin': cannot register the web chat route");
      return 1;
    }
  }

  for (auto &p : plugins_) {
    std::string error;
    if (p->init(&error) != 0) {
      spdlog::error("{}", error);
      return 1;
    }
  }

  for (HttpServer *server : {api_.get(), admin_.get()}) {
    if (server == nullptr) continue;
    if (std::string e = server->load_tls(); !e.empty()) {
      spdlog::error("{}: listeners.{}.tls: {}", config_.file, server->config().name, e);
      return 1;
    }
  }

  InheritedSockets inherited = InheritedSockets::take();
  if (!inherited.empty()) spdlog::info("listening sockets inherited from {}", inherited.origin());
  // A handover's new process accepts once it says it is ready
  // (announce_ready); the process before it serves the sockets till then.
  const bool defer_accept = ready_fd_ >= 0;
  if (const int rc = api_->listen(inherited.claim(config_.api), defer_accept); rc != 0) {
    spdlog::error(
        "listener 'api' cannot listen on {}:{}: {}; change listeners.api.port or "
        "listeners.api.address in {}",
        config_.api.address, config_.api.port, uv_strerror(rc), config_.file);
    return 1;
  }

  if (admin_) {
    if (const int rc = admin_->listen(inherited.claim(config_.admin_listener), defer_accept);
        rc != 0) {
      spdlog::error(
          "listener 'admin' cannot listen on {}:{}: {}; change listeners.admin.port or "
          "listeners.admin.address in {}, or set listeners.admin.enabled: false",
          config_.admin_listener.address, config_.admin_listener.port, uv_strerror(rc),
          config_.file);
      return 1;
    }
    admin_api_->warn_if_open(admin_->port());
  }
  inherited.close_unclaimed();

  // Plugins built for 1.1+ may call out over HTTP: set curl up now rather
  // than inside their first request.
  if (std::any_of(plugins_.begin(), plugins_.end(),
                  [](const auto &p) { return p->desc()->abi_minor >= 1; })) {
    http_->ensure_started();
  }

  for (PluginInstance *p : start_order()) {
    std::string error;
    if (p->start(&error) != 0) {
      spdlog::error("{}", error);
      return 1;
    }
    started_plugins_++;
  }
  router_->start_queue();

  auto on_signal = [](uv_signal_t *h, int signum) {
    static_cast<App *>(h->data)->begin_shutdown(signum == SIGTERM ? "SIGTERM" : "SIGINT");
  };
  for (auto [handle, signum] : {std::pair{&sigterm_, SIGTERM}, std::pair{&sigint_, SIGINT}}) {
    uv_signal_init(&uv_loop_, handle);
    handle->data = this;
    uv_signal_start(handle, on_signal, signum);
  }
  uv_signal_init(&uv_loop_, &sigusr2_);
  sigusr2_.data = this;
  uv_signal_start(
      &sigusr2_,
      [](uv_signal_t *h, int) {
        // hand_over logs its own outcome; nobody waits for an answer.
        static_cast<App *>(h->data)->hand_over("upgrade (SIGUSR2)",
                                               [](int, const std::string &) {});
      },
      SIGUSR2);
  uv_signal_init(&uv_loop_, &sighup_);
  sighup_.data = this;
  uv_signal_start(
      &sighup_,
      [](uv_signal_t *h, int) {
        // The reload logs its own outcome; nobody waits for an answer.
        static_cast<App *>(h->data)->reload([](int, const std::string &) {});
      },
      SIGHUP);
  return 0;
}

void App::begin_shutdown(const std::string &why, bool handover) {
  if (shutting_down_) {
    spdlog::info("{} again: still shutting down", why);
    return;
  }
  shutting_down_ = true;
  if (handover || ready_fd_ >= 0) {
    // Handed over (systemd follows the new main process now), or a new
    // process stopped before it was ready (systemd never followed it).
    notify_->handed_over();
  } else {
    notify_->stopping();
  }
  handover_->cancel();  // a new process still starting is told to stop
  shutdown_started_ms_ = uv_now(&uv_loop_);
  admin_api_->set_shutting_down();
  // Long connections close now, so the platforms deliver to the app's
  // other clients (the new process, or other instances) while this one
  // finishes what it took.
  size_t quiesced = 0;
  for (auto &p : plugins_) quiesced += p->quiesce() ? 1 : 0;
  if (quiesced > 0) spdlog::info("{}: {} channel(s) told to take no new messages", why, quiesced);
  if (handover || config_.shutdown_delay_ms == 0) {
    stop_accepting(why);
    return;
  }
  spdlog::info("{}: /readyz answers 503; the listeners close in {} ms (shutdown.delayMs)", why,
               config_.shutdown_delay_ms);
  loop_->timer_start(
      config_.shutdown_delay_ms, 0,
      [](void *self, uint64_t) {
        auto *app = static_cast<App *>(self);
        app->delay_timer_id_ = 0;
        app->stop_accepting("shutdown.delayMs passed");
      },
      this, &delay_timer_id_);
}

void App::stop_accepting(const std::string &why) {
  shutdown_started_ms_ = uv_now(&uv_loop_);
  spdlog::info(
      "{}: shutting down; no new connections, waiting up to {} ms for {} in-flight "
      "requests",
      why, config_.shutdown_deadline_ms, api_->in_flight());
  api_->stop_accepting();
  if (admin_) admin_->stop_accepting();
  admin_api_->end_streams();  // a live log tail would hold its connection open
  uv_timer_start(
      &drain_timer_, [](uv_timer_t *t) { static_cast<App *>(t->data)->drain_tick(); }, 0,
      kDrainTickMs);
}

void App::drain_tick() {
  const uint64_t elapsed = uv_now(&uv_loop_) - shutdown_started_ms_;
  // Idle keep-alive connections linger a moment (HttpServer::stop_accepting):
  // waited for that long, not for a slow client's head timeout.
  const bool lingering =
      elapsed < HttpServer::kDrainLingerMs + kDrainTickMs &&
      (api_->connection_count() > 0 || (admin_ && admin_->connection_count() > 0));
  if (lingering) return;
  // The router takes no more once no request can come: a client whose
  // request reached a lingering connection is answered, not refused.
  if (!intake_stopped_) {
    intake_stopped_ = true;
    router_->stop_intake();
  }
  const bool idle =
      api_->in_flight() == 0 && router_->in_flight() == 0 && (!admin_ || admin_->in_flight() == 0);
  if (!idle && elapsed < config_.shutdown_deadline_ms) return;
  if (!idle && !cancelled_) {
    cancelled_ = true;
    spdlog::warn("shutdown deadline of {} ms passed with {} requests in flight; cancelling them",
                 config_.shutdown_deadline_ms, std::max(api_->in_flight(), router_->in_flight()));
    router_->cancel_all();
    return;
  }
  if (!idle && elapsed < config_.shutdown_deadline_ms + kCancelGraceMs) return;
  uv_timer_stop(&drain_timer_);
  close_listeners();
}

void App::close_listeners() {
  api_->close([this] {
    if (admin_) {
      admin_->close([this] { stop_plugins(plugins_.size()); });
    } else {
      stop_plugins(plugins_.size());
    }
  });
}

std::vector<PluginInstance *> App::start_order() const {
  std::vector<PluginInstance *> order;
  order.reserve(plugins_.size());
  for (uint32_t kind : {CG_KIND_CACHE, CG_KIND_MODEL, CG_KIND_CHANNEL}) {
    for (const auto &p : plugins_) {
      if (p->kind() == kind) order.push_back(p.get());
    }
  }
  return order;
}

void App::stop_plugins(size_t index) {
  if (index == 0) {
    close_everything();
    return;
  }
  // Instances that never started complete their stop at once.
  const std::vector<PluginInstance *> order = start_order();
  order[index - 1]->stop([this, index] { stop_plugins(index - 1); });
}

void App::close_everything() {
  handover_->close();
  for (uv_signal_t *s : {&sigterm_, &sigint_, &sighup_, &sigusr2_}) {
    if (s->data != nullptr && !uv_is_closing(reinterpret_cast<uv_handle_t *>(s))) {
      uv_close(reinterpret_cast<uv_handle_t *>(s), nullptr);
    }
  }
  uv_close(reinterpret_cast<uv_handle_t *>(&drain_timer_), nullptr);
  http_->close();  // before the loop's last drain, which runs its completions
  ws_->close_all();
  loop_->close();
}

}  // namespace cg
