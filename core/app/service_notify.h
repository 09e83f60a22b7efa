// Tells systemd how the service is doing (Type=notify, sd_notify(3) from
// libsystemd): READY=1 once the listeners are open, WATCHDOG=1 from the
// loop thread every half WatchdogSec (a loop that hangs stops pinging, and
// systemd restarts the service), RELOADING=1 then READY=1 around a config
// reload, STOPPING=1 when shutdown begins. Without NOTIFY_SOCKET (not
// started by systemd) every call does nothing. A notification is one
// datagram to a local socket: it does not wait on anything.
//
// THREAD: not thread-safe; loop thread only.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace cg {

class Loop;

class ServiceNotify {
 public:
  explicit ServiceNotify(Loop &loop);
  ~ServiceNotify();
  ServiceNotify(const ServiceNotify &) = delete;
  ServiceNotify &operator=(const ServiceNotify &) = delete;

  // READY=1 with a STATUS= line; starts the watchdog pings when systemd
  // asked for them (WATCHDOG_USEC).
  void ready(std::string_view status);
  void reloading();
  void reloaded();
  // STOPPING=1; the watchdog pings stop (the shutdown's own deadline rules).
  void stopping();

 private:
  void send(const std::string &state);

  Loop &loop_;
  bool enabled_ = false;
  uint64_t watchdog_usec_ = 0;
  uint64_t timer_id_ = 0;
};

}  // namespace cg
