// App::reload: SIGHUP and POST /admin/api/reload.
#include <chatgate/common.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>

#include "admin/admin.h"
#include "app/app.h"
#include "app/handover.h"
#include "app/service_notify.h"
#include "base/json.h"
#include "base/loop.h"
#include "config/config_reload.h"
#include "config/config_schema.h"
#include "host/plugin_instance.h"
#include "host/plugin_loader.h"
#include "router/router.h"

namespace cg {

struct App::ReloadWork {
  App *app = nullptr;
  std::string path;
  Config fresh;
  std::optional<ConfigError> error;
  ReloadDone done;
};

namespace {

std::string json_list(const std::vector<std::string> &items) {
  std::string out = "[";
  for (const std::string &s : items) {
    if (out.size() > 1) out += ",";
    out += json_quote(s);
  }
  return out + "]";
}

std::string joined(const std::vector<std::string> &items) {
  std::string out;
  for (const std::string &s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

std::string error_json(std::string_view message) {
  return "{\"reloaded\":false,\"error\":" + json_quote(message) + "}";
}

}  // namespace

void App::reload(ReloadDone done) {
  // Answers on a later turn, as promised, whatever the outcome.
  auto answer_later = [this](ReloadDone d, int status, std::string json) {
    later([d = std::move(d), status, json = std::move(json)]() mutable {
      d(status, std::move(json));
    });
  };
  if (shutting_down_) {
    spdlog::info("config reload: ignored, this process is shutting down");
    answer_later(std::move(done), 503, error_json("shutting down"));
    return;
  }
  if (config_.file == kEmbeddedConfigName) {
    spdlog::warn("config reload: chatgate runs on its embedded default config; nothing to reload");
    answer_later(std::move(done), 409,
                 error_json("chatgate runs on its embedded default config (no --config file)"));
    return;
  }
  if (reloading_ || handover_->busy() || ready_fd_ >= 0) {
    answer_later(std::move(done), 409,
                 error_json(reloading_          ? "a reload is already running"
                            : handover_->busy() ? "a handover to a new process is under way"
                                                : "this process is still taking over"));
    return;
  }
  reloading_ = true;
  notify_->reloading();
  auto owned = std::make_unique<ReloadWork>();
  owned->app = this;
  owned->path = config_.file;
  owned->done = std::move(done);
  ReloadWork *work = owned.release();  // the after-work callback owns it
  // Reading and parsing a file is disk I/O: the thread pool's, not the loop's.
  const int rc = loop_->queue_work(
      [](void *arg) {
        auto *w = static_cast<ReloadWork *>(arg);
        w->error = config_load_file(w->path, &w->fresh);
      },
      [](void *arg, int status) {
        std::unique_ptr<ReloadWork> w(static_cast<ReloadWork *>(arg));
        w->app->reloading_ = false;
        if (!w->app->shutting_down_) w->app->notify_->reloaded();
        if (status != 0 || w->app->shutting_down_) {
          w->done(503, error_json("shutting down"));
          return;
        }
        w->app->reload_finish(*w);
      },
      work);
  if (rc != 0) {
    reloading_ = false;
    notify_->reloaded();
    std::unique_ptr<ReloadWork> back(work);
    answer_later(std::move(back->done), 503, error_json(cg_strerror(rc)));
  }
}

void App::reload_finish(ReloadWork &work) {
  // The certificate files are re-read on every reload, whatever the config
  // file says: renewal tools send SIGHUP after writing them.
  api_->reload_tls();
  if (admin_) admin_->reload_tls();
  const Config &fresh = work.fresh;
  std::string refusal;
  ConfigReloadPlan plan;
  if (work.error) {
    refusal = work.error->to_string();
  } else {
    plan = config_reload_plan(config_, fresh);
    // A handover applies a new address and a new token together.
    if (plan.handover.empty()) refusal = config_reload_refusal(config_, fresh);
  }
  // A changed section of a running instance is checked against its
  // plugin's schema now, so a typo is reported by the reload rather than
  // by the new process. (A new .so is only loaded by a new process.)
  for (size_t i = 0; i < fresh.plugins.size() && refusal.empty(); i++) {
    const PluginInstanceConfig &pc = fresh.plugins[i];
    PluginInstance *running = instance(pc.name);
    if (running == nullptr || running->plugin().path != pc.path) continue;
    PluginConfig values;
    if (auto err = plugin_config_validate(
            config_plugin_section(pc), running->plugin().fields, fresh.file,
            "plugins.instances[" + std::to_string(i) + "].config", &values, pc.line)) {
      refusal = err->to_string();
    }
  }
  if (!refusal.empty()) {
    spdlog::error("config reload from {}: refused, nothing changed: {}", work.path, refusal);
    work.done(400, error_json(refusal));
    return;
  }
  if (!plan.handover.empty() && handover_->busy()) {
    // A SIGUSR2 came while the file was read.
    work.done(409, error_json("a handover to a new process is under way"));
    return;
  }
  if (!plan.handover.empty()) {
    // All or nothing: the new process applies every change, this one none.
    spdlog::info("config reload from {}: {} need a new process; handing over", work.path,
                 joined(plan.handover));
    hand_over("config reload", [this, path = work.path, plan, done = std::move(work.done)](
                                   int pid, const std::string &error) {
      if (pid == 0) {
        const bool refused = handover_->check_failed();
        done(refused ? 400 : 500,
             error_json((refused ? "" : "handover failed: ") + error + "; nothing changed"));
        return;
      }
      done(200, "{\"reloaded\":true,\"file\":" + json_quote(path) + ",\"applied\":" +
                    json_list(plan.applied) + ",\"handover\":" + json_list(plan.handover) +
                    ",\"pid\":" + std::to_string(pid) + "}");
    });
    return;
  }
  const bool token_changed = config_.admin.token != fresh.admin.token;
  config_reload_apply(config_, fresh);
  spdlog::default_logger()->set_level(spdlog::level::from_str(config_.logging.level));
  router_->reconfigure(config_.router, config_.admin.show_content);
  if (admin_api_) admin_api_->on_reload(token_changed);
  spdlog::info(
      "config reload from {}: {}", work.path,
      plan.applied.empty() ? std::string("nothing to apply") : "applied " + joined(plan.applied));
  work.done(200, "{\"reloaded\":true,\"file\":" + json_quote(work.path) +
                     ",\"applied\":" + json_list(plan.applied) +
                     ",\"handover\":[],\"pid\":" + std::to_string(getpid()) + "}");
}

}  // namespace cg
