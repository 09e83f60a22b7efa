#include "app/inherited_sockets.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <cstring>
#include <utility>

namespace cg {
namespace {

constexpr const char *kHandoverVar = "CHATGATE_LISTEN_FDS";

std::string address_text(const sockaddr_storage &ss) {
  char host[INET6_ADDRSTRLEN] = "";
  int port = 0;
  if (ss.ss_family == AF_INET) {
    const auto *a = reinterpret_cast<const sockaddr_in *>(&ss);
    inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
    port = ntohs(a->sin_port);
    return fmt::format("{}:{}", host, port);
  }
  if (ss.ss_family == AF_INET6) {
    const auto *a = reinterpret_cast<const sockaddr_in6 *>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    port = ntohs(a->sin6_port);
    return fmt::format("[{}]:{}", host, port);
  }
  return "(not an IP socket)";
}

// "api=4,admin=5": what handover.cc writes.
std::vector<std::pair<std::string, int>> parse_handover(std::string_view text) {
  std::vector<std::pair<std::string, int>> out;
  while (!text.empty()) {
    const size_t comma = text.find(',');
    const std::string_view item = text.substr(0, comma);
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
    const size_t eq = item.find('=');
    int fd = -1;
    if (eq == std::string_view::npos ||
        std::from_chars(item.data() + eq + 1, item.data() + item.size(), fd).ec != std::errc() ||
        fd < 3) {
      spdlog::warn("{}: '{}' is not name=descriptor; ignored", kHandoverVar, item);
      continue;
    }
    out.emplace_back(std::string(item.substr(0, eq)), fd);
  }
  return out;
}

// Whether address:port can be bound now (as libuv binds: SO_REUSEADDR).
bool address_bindable(const std::string &address, int port) {
  sockaddr_storage ss{};
  socklen_t len = 0;
  auto *v4 = reinterpret_cast<sockaddr_in *>(&ss);
  auto *v6 = reinterpret_cast<sockaddr_in6 *>(&ss);
  if (inet_pton(AF_INET, address.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    len = sizeof *v4;
  } else if (inet_pton(AF_INET6, address.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    len = sizeof *v6;
  } else {
    return true;  // not an address: the listener's own bind says what is wrong
  }
  const int probe = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (probe < 0) return true;
  const int on = 1;
  setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  const bool ok = bind(probe, reinterpret_cast<const sockaddr *>(&ss), len) == 0;
  ::close(probe);
  return ok;
}

}  // namespace

bool inherited_socket_matches(int fd, const std::string &address, int port, std::string *bound) {
  sockaddr_storage have{};
  socklen_t len = sizeof have;
  if (getsockname(fd, reinterpret_cast<sockaddr *>(&have), &len) != 0) {
    *bound = std::string("(getsockname: ") + std::strerror(errno) + ")";
    return false;
  }
  *bound = address_text(have);
  if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0) {
    *bound += " (not a listening stream socket)";
    return false;
  }
  if (have.ss_family == AF_INET) {
    const auto *a = reinterpret_cast<const sockaddr_in *>(&have);
    in_addr want{};
    return inet_pton(AF_INET, address.c_str(), &want) == 1 && want.s_addr == a->sin_addr.s_addr &&
           (port == 0 || port == ntohs(a->sin_port));
  }
  if (have.ss_family == AF_INET6) {
    const auto *a = reinterpret_cast<const sockaddr_in6 *>(&have);
    in6_addr want{};
    return inet_pton(AF_INET6, address.c_str(), &want) == 1 &&
           std::memcmp(&want, &a->sin6_addr, sizeof want) == 0 &&
           (port == 0 || port == ntohs(a->sin6_port));
  }
  return false;
}

InheritedSockets InheritedSockets::take() {
  InheritedSockets out;
  if (const char *h = std::getenv(kHandoverVar); h != nullptr) {
    for (auto &[name, fd] : parse_handover(h)) out.sockets_.push_back({std::move(name), fd});
    unsetenv(kHandoverVar);
    out.origin_ = "the chatgate process before this one";
  }
  char **names = nullptr;
  // unset_environment=1: LISTEN_* are for this process only.
  const int n = sd_listen_fds_with_names(1, &names);
  if (n < 0) {
    spdlog::warn("systemd sockets: {}; binding the listeners instead", std::strerror(-n));
  }
  for (int i = 0; i < n; i++) {
    out.sockets_.push_back(
        {names != nullptr && names[i] != nullptr ? names[i] : "unknown", SD_LISTEN_FDS_START + i});
    if (out.origin_.empty()) out.origin_ = "systemd";
  }
  if (names != nullptr) {
    for (int i = 0; i < n; i++) std::free(names[i]);
    std::free(names);
  }
  for (const Socket &s : out.sockets_) fcntl(s.fd, F_SETFD, FD_CLOEXEC);
  return out;
}

InheritedSockets::InheritedSockets(InheritedSockets &&other) noexcept
    : sockets_(std::exchange(other.sockets_, {})), origin_(other.origin_) {}

InheritedSockets &InheritedSockets::operator=(InheritedSockets &&other) noexcept {
  if (this != &other) {
    close_unclaimed();
    sockets_ = std::exchange(other.sockets_, {});
    origin_ = other.origin_;
  }
  return *this;
}

InheritedSockets::~InheritedSockets() { close_unclaimed(); }

int InheritedSockets::claim(const HttpListenerConfig &listener) {
  for (auto it = sockets_.begin(); it != sockets_.end(); ++it) {
    if (it->name != listener.name) continue;
    const int fd = it->fd;
    sockets_.erase(it);
    std::string bound;
    if (inherited_socket_matches(fd, listener.address, listener.port, &bound)) return fd;
    if (origin_ != "systemd") {
      // The reload that started this process moved the listener.
      spdlog::info(
          "listener '{}': moved from {} to {}:{}; the old socket closes with the "
          "process before",
          listener.name, bound, listener.address, listener.port);
      ::close(fd);
      return -1;
    }
    // The socket unit and the config disagree. The config's address wins
    // when it can be bound; one that overlaps the unit's (0.0.0.0 and
    // 127.0.0.1 on one port) cannot while systemd holds that socket, and
    // failing to start would loop through Restart=: the unit's serves then.
    if (address_bindable(listener.address, listener.port)) {
      spdlog::warn(
          "listener '{}': systemd's socket is bound to {}, but listeners.{} says {}:{}; "
          "binding the config's address (edit the socket unit to match, or that listener "
          "refuses connections while chatgate restarts)",
          listener.name, bound, listener.name, listener.address, listener.port);
      ::close(fd);
      return -1;
    }
    spdlog::warn(
        "listener '{}': systemd's socket is bound to {}, but listeners.{} says {}:{}, which "
        "cannot be bound beside it; serving systemd's socket (edit the socket unit, or the "
        "config, so that they agree)",
        listener.name, bound, listener.name, listener.address, listener.port);
    return fd;
  }
  return -1;
}

void InheritedSockets::close_unclaimed() {
  for (const Socket &s : sockets_) {
    spdlog::info("a socket named '{}' was handed over by {} but no listener uses it; closed",
                 s.name, origin_);
    ::close(s.fd);
  }
  sockets_.clear();
}

}  // namespace cg
