// The chatgate process: loads plugins, opens the listeners, runs the loop,
// and shuts down in order on SIGTERM/SIGINT.
//
// THREAD: not thread-safe; owns the loop thread (the caller's).
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "config/config_types.h"

namespace cg {

class ChatApi;
class HttpClient;
class AdminApi;
class WsClient;
class HttpServer;
class Loop;
class Metrics;
class Cache;
class Queue;
class ModelBackend;
class PluginInstance;
class Router;
class ServiceNotify;
class Handover;
struct HostServices;

// Loads every configured plugin and validates its config section against
// the plugin's schema, without calling init. Used by --check-config and by
// App::run. Returns "" or the first error line.
std::string app_load_plugins(const Config &config, HostServices *services,
                             std::vector<std::unique_ptr<PluginInstance>> *out);

// Checks that router.model and router.cache name instances of the right
// kind. Returns "" or the error line.
std::string app_check_router(const Config &config,
                             const std::vector<std::unique_ptr<PluginInstance>> &plugins);

// What --check-config does: loads every plugin, validates its config
// section, checks the router's instances, then runs each plugin's init (which
// validates config and does no I/O) and destroys it again. Opens no port.
// Returns "" or the first error line; *instances gets the instance count.
std::string app_check_config(const Config &config, size_t *instances);

// A descriptor a handover passed in the environment variable `name`
// (handover.h): read once, the variable unset, the descriptor made
// close-on-exec (it is this process's alone); -1 when none.
int app_take_env_fd(const char *name);

// What the process before this one passed on in a handover (handover.h,
// CHATGATE_STATE_FD), read once and the variable unset; "" when none.
std::string app_take_handover_state();

class App {
 public:
  App();
  ~App();
  App(const App &) = delete;
  App &operator=(const App &) = delete;

  // Runs until a stop signal; returns the process exit code (0 after a
  // clean shutdown, 1 when start-up fails).
  int run(Config config);

  // Re-reads the config file (on the thread pool) and applies what can
  // change in a running process (config_reload.h); when anything else
  // changed, hands over to a new process instead (hand_over), which
  // applies it all. A config with any error changes nothing. done(status,
  // json) follows on the loop thread, never inside the call: 200
  // {"reloaded":true,"applied":[...],"handover":[...],"pid":N} (handover
  // empty and pid this process's when all was applied live), 400 with the
  // config error (this binary's, or the new process's --check-config), 409
  // (no config file, or a reload or handover already running), 500 (the
  // new process failed to start: nothing changed) or 503 (shutting down).
  // SIGHUP and POST /admin/api/reload come here.
  using ReloadDone = std::function<void(int status, std::string json)>;
  void reload(ReloadDone done);

  // What a handover starts: the binary's path as it was at start (a
  // package upgrade replaces the file there) and the arguments after
  // argv[0]. Call before run.
  void set_command(std::string exe, std::vector<std::string> args);

  // Hands this process's work to a new one (handover.h) running the binary
  // at that path with the same arguments, so with the config file as it is
  // now. Once the new process is ready, this one stops accepting, drains
  // and exits; if it fails, this one goes on serving (one error line).
  // done(pid of the new process, "") or done(0, why) on the loop thread,
  // never inside the call. SIGUSR2 (a binary upgrade) and a reload whose
  // changes need a new process come here.
  using HandoverDone = std::function<void(int pid, std::string error)>;
  void hand_over(std::string why, HandoverDone done);

 private:
  struct ReloadWork;
  // Runs fn on a later loop turn (an answer promised "never inside the
  // call"); dropped when the loop is closing, as nobody waits then.
  void later(std::function<void()> fn);
  void reload_finish(ReloadWork &work);
  int start();
  // Shutdown's first step: /readyz says 503, channels stop taking
  // messages; after shutdown.delayMs (not for a handover, whose successor
  // already holds the sockets) the listeners stop accepting and the drain
  // begins.
  void begin_shutdown(const std::string &why, bool handover = false);
  void stop_accepting(const std::string &why);
  void drain_tick();
  // A handover's new process: says "READY" to the old one once every
  // plugin instance runs (none starting or degraded: long connections
  // open), or after 15 s with a warning naming those that do not.
  void announce_ready();
  void stop_plugins(size_t index);
  void close_listeners();  // api, then admin, then the plugins stop
  // The order plugins start in: caches, then model backends, then channels
  // (each in config order), so a channel's start can use the cache and no
  // message arrives before the backend runs. They stop in reverse.
  std::vector<PluginInstance *> start_order() const;
  void close_everything();
  PluginInstance *instance(const std::string &name);

  Config config_;
  uv_loop_t uv_loop_{};
  std::unique_ptr<Loop> loop_;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<HostServices> services_;
  std::vector<std::unique_ptr<PluginInstance>> plugins_;
  std::unique_ptr<HttpServer> api_;
  std::unique_ptr<HttpServer> admin_;  // null when listeners.admin.enabled is false
  std::unique_ptr<HttpClient> http_;
  std::unique_ptr<WsClient> ws_;
  std::unique_ptr<ModelBackend> model_;
  std::unique_ptr<Cache> cache_;  // null without router.cache
  std::unique_ptr<Queue> queue_;  // null without router.queue
  std::unique_ptr<Router> router_;
  std::unique_ptr<ChatApi> web_chat_;  // the admin page's chat (the "web" channel)
  std::unique_ptr<ChatApi> chat_api_;
  std::unique_ptr<AdminApi> admin_api_;
  std::unique_ptr<ServiceNotify> notify_;
  std::unique_ptr<Handover> handover_;
  std::string exe_;
  std::vector<std::string> args_;
  int ready_fd_ = -1;  // a handover's new process: where to say READY (CHATGATE_READY_FD)
  uint64_t ready_wait_started_ms_ = 0;
  uv_signal_t sigterm_{}, sigint_{}, sighup_{}, sigusr2_{};
  uv_timer_t drain_timer_{};
  uint64_t ready_timer_id_ = 0;  // announce_ready's polls
  uint64_t delay_timer_id_ = 0;  // shutdown.delayMs
  uint64_t shutdown_started_ms_ = 0;
  bool shutting_down_ = false;
  bool cancelled_ = false;
  bool intake_stopped_ = false;
  bool successor_refused_ = false;  // a handover's new process gave up: exit 1
  bool reloading_ = false;
  size_t started_plugins_ = 0;
};

}  // namespace cg
