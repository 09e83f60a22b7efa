#include "host/plugin_instance.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "host/channel_port.h"

namespace cg {

PluginInstance::PluginInstance(std::string name, LoadedPlugin plugin, PluginConfig config,
                               HostServices *services)
    : name_(std::move(name)),
      plugin_(std::move(plugin)),
      services_(services),
      config_(std::move(config)),
      capabilities_(plugin_.desc->capabilities) {
  if (kind() == CG_KIND_CHANNEL) channel_port_ = std::make_unique<PluginChannelPort>(*this);
}

PluginInstance::~PluginInstance() {
  if (phase_ != Phase::kLoaded && phase_ != Phase::kDestroyed) {
    plugin_.desc->destroy(state_);
    phase_ = Phase::kDestroyed;
  }
}

std::string PluginInstance::take_error() {
  std::string e = std::move(last_error_);
  last_error_.clear();
  return e;
}

int PluginInstance::init(std::string *error) {
  const auto *cfg = reinterpret_cast<const cg_config_t *>(&config_);
  capabilities_ = plugin_.desc->capabilities;  // a second init starts from the descriptor
  in_init_ = true;
  const int rc = plugin_.desc->init(host_api_table(), &host_, cfg, &state_);
  in_init_ = false;
  if (rc != 0) {
    const std::string why = take_error();
    *error = fmt::format("plugin instance '{}' ({}): init failed: {} ({}){}{}", name_, plugin_.path,
                         cg_strerror(rc), cg_err_name(rc), why.empty() ? "" : ": ", why);
    state_ = nullptr;
    return rc;
  }
  phase_ = Phase::kInitialized;
  return 0;
}

int PluginInstance::start(std::string *error) {
  health_reported_ = false;
  const int rc = plugin_.desc->start(state_);
  if (rc != 0) {
    const std::string why = take_error();
    *error =
        fmt::format("plugin instance '{}' ({}): start failed: {} ({}){}{}", name_, plugin_.path,
                    cg_strerror(rc), cg_err_name(rc), why.empty() ? "" : ": ", why);
    set_health(CG_STATE_FAILED, "start failed");
    return rc;
  }
  phase_ = Phase::kStarted;
  // Running unless the plugin said otherwise during start: one that is
  // still connecting (a long connection, Redis) said "starting", and stays
  // so until it says more; /readyz and a handover's new process wait on it.
  if (health_ == CG_STATE_STARTING && !health_reported_) health_ = CG_STATE_RUNNING;
  return 0;
}

void PluginInstance::stop(std::function<void()> done) {
  if (phase_ != Phase::kStarted) {
    done();
    return;
  }
  phase_ = Phase::kStopping;
  stop_done_ = std::move(done);
  plugin_.desc->stop(state_, &PluginInstance::on_stopped, this);
}

bool PluginInstance::quiesce() {
  const cg_channel_ops_t *ops = channel_ops();
  if (ops == nullptr || phase_ != Phase::kStarted || quiesced_ ||
      ops->struct_size < offsetof(cg_channel_ops_t, quiesce) + sizeof(void *) ||
      ops->quiesce == nullptr) {
    return false;
  }
  quiesced_ = true;
  ops->quiesce(state_);
  return true;
}

void PluginInstance::on_stopped(void *arg, int status) {
  auto *self = static_cast<PluginInstance *>(arg);
  if (self->phase_ != Phase::kStopping) {
    spdlog::error("plugin instance '{}': stop completion called twice (ignored)", self->name_);
    return;
  }
  if (status != 0) {
    spdlog::warn("plugin instance '{}': stopped with {}", self->name_, cg_strerror(status));
  }
  self->phase_ = Phase::kStopped;
  self->health_ = CG_STATE_FAILED;
  self->health_reason_ = "stopped";
  auto done = std::move(self->stop_done_);
  done();
}

int PluginInstance::set_capabilities(uint64_t caps) {
  if (!in_init_) return CG_EPERM;
  if ((caps & ~plugin_.desc->capabilities) != 0) return CG_EINVAL;
  capabilities_ = caps;
  return 0;
}

void PluginInstance::set_health(int state, std::string_view reason) {
  health_reported_ = true;
  if (state != health_ || reason != health_reason_) {
    if (state == CG_STATE_DEGRADED || state == CG_STATE_FAILED) {
      spdlog::warn("plugin instance '{}': {}: {}", name_,
                   state == CG_STATE_FAILED ? "failed" : "degraded", reason);
    } else if (health_ == CG_STATE_DEGRADED || health_ == CG_STATE_FAILED) {
      spdlog::info("plugin instance '{}': recovered", name_);
    }
  }
  health_ = state;
  health_reason_ = reason;
}

const cg_channel_ops_t *PluginInstance::channel_ops() const {
  return kind() == CG_KIND_CHANNEL ? static_cast<const cg_channel_ops_t *>(plugin_.desc->ops)
                                   : nullptr;
}
const cg_model_ops_t *PluginInstance::model_ops() const {
  return kind() == CG_KIND_MODEL ? static_cast<const cg_model_ops_t *>(plugin_.desc->ops) : nullptr;
}
const cg_cache_ops_t *PluginInstance::cache_ops() const {
  return kind() == CG_KIND_CACHE ? static_cast<const cg_cache_ops_t *>(plugin_.desc->ops) : nullptr;
}
const cg_queue_ops_t *PluginInstance::queue_ops() const {
  const cg_cache_ops_t *c = cache_ops();
  // The table's size says whether the plugin was built with the member
  // (abi_minor is the lowest host it needs, which may be older).
  if (c == nullptr || c->struct_size < offsetof(cg_cache_ops_t, queue) + sizeof(void *) ||
      c->queue == nullptr) {
    return nullptr;
  }
  const cg_queue_ops_t *q = c->queue;
  if (q->struct_size < sizeof(cg_queue_ops_t) || q->enqueue == nullptr || q->lease == nullptr ||
      q->release == nullptr || q->read == nullptr || q->claim == nullptr || q->retry == nullptr ||
      q->ack == nullptr || q->dead_letter == nullptr || q->members == nullptr ||
      q->stats == nullptr) {
    return nullptr;
  }
  return q;
}

}  // namespace cg
