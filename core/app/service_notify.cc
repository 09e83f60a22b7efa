#include "app/service_notify.h"

#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "base/loop.h"

namespace cg {

ServiceNotify::ServiceNotify(Loop &loop) : loop_(loop) {
  const char *socket = std::getenv("NOTIFY_SOCKET");
  enabled_ = socket != nullptr && socket[0] != '\0';
  uint64_t usec = 0;
  if (enabled_ && sd_watchdog_enabled(0, &usec) > 0) watchdog_usec_ = usec;
}

ServiceNotify::~ServiceNotify() {
  if (timer_id_ != 0) loop_.timer_stop(timer_id_);
}

void ServiceNotify::send(const std::string &state) {
  if (!enabled_) return;
  if (const int rc = sd_notify(0, state.c_str()); rc < 0) {
    spdlog::warn("systemd notification failed: {}", std::strerror(-rc));
  }
}

void ServiceNotify::ready(std::string_view status) {
  send("READY=1\nSTATUS=" + std::string(status));
  watch();
}

void ServiceNotify::successor_ready(int pid) {
  // WATCHDOG=1 too: the new process's first ping is half a period away,
  // and this one pings no more.
  send("MAINPID=" + std::to_string(pid) + "\nREADY=1\nWATCHDOG=1\nSTATUS=running (took over " +
       "from pid " + std::to_string(getpid()) + ")");
}

void ServiceNotify::handed_over() {
  if (timer_id_ != 0) loop_.timer_stop(timer_id_);
  timer_id_ = 0;
}

void ServiceNotify::watch() {
  if (watchdog_usec_ == 0 || timer_id_ != 0) return;
  // Twice per period, from the loop itself: only a loop that turns pings.
  const uint64_t every_ms = std::max<uint64_t>(watchdog_usec_ / 2000, 1);
  loop_.timer_start(
      every_ms, every_ms,
      [](void *arg, uint64_t) { static_cast<ServiceNotify *>(arg)->send("WATCHDOG=1"); }, this,
      &timer_id_);
}

void ServiceNotify::reloading() { send("RELOADING=1\nSTATUS=reloading the config"); }

void ServiceNotify::reloaded() { send("READY=1\nSTATUS=running"); }

void ServiceNotify::stopping() {
  send("STOPPING=1\nSTATUS=shutting down");
  if (timer_id_ != 0) loop_.timer_stop(timer_id_);
  timer_id_ = 0;
}

}  // namespace cg
