// Listening sockets a chatgate process is handed when it starts, instead of
// binding its own: systemd's socket activation (sd_listen_fds(3):
// LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES from FileDescriptorName=) and a
// handover from the chatgate process before it (CHATGATE_LISTEN_FDS, set
// by handover.cc). Both name each socket after the listener it is for
// ("api", "admin"). Connections that wait in such a socket's queue while
// one process stops and the next starts are served, not refused.
//
// THREAD: not thread-safe; the loop thread, before the listeners open.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "config/config_types.h"

namespace cg {

class InheritedSockets {
 public:
  // Reads the sockets from the environment and unsets its variables (a
  // process started later, such as the next handover's, must not see
  // them). Each socket is marked close-on-exec: it is passed on only on
  // purpose.
  static InheritedSockets take();

  InheritedSockets() = default;
  InheritedSockets(InheritedSockets &&other) noexcept;
  InheritedSockets &operator=(InheritedSockets &&other) noexcept;
  InheritedSockets(const InheritedSockets &) = delete;
  InheritedSockets &operator=(const InheritedSockets &) = delete;
  ~InheritedSockets();  // closes what was not claimed

  // The socket named listener.name if it is a listening TCP socket bound
  // to listener.address and port (a port of 0 matches any), else -1: the
  // listener binds its own. One of that name bound elsewhere: from the
  // process before, the config moved the listener (closed); from systemd,
  // the unit and the config disagree (one warning): closed when the
  // config's address can be bound, else returned and served (an address
  // that overlaps the unit's cannot be bound beside it, and refusing to
  // start would loop through Restart=). OWNERSHIP: the caller owns a
  // returned descriptor.
  int claim(const HttpListenerConfig &listener);

  // Closes the sockets no listener claimed (a listener turned off), one
  // line each.
  void close_unclaimed();

  bool empty() const { return sockets_.empty(); }
  // "systemd", "the chatgate process before this one" or "": for messages.
  std::string_view origin() const { return origin_; }

 private:
  struct Socket {
    std::string name;
    int fd = -1;
  };
  std::vector<Socket> sockets_;
  std::string_view origin_;
};

// Whether `fd` is a listening TCP socket bound to address:port (port 0:
// any port). *bound gets "address:port" as it is bound, for messages.
bool inherited_socket_matches(int fd, const std::string &address, int port, std::string *bound);

}  // namespace cg
