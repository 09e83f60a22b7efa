// One configured plugin instance: the loaded .so, its validated config, its
// state pointer and lifecycle, and the cg_host_t handle it is given. The
// host API table that plugins call is in plugin_host_api.cc.
//
// THREAD: not thread-safe; loop thread only.
#pragma once

#include <chatgate/plugin.h>

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "base/log_throttle.h"
#include "config/config_schema.h"
#include "host/plugin_loader.h"

namespace cg {

class Cache;
class Loop;
class MessageSink;
class Metrics;
class HttpServer;
class HttpClient;
class PluginChannelPort;
class WsClient;
class PluginInstance;

// What the host API reaches through, owned by the app.
struct HostServices {
  Loop *loop = nullptr;
  Metrics *metrics = nullptr;
  HttpServer *api = nullptr;   // listener for plugin routes
  HttpClient *http = nullptr;  // outbound HTTP (null under --check-config)
  WsClient *ws = nullptr;      // outbound WebSocket (null under --check-config)
  Cache *cache = nullptr;      // the router's cache (null: none configured)
  // Emits, drops and proactive sends of channel plugins go here: the router
  // (null under --check-config: those calls get CG_EUNAVAIL).
  MessageSink *sink = nullptr;
};

}  // namespace cg

// The opaque handle a plugin holds; one per instance.
struct cg_host_s {
  cg::PluginInstance *instance;
};

namespace cg {

// The table every plugin receives. THREAD: see sdk/include/chatgate/host.h.
const cg_host_api_t *host_api_table();

class PluginInstance {
 public:
  enum class Phase { kLoaded, kInitialized, kStarted, kStopping, kStopped, kDestroyed };

  PluginInstance(std::string name, LoadedPlugin plugin, PluginConfig config,
                 HostServices *services);
  ~PluginInstance();  // destroys the plugin's state if init succeeded
  PluginInstance(const PluginInstance &) = delete;
  PluginInstance &operator=(const PluginInstance &) = delete;

  // Calls the plugin's init with its validated config. On error *error
  // holds a log line naming the instance, the code and the plugin's own
  // message.
  int init(std::string *error);
  int start(std::string *error);
  // Calls the plugin's stop; `done` runs once the plugin reports done.
  void stop(std::function<void()> done);
  // A started channel built with cg_channel_ops_t.quiesce (1.7): tells it
  // to stop taking messages from the platform, once. Returns whether the
  // plugin was told (false: it has no quiesce, and its submits are refused
  // by the router's closed intake instead).
  bool quiesce();

  const std::string &name() const { return name_; }
  const cg_plugin_t *desc() const { return plugin_.desc; }
  const LoadedPlugin &plugin() const { return plugin_; }
  uint32_t kind() const { return plugin_.desc->kind; }
  void *state() const { return state_; }
  Phase phase() const { return phase_; }
  cg_host_t *host() { return &host_; }
  HostServices *services() const { return services_; }
  const PluginConfig &config() const { return config_; }

  // What the instance can do: the descriptor's capability bits, narrowed
  // by the instance at init (cg_host_api_t.set_capabilities, since 1.4).
  uint64_t capabilities() const { return capabilities_; }
  // Narrows the capabilities: CG_EINVAL for a bit the descriptor lacks,
  // CG_EPERM outside init.
  int set_capabilities(uint64_t caps);
  // The instance's log_throttled causes (cg_host_api_t, since 1.4).
  LogThrottle &log_throttle() { return log_throttle_; }
  // A channel instance's port for the router; null for other kinds.
  PluginChannelPort *channel_port() const { return channel_port_.get(); }

  const cg_channel_ops_t *channel_ops() const;
  const cg_model_ops_t *model_ops() const;
  const cg_cache_ops_t *cache_ops() const;
  // The cache's durable queue (ABI 1.6), or null: none, a plugin built
  // before 1.6, or a table with a function missing.
  const cg_queue_ops_t *queue_ops() const;

  // Health as reported through set_state.
  int health() const { return health_; }
  const std::string &health_reason() const { return health_reason_; }
  void set_health(int state, std::string_view reason);

  // set_error: the message attached to the plugin's next error return.
  void set_error(std::string_view msg) { last_error_ = msg; }
  std::string take_error();

 private:
  static void on_stopped(void *arg, int status);

  std::string name_;
  LoadedPlugin plugin_;
  HostServices *services_;
  PluginConfig config_;
  cg_host_s host_{this};
  void *state_ = nullptr;
  Phase phase_ = Phase::kLoaded;
  bool quiesced_ = false;
  int health_ = CG_STATE_STARTING;
  bool health_reported_ = false;  // set_health was called (since start began)
  std::string health_reason_;
  std::string last_error_;
  std::function<void()> stop_done_;
  uint64_t capabilities_ = 0;
  bool in_init_ = false;
  LogThrottle log_throttle_;
  std::unique_ptr<PluginChannelPort> channel_port_;
};

}  // namespace cg
