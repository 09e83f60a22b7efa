// Tells systemd how the service is doing (Type=notify, sd_notify(3) from
// libsystemd): READY=1 once the listeners are open, WATCHDOG=1 from the
// loop thread every half WatchdogSec (a loop that hangs stops pinging, and
// systemd restarts the service), RELOADING=1 then READY=1 around a config
// reload, STOPPING=1 when shutdown begins. A handover (handover.h): the old
// process says RELOADING=1, then MAINPID=<new pid> and READY=1 for the new
// one once it is ready (so the unit keeps NotifyAccess=main: only the main
// process speaks), and nothing more; the new process only pings the
// watchdog. Without NOTIFY_SOCKET (not
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
  // The watchdog pings alone: a handover's new process, whose READY=1 the
  // old process sends (successor_ready).
  void watch();
  // MAINPID=pid, READY=1: the process `pid` serves from now on. Sent by the
  // old process of a handover; it then goes quiet (handed_over).
  void successor_ready(int pid);
  // The watchdog pings stop; no STOPPING=1 (the service goes on).
  void handed_over();
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
