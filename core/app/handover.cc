#include "app/handover.h"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <csignal>
#include <cstring>
#include <string_view>
#include <utility>

#include "base/loop.h"

extern char **environ;  // NOLINT: POSIX's, declared by no header under C++

namespace cg {
namespace {

constexpr size_t kMaxOutput = size_t{16} * 1024;  // of the check's stderr, for its error line
constexpr int kReadyFd = 3;
constexpr uint64_t kKillAfterMs = 15000;         // an abandoned process's SIGTERM, then SIGKILL
constexpr uint64_t kExitGraceMs = 2000;          // after the ready pipe ends, for the exit status
constexpr size_t kMaxState = size_t{60} * 1024;  // below a pipe's 64 KiB: written without waiting

// The environment the new process gets: ours, without the variables that
// described our own start (the sockets' are written fresh here).
std::vector<std::string> child_environment(const std::vector<Handover::Socket> &sockets,
                                           bool with_sockets, int state_fd) {
  std::vector<std::string> env;
  for (char **e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string_view v = *e;
    // WATCHDOG_PID names this process: left, it would turn the new one's
    // watchdog pings off (sd_watchdog_enabled(3)).
    if (v.starts_with("LISTEN_") || v.starts_with("CHATGATE_LISTEN_FDS=") ||
        v.starts_with("CHATGATE_READY_FD=") || v.starts_with("CHATGATE_STATE_FD=") ||
        v.starts_with("WATCHDOG_PID=")) {
      continue;
    }
    env.emplace_back(v);
  }
  if (with_sockets) {
    std::string fds;
    for (size_t i = 0; i < sockets.size(); i++) {
      fds += fmt::format("{}{}={}", i == 0 ? "" : ",", sockets[i].name, kReadyFd + 1 + i);
    }
    env.push_back("CHATGATE_LISTEN_FDS=" + fds);
    env.push_back(fmt::format("CHATGATE_READY_FD={}", kReadyFd));
    if (state_fd >= 0) env.push_back(fmt::format("CHATGATE_STATE_FD={}", state_fd));
  }
  return env;
}

std::string ended_how(int64_t status, int signal) {
  if (signal != 0) return fmt::format("was killed by signal {} ({})", signal, strsignal(signal));
  return fmt::format("exited with status {}", status);
}

// The last non-empty line of what a process printed: its error.
std::string last_line(std::string_view text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) {
    text.remove_suffix(1);
  }
  const size_t nl = text.rfind('\n');
  return std::string(nl == std::string_view::npos ? text : text.substr(nl + 1));
}

}  // namespace

// One spawned process and the pipe we read from it. Freed when both of its
// handles have closed (close_child), not before: libuv holds them.
struct Handover::Child {
  Handover *owner = nullptr;
  bool check = false;  // step 1, else step 2
  uv_process_t proc{};
  uv_pipe_t pipe{};
  int open_handles = 0;
  bool exited = false, eof = false, is_ready = false;
  bool abandoned = false;   // given up on: only its exit is awaited
  uint64_t kill_timer = 0;  // abandoned: SIGKILL if it has not exited by then
  int64_t status = 0;
  int signal = 0;
  std::string out;
  char buf[512];
};

