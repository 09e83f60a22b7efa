// What the admin API reports: /readyz, /metrics with the process metrics it
// refreshes, and the status and plugins JSON.
#include <chatgate/chatgate.h>
#include <dirent.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <uv.h>

#include <array>
#include <string>

#include "admin/admin.h"
#include "admin/admin_internal.h"
#include "base/json.h"
#include "base/log.h"
#include "base/loop.h"
#include "base/metrics.h"
#include "base/version.h"
#include "host/plugin_instance.h"
#include "host/plugin_loader.h"

namespace cg {
namespace {

const char *state_name(int state) {
  switch (state) {
    case CG_STATE_STARTING:
      return "starting";
    case CG_STATE_RUNNING:
      return "running";
    case CG_STATE_DEGRADED:
      return "degraded";
    default:
      return "failed";
  }
}

size_t open_fds() {
  size_t n = 0;
  // procfs: answered from kernel memory, no disk I/O on the loop thread.
  if (DIR *d = opendir("/proc/self/fd")) {
    while (const dirent *e = readdir(d)) {
      if (e->d_name[0] != '.') ++n;
    }
    closedir(d);
    if (n > 0) --n;  // the descriptor opendir itself holds
  }
  return n;
}

}  // namespace

// Ready when no instance is starting or failed; a degraded instance (a
// cache that lost Redis, say) still serves, so it is listed but ready -
// except the durable queue's (router.queue): while it is degraded every
// platform message would be refused, so a load balancer should send them
// to another instance. Not ready either once shutdown began.
void AdminApi::readyz(HttpServer &server, HttpExchange *ex) {
  std::string not_ready, degraded;
  for (const auto &p : plugins_) {
    const int st = p->health();
    if (st == CG_STATE_RUNNING) continue;
    std::string item = "{\"instance\":" + json_quote(p->name()) + ",\"state\":\"" + state_name(st) +
                       "\",\"reason\":" + json_quote(p->health_reason()) + "}";
    const bool holds_queue = !config_.router.queue.empty() && p->name() == config_.router.queue;
    std::string &list = st == CG_STATE_DEGRADED && !holds_queue ? degraded : not_ready;
    if (!list.empty()) list += ",";
    list += item;
  }
  const bool ready = not_ready.empty() && !shutting_down_;
  std::string body = std::string("{\"ready\":") + (ready ? "true" : "false") +
                     (shutting_down_ ? ",\"shuttingDown\":true" : "") + ",\"notReady\":[" +
                     not_ready + "],\"degraded\":[" + degraded + "]}";
  respond_json(server, ex, ready ? 200 : 503, body);
}

void AdminApi::update_process_metrics() {
  uv_rusage_t ru{};
  if (uv_getrusage(&ru) == 0) {
    const double cpu = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                       static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    if (double *g = metrics_.counter("process_cpu_seconds_total", "",
                                     "user and system CPU time of the process")) {
      *g = cpu;
    }
  }
  size_t rss = 0;
  if (uv_resident_set_memory(&rss) == 0) {
    if (double *g = metrics_.gauge("process_resident_memory_bytes", "", "resident memory")) {
      *g = static_cast<double>(rss);
    }
  }
  if (double *g = metrics_.gauge("process_open_fds", "", "open file descriptors")) {
    *g = static_cast<double>(open_fds());
  }
  if (double *g = metrics_.gauge("chatgate_uptime_seconds", "", "seconds since start")) {
    *g = static_cast<double>(loop_.now_ms() - started_ms_) / 1000.0;
  }
  if (double *g = metrics_.gauge("chatgate_build_info",
                                 "version=\"" + build_version() + "\",abi=\"" +
                                     std::to_string(CG_ABI_MAJOR) + "." +
                                     std::to_string(CG_ABI_MINOR) + "\"",
                                 "always 1; the labels say which build runs")) {
    *g = 1;
  }
  for (const auto &p : plugins_) {
    const std::string labels = "plugin_instance=" + json_quote(p->name()) + ",kind=\"" +
                               std::string(plugin_kind_name(p->kind())) + "\"";
    if (double *g = metrics_.gauge("chatgate_plugin_state", labels,
                                   "0 starting, 1 running, 2 degraded, 3 failed")) {
      *g = p->health();
    }
  }
  static constexpr std::array<std::pair<int, const char *>, 2> kLevels = {
      {{spdlog::level::warn, "warn"}, {spdlog::level::err, "error"}}};
  for (const auto &[level, name] : kLevels) {
    if (double *c =
            metrics_.counter("chatgate_log_messages_total", std::string("level=\"") + name + "\"",
                             "log lines written at warn and error level")) {
      *c = static_cast<double>(log_lines_written(level));
    }
  }
  if (double *g = metrics_.gauge("chatgate_http_in_flight", "listener=\"api\"",
                                 "requests received and not yet answered")) {
    *g = static_cast<double>(api_.in_flight());
  }
  if (double *g = metrics_.gauge("chatgate_http_connections", "listener=\"api\"",
                                 "open client connections")) {
    *g = static_cast<double>(api_.connection_count());
  }
}

void AdminApi::metrics(HttpServer &server, HttpExchange *ex) {
  update_process_metrics();
  static constexpr std::array<HttpHeader, 2> kHeaders = {{
      {"Content-Type", "text/plain; version=0.0.4; charset=utf-8"},
      {"Cache-Control", "no-store"},
  }};
  server.respond(ex, 200, kHeaders, metrics_.render());
}

std::string AdminApi::status() const {
  auto listener = [](const HttpListenerConfig &c, int port) {
    return "{\"name\":" + json_quote(c.name) + ",\"address\":" + json_quote(c.address) +
           ",\"port\":" + std::to_string(port) + "}";
  };
  size_t running = 0;
  for (const auto &p : plugins_) running += p->health() == CG_STATE_RUNNING ? 1 : 0;
  std::string body = "{\"version\":" + json_quote(build_version()) + ",\"abi\":\"" +
                     std::to_string(CG_ABI_MAJOR) + "." + std::to_string(CG_ABI_MINOR) +
                     "\",\"pid\":" + std::to_string(uv_os_getpid()) +
                     ",\"uptimeSeconds\":" + std::to_string((loop_.now_ms() - started_ms_) / 1000) +
                     ",\"listeners\":[" + listener(config_.api, api_.port());
  if (admin_server_ != nullptr)
    body += "," + listener(config_.admin_listener, admin_server_->port());
  body += "],\"config\":{\"file\":" + json_quote(config_.file) +
          ",\"loadedAt\":" + std::to_string(config_loaded_at_) + "}";
  body += ",\"instances\":" + std::to_string(plugins_.size()) +
          ",\"running\":" + std::to_string(running) +
          ",\"inFlight\":" + std::to_string(api_.in_flight()) + ",\"queue\":" + queue_status() +
          "}";
  return body;
}

// The durable queue as this instance last saw it (its metrics), or null
// without router.queue. Length, pending, age and dead letters are the
// whole fleet's; partitions owned is this instance's share.
std::string AdminApi::queue_status() const {
  if (config_.router.queue.empty()) return "null";
  auto gauge = [this](std::string_view name) {
    const double *g = metrics_.gauge(name, "");
    return g != nullptr ? fmt::format("{:g}", *g) : std::string("0");
  };
  bool healthy = false;
  for (const auto &p : plugins_) {
    if (p->name() == config_.router.queue) healthy = p->health() == CG_STATE_RUNNING;
  }
  return "{\"instance\":" + json_quote(config_.router.queue) +
         ",\"healthy\":" + (healthy ? "true" : "false") +
         ",\"partitions\":" + std::to_string(config_.router.queue_settings.partitions) +
         ",\"partitionsOwned\":" + gauge("chatgate_queue_partitions_owned") +
         ",\"members\":" + gauge("chatgate_queue_members") +
         ",\"length\":" + gauge("chatgate_queue_length") +
         ",\"pending\":" + gauge("chatgate_queue_pending") +
         ",\"oldestPendingSeconds\":" + gauge("chatgate_queue_oldest_pending_seconds") +
         ",\"deadLetters\":" + gauge("chatgate_queue_dead_letters") + "}";
}

std::string AdminApi::plugins() const {
  std::string body = "{\"plugins\":[";
  bool first = true;
  for (const auto &p : plugins_) {
    const cg_plugin_t *d = p->desc();
    if (!first) body += ",";
    first = false;
    body += "{\"instance\":" + json_quote(p->name()) + ",\"plugin\":" + json_quote(d->name) +
            ",\"kind\":\"" + std::string(plugin_kind_name(d->kind)) +
            "\",\"version\":" + json_quote(d->version) + ",\"abi\":\"" +
            std::to_string(d->abi_major) + "." + std::to_string(d->abi_minor) + "\",\"state\":\"" +
            state_name(p->health()) + "\",\"reason\":" + json_quote(p->health_reason()) + "}";
  }
  body += "]}";
  return body;
}

}  // namespace cg
