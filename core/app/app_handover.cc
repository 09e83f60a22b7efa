// App::hand_over (SIGUSR2, and reloads that need a new process) and the new
// process's side of it, App::announce_ready. The mechanism is handover.h.
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "admin/admin.h"
#include "app/app.h"
#include "app/handover.h"
#include "app/service_notify.h"
#include "base/loop.h"
#include "host/plugin_instance.h"
#include "net/http_server.h"
#include "router/router.h"

namespace cg {
namespace {

constexpr uint64_t kSuccessorWaitMs = 15000;
constexpr uint64_t kSuccessorPollMs = 20;

}  // namespace

void App::set_command(std::string exe, std::vector<std::string> args) {
  exe_ = std::move(exe);
  args_ = std::move(args);
}

void App::hand_over(std::string why, HandoverDone done) {
  auto refuse = [this](HandoverDone d, std::string error) {
    later([d = std::move(d), error = std::move(error)]() mutable { d(0, std::move(error)); });
  };
  if (shutting_down_) {
    spdlog::warn("{}: ignored, this process is shutting down", why);
    return refuse(std::move(done), "shutting down");
  }
  if (handover_->busy()) {
    spdlog::warn("{}: ignored, a handover is already under way", why);
    return refuse(std::move(done), "a handover is already under way");
  }
  if (ready_fd_ >= 0) {
    // Itself a new process not yet ready: the one before it still serves.
    spdlog::warn("{}: ignored, this process is still taking over", why);
    return refuse(std::move(done), "this process is still taking over from the one before");
  }
  std::vector<Handover::Socket> sockets;
  for (HttpServer *server : {api_.get(), admin_.get()}) {
    if (server != nullptr && server->listen_fd() >= 0) {
      sockets.push_back({server->config().name, server->listen_fd()});
    }
  }
  notify_->reloading();
  spdlog::info("{}: starting {} to take over; this process (pid {}) serves until it is ready", why,
               exe_, getpid());
  // The admin page's sessions go along, so that the page stays logged in.
  auto state = [this] { return admin_api_ ? admin_api_->export_state() : std::string(); };
  // Shared: the callback holds it, and so does the refusal below when the
  // handover cannot even start (the callback is then dropped uncalled).
  auto answer = std::make_shared<HandoverDone>(std::move(done));
  const int rc = handover_->start(
      exe_, args_, sockets, state, [this, why, answer](int pid, std::string error) {
        if (pid == 0 && shutting_down_) {
          spdlog::info("{}: handover cancelled: {}", why, error);
          (*answer)(0, std::move(error));
          return;
        }
        if (pid == 0) {
          spdlog::error("{}: handover failed: {}; this process (pid {}) goes on serving", why,
                        error, getpid());
          if (!shutting_down_) notify_->reloaded();
          (*answer)(0, std::move(error));
          return;
        }
        spdlog::info("{}: pid {} took over; this process (pid {}) stops accepting and drains", why,
                     pid, getpid());
        notify_->successor_ready(pid);
        (*answer)(pid, {});
        begin_shutdown(why, true);
      });
  if (rc != 0) {
    const std::string error = "cannot start " + exe_ + ": " + uv_strerror(rc);
    spdlog::error("{}: handover failed: {}; this process (pid {}) goes on serving", why, error,
                  getpid());
    notify_->reloaded();
    refuse(std::move(*answer), error);
  }
}

void App::later(std::function<void()> fn) {
  auto *owned = std::make_unique<std::function<void()>>(std::move(fn)).release();  // the task's
  if (loop_->defer(
          [](void *arg) {
            std::unique_ptr<std::function<void()>> f(static_cast<std::function<void()> *>(arg));
            (*f)();
          },
          owned) != 0) {
    std::unique_ptr<std::function<void()>>{owned};  // the loop is closing: nobody waits
  }
}

int app_take_env_fd(const char *name) {
  const char *v = std::getenv(name);
  if (v == nullptr) return -1;
  const std::string_view text = v;
  int fd = -1;
  if (std::from_chars(text.data(), text.data() + text.size(), fd).ec != std::errc() || fd < 3) {
    fd = -1;
  }
  unsetenv(name);
  if (fd >= 0) fcntl(fd, F_SETFD, FD_CLOEXEC);
  return fd;
}

std::string app_take_handover_state() {
  const int fd = app_take_env_fd("CHATGATE_STATE_FD");
  if (fd < 0) return {};
  // All of it was written, and the writer closed, before this process
  // started: reading to the end cannot wait. Non-blocking all the same.
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  std::string out;
  char buf[4096];
  ssize_t n = 0;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

void App::announce_ready() {
  if (ready_wait_started_ms_ == 0) ready_wait_started_ms_ = loop_->now_ms();
  // Starting (a long connection being opened) or degraded (its first
  // attempt failed, a retry is due): taking over now would trade the old
  // process's working connection for none.
  std::string starting, failed;
  for (const auto &p : plugins_) {
    const int st = p->health();
    if (st == CG_STATE_FAILED) {
      failed += (failed.empty() ? "" : "; ") + p->name() + ": " + p->health_reason();
    } else if (st == CG_STATE_STARTING || st == CG_STATE_DEGRADED) {
      starting += (starting.empty() ? "" : ", ") + p->name();
    }
  }
  // With the durable queue: a member before the old process leaves, so the
  // partitions it hands over are taken at once.
  if (!router_->queue_joined()) starting += std::string(starting.empty() ? "" : ", ") + "the queue";
  const uint64_t waited = loop_->now_ms() - ready_wait_started_ms_;
  if (shutting_down_) {
    // Stopped before it was ready (the old process gave up on it): it
    // says nothing, and the old process goes on.
    if (ready_timer_id_ != 0) loop_->timer_stop(ready_timer_id_);
    ready_timer_id_ = 0;
    ::close(ready_fd_);
    ready_fd_ = -1;
    return;
  }
  if (!failed.empty()) {
    // Failed (refused credentials, the platform's connection limit): this
    // process would serve worse than the one it replaces, which goes on
    // when this one exits without saying it is ready.
    spdlog::error("handover: not taking over, a plugin failed: {}", failed);
    successor_refused_ = true;
    begin_shutdown("handover refused");  // says nothing to systemd: not its main process
    ::close(ready_fd_);
    ready_fd_ = -1;
    return;
  }
  if (!starting.empty() && waited < kSuccessorWaitMs) {
    if (ready_timer_id_ == 0) {
      loop_->timer_start(
          kSuccessorPollMs, kSuccessorPollMs,
          [](void *self, uint64_t) { static_cast<App *>(self)->announce_ready(); }, this,
          &ready_timer_id_);
    }
    return;
  }
  if (ready_timer_id_ != 0) loop_->timer_stop(ready_timer_id_);
  ready_timer_id_ = 0;
  if (!starting.empty()) {
    spdlog::warn("handover: not running yet after {} ms: {}; taking over all the same", waited,
                 starting);
  }
  // Six bytes into a pipe nobody else writes: cannot block.
  static constexpr char kReady[] = "READY\n";
  if (::write(ready_fd_, kReady, sizeof kReady - 1) != static_cast<ssize_t>(sizeof kReady - 1)) {
    spdlog::error(
        "handover: cannot tell the process before this one that we are ready: {}; if it "
        "still runs it goes on serving and stops this one",
        std::strerror(errno));
  }
  ::close(ready_fd_);
  ready_fd_ = -1;
  // Accepting only now: until the old process stopped, it served every
  // connection from the shared queue, with everything connected.
  for (HttpServer *server : {api_.get(), admin_.get()}) {
    if (server == nullptr) continue;
    if (const int rc = server->accept_start(); rc != 0) {
      spdlog::error("listener '{}': cannot accept: {}", server->config().name, uv_strerror(rc));
    }
  }
  notify_->watch();
}

}  // namespace cg