namespace {

void close_child(std::unique_ptr<Handover::Child> child) {
  if (!child) return;
  Handover::Child *c = child.release();  // the close callbacks own it now
  c->owner = nullptr;
  auto on_closed = [](uv_handle_t *h) {
    auto *cc = static_cast<Handover::Child *>(h->data);
    if (--cc->open_handles == 0) std::unique_ptr<Handover::Child>{cc};
  };
  bool any = false;
  for (uv_handle_t *h :
       {reinterpret_cast<uv_handle_t *>(&c->pipe), reinterpret_cast<uv_handle_t *>(&c->proc)}) {
    if (h->data == nullptr || uv_is_closing(h)) continue;
    uv_close(h, on_closed);
    any = true;
  }
  if (!any && c->open_handles == 0) std::unique_ptr<Handover::Child>{c};
}

// Marks every descriptor from 3 up close-on-exec. Libraries open theirs
// without it (hiredis's and libcurl's sockets, spdlog's log file): passed
// on, the new process would hold them for as long as it runs, and each
// handover would add a generation (Redis clients of dead processes, log
// files deleted by rotation and never freed). What a process is meant to
// get, uv_spawn maps in by its stdio table.
void cloexec_from_3() {
  if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) == 0) return;
  DIR *dir = opendir("/proc/self/fd");  // kernels before 5.11
  if (dir == nullptr) return;
  const int own = dirfd(dir);
  while (const dirent *e = readdir(dir)) {
    int fd = -1;
    const std::string_view name = e->d_name;
    if (std::from_chars(name.data(), name.data() + name.size(), fd).ec != std::errc() || fd < 3 ||
        fd == own) {
      continue;
    }
    fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | FD_CLOEXEC);
  }
  closedir(dir);
}

void alloc_cb(uv_handle_t *h, size_t, uv_buf_t *b) {
  auto *c = static_cast<Handover::Child *>(h->data);
  *b = uv_buf_init(c->buf, sizeof c->buf);
}

}  // namespace

Handover::Handover(Loop &loop, uint64_t ready_timeout_ms)
    : loop_(loop), ready_timeout_ms_(ready_timeout_ms) {}

Handover::~Handover() { close(); }

int Handover::start(const std::string &exe, const std::vector<std::string> &args,
                    const std::vector<Socket> &sockets, std::function<std::string()> state,
                    Done done) {
  if (busy()) return UV_EBUSY;
  check_failed_ = false;
  exe_ = exe;
  args_ = args;
  sockets_ = sockets;
  state_ = std::move(state);
  std::unique_ptr<Child> check;
  if (const int rc = spawn(true, &check); rc != 0) return rc;
  check_ = std::move(check);
  done_ = std::move(done);
  loop_.timer_start(ready_timeout_ms_, 0, &Handover::on_timeout, this, &timer_id_);
  return 0;
}

// Step 1 (check): EXE --check-config ARGS..., its stderr read for the error
// line. Step 2: EXE ARGS... with stdin/out/err shared, the ready pipe as
// descriptor 3 and the sockets after it.
int Handover::spawn(bool check, std::unique_ptr<Child> *out) {
  auto child = std::make_unique<Child>();
  child->owner = this;
  child->check = check;
  std::vector<std::string> argv_s{exe_};
  if (check) argv_s.emplace_back("--check-config");
  argv_s.insert(argv_s.end(), args_.begin(), args_.end());
  std::vector<char *> argv;
  argv.reserve(argv_s.size() + 1);
  for (std::string &a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  // The state pipe: written whole and its write end closed before the
  // process starts, so its reader finds the text and the end at once.
  int state_pipe[2] = {-1, -1};
  if (!check && state_) {
    const std::string text = state_();
    // Non-blocking: a pipe made while the user's pipe quota is spent holds
    // one page only, and a blocking write there would wait for ever.
    if (!text.empty() && text.size() <= kMaxState &&
        pipe2(state_pipe, O_CLOEXEC | O_NONBLOCK) == 0) {
      const ssize_t n = ::write(state_pipe[1], text.data(), text.size());
      ::close(state_pipe[1]);
      if (n != static_cast<ssize_t>(text.size())) {
        spdlog::warn(
            "handover: cannot pass the admin state on ({}); the new process starts "
            "without it",
            n < 0 ? std::strerror(errno) : "short write");
        ::close(state_pipe[0]);
        state_pipe[0] = -1;
      }
    }
  }
  const int state_at = state_pipe[0] < 0 ? -1 : kReadyFd + 1 + static_cast<int>(sockets_.size());
  std::vector<std::string> env_s = child_environment(sockets_, !check, state_at);
  std::vector<char *> env;
  env.reserve(env_s.size() + 1);
  for (std::string &e : env_s) env.push_back(e.data());
  env.push_back(nullptr);

  uv_pipe_init(loop_.uv(), &child->pipe, 0);
  child->pipe.data = child.get();
  child->open_handles++;
  const auto piped = static_cast<uv_stdio_flags>(UV_CREATE_PIPE | UV_WRITABLE_PIPE);
  std::vector<uv_stdio_container_t> stdio(
      check ? 3 : kReadyFd + 1 + sockets_.size() + (state_at >= 0 ? 1 : 0));
  for (size_t i = 0; i < 3; i++) {
    stdio[i].flags = check ? UV_IGNORE : UV_INHERIT_FD;
    stdio[i].data.fd = static_cast<int>(i);
  }
  const size_t pipe_at = check ? 2 : kReadyFd;
  stdio[pipe_at].flags = piped;
  stdio[pipe_at].data.stream = reinterpret_cast<uv_stream_t *>(&child->pipe);
  for (size_t i = 0; !check && i < sockets_.size(); i++) {
    stdio[kReadyFd + 1 + i].flags = UV_INHERIT_FD;
    stdio[kReadyFd + 1 + i].data.fd = sockets_[i].fd;
  }
  if (state_at >= 0) {
    stdio[static_cast<size_t>(state_at)].flags = UV_INHERIT_FD;
    stdio[static_cast<size_t>(state_at)].data.fd = state_pipe[0];
  }
  uv_process_options_t opts{};
  opts.file = exe_.c_str();
  opts.args = argv.data();
  opts.env = env.data();
  opts.stdio_count = static_cast<int>(stdio.size());
  opts.stdio = stdio.data();
  opts.exit_cb = [](uv_process_t *p, int64_t status, int signal) {
    auto *c = static_cast<Child *>(p->data);
    c->exited = true;
    c->status = status;
    c->signal = signal;
    if (c->owner != nullptr) c->owner->exited(*c);
  };
  child->proc.data = child.get();
  cloexec_from_3();
  const int spawned = uv_spawn(loop_.uv(), &child->proc, &opts);
  if (state_pipe[0] >= 0) ::close(state_pipe[0]);  // the new process has its own copy
  if (const int rc = spawned; rc != 0) {
    // Never started, yet libuv wants the handle closed all the same.
    child->open_handles++;
    close_child(std::move(child));
    return rc;
  }
  child->open_handles++;
  uv_read_start(reinterpret_cast<uv_stream_t *>(&child->pipe), alloc_cb,
                [](uv_stream_t *s, ssize_t n, const uv_buf_t *) {
                  auto *c = static_cast<Child *>(s->data);
                  if (n > 0) {
                    if (c->out.size() < kMaxOutput) c->out.append(c->buf, static_cast<size_t>(n));
                  } else if (n < 0) {
                    uv_read_stop(s);
                    c->eof = true;
                  }
                  if (n != 0 && c->owner != nullptr) c->owner->heard(*c);
                });
  *out = std::move(child);
  return 0;
}

void Handover::heard(Child &c) {
  if (c.abandoned) return;
  if (c.check) {
    if (c.eof && c.exited) check_finished(c);
    return;
  }
  if (c.is_ready) return;
  if (c.out.find("READY\n") != std::string::npos) {
    c.is_ready = true;
    uv_read_stop(reinterpret_cast<uv_stream_t *>(&c.pipe));
    finish(c.proc.pid, {});
  } else if (c.eof && c.exited) {
    exited(c);
  } else if (c.eof) {
    // Most often the process is exiting: its status says more than the
    // pipe's end, so it gets a moment to come.
    if (timer_id_ != 0) loop_.timer_stop(timer_id_);
    loop_.timer_start(kExitGraceMs, 0, &Handover::on_timeout, this, &timer_id_);
  }
}

void Handover::exited(Child &c) {
  if (c.abandoned) {
    if (c.kill_timer != 0) loop_.timer_stop(c.kill_timer);
    c.kill_timer = 0;
    auto it =
        std::find_if(dying_.begin(), dying_.end(), [&c](const auto &d) { return d.get() == &c; });
    if (it != dying_.end()) {
      close_child(std::move(*it));
      dying_.erase(it);
    }
    return;
  }
  if (c.check) {
    if (c.eof) check_finished(c);
    return;
  }
  const std::string how = ended_how(c.status, c.signal);
  if (!c.is_ready) {
    failed(fmt::format("the new process (pid {}) {} before it was ready", c.proc.pid, how));
    return;
  }
  spdlog::warn("the process that took over (pid {}) {}", c.proc.pid, how);
  close_child(std::move(next_));
}

void Handover::check_finished(Child &c) {
  const bool ok = c.status == 0 && c.signal == 0;
  const std::string why = last_line(c.out);
  const std::string how = ended_how(c.status, c.signal);
  close_child(std::move(check_));
  if (!ok) {
    check_failed_ = true;
    failed(fmt::format("'{} --check-config' {}: {}", exe_, how,
                       why.empty() ? std::string("(it printed nothing)") : why));
    return;
  }
  std::unique_ptr<Child> next;
  if (const int rc = spawn(false, &next); rc != 0) {
    failed(fmt::format("cannot start {}: {}", exe_, uv_strerror(rc)));
    return;
  }
  next_ = std::move(next);
}

void Handover::failed(const std::string &why) {
  abandon(std::move(next_));
  abandon(std::move(check_));
  finish(0, why);
}

// A process given up on is sent SIGTERM and watched until it exits, so that
// it is reaped rather than left a zombie for as long as this process runs.
void Handover::abandon(std::unique_ptr<Child> c) {
  if (!c) return;
  if (c->exited) {
    close_child(std::move(c));
    return;
  }
  c->abandoned = true;
  uv_read_stop(reinterpret_cast<uv_stream_t *>(&c->pipe));
  uv_process_kill(&c->proc, SIGTERM);
  // One whose loop is stuck would hold the inherited sockets, accepting
  // nothing, after this process is gone: SIGKILL once its shutdown has had
  // the time a healthy one needs.
  loop_.timer_start(
      kKillAfterMs, 0,
      [](void *arg, uint64_t) {
        auto *child = static_cast<Child *>(arg);
        child->kill_timer = 0;
        if (!child->exited) uv_process_kill(&child->proc, SIGKILL);
      },
      c.get(), &c->kill_timer);
  dying_.push_back(std::move(c));
}

void Handover::finish(int pid, std::string error) {
  if (timer_id_ != 0) loop_.timer_stop(timer_id_);
  timer_id_ = 0;
  Done done = std::exchange(done_, nullptr);
  if (done) done(pid, std::move(error));
}

void Handover::on_timeout(void *arg, uint64_t) {
  auto *self = static_cast<Handover *>(arg);
  self->timer_id_ = 0;
  if (self->next_ && self->next_->eof) {
    self->failed(
        fmt::format("the new process (pid {}) closed its ready pipe before it was ready "
                    "(sent SIGTERM)",
                    self->next_->proc.pid));
    return;
  }
  if (self->check_) {
    self->failed(fmt::format("'{} --check-config' did not finish within {} ms (sent SIGTERM)",
                             self->exe_, self->ready_timeout_ms_));
    return;
  }
  self->failed(fmt::format("the new process was not ready within {} ms (sent SIGTERM)",
                           self->ready_timeout_ms_));
}

void Handover::cancel() {
  if (busy()) failed("cancelled: this process is shutting down");
}

void Handover::close() {
  if (timer_id_ != 0) loop_.timer_stop(timer_id_);
  timer_id_ = 0;
  done_ = nullptr;
  close_child(std::move(check_));
  close_child(std::move(next_));
  for (auto &c : dying_) {
    if (c->kill_timer != 0) loop_.timer_stop(c->kill_timer);
    close_child(std::move(c));
  }
  dying_.clear();
}

}  // namespace cg
