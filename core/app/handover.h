// Handing this process's work to a new chatgate process, as nginx's binary
// upgrade does: the new process inherits the listening sockets (so no
// connection is refused meanwhile), starts beside this one, and says when it
// is ready; only then does this one stop accepting and drain. A binary
// upgrade (SIGUSR2) and a config change the running process cannot apply
// (SIGHUP, the admin page's reload) both come here.
//
// The steps, all on the loop thread, none blocking it:
//   1. `EXE --check-config ARGS...`: the new binary validates the config
//      in full (plugins loaded, their init run; no port opened). A failure
//      ends here with its own error line, and nothing was started.
//   2. `EXE ARGS...` with the sockets as descriptors 4.. (named in
//      CHATGATE_LISTEN_FDS, read by inherited_sockets.cc), the write end
//      of a pipe as descriptor 3 (CHATGATE_READY_FD), on which it writes
//      "READY\n" once it serves (app.cc), and the read end of another, which
//      holds the state this process passes on (CHATGATE_STATE_FD).
//   3. done(pid, "") when that line came; done(0, why) if the process
//      exited first, closed the pipe, or was not ready within the timeout
//      (it is then sent SIGTERM).
//
// THREAD: not thread-safe; loop thread only.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace cg {

class Loop;

class Handover {
 public:
  struct Socket {
    std::string name;  // the listener's ("api", "admin")
    int fd = -1;       // borrowed: stays the caller's
  };
  // pid > 0: the new process is ready and serving; else pid is 0 and
  // `error` says why there is none (one line, no secrets: it is what the
  // new process printed, or how it ended).
  using Done = std::function<void(int pid, std::string error)>;

  Handover(Loop &loop, uint64_t ready_timeout_ms);
  ~Handover();
  Handover(const Handover &) = delete;
  Handover &operator=(const Handover &) = delete;

  // Starts the steps above. Returns 0, then done fires exactly once on a
  // later loop turn, or a negative libuv error (UV_EBUSY while a handover
  // runs) and done never fires. The descriptors must stay open until done.
  // `state()` is asked for just before step 2 starts the new process: text
  // it reads once from a pipe (CHATGATE_STATE_FD) at start, such as the
  // admin page's sessions. Up to 60 KiB (a pipe's buffer: written whole
  // before the process starts, so nobody waits); more is not passed.
  int start(const std::string &exe, const std::vector<std::string> &args,
            const std::vector<Socket> &sockets, std::function<std::string()> state, Done done);
  bool busy() const { return static_cast<bool>(done_); }
  // Whether the last failure was step 1's: the new binary refused the
  // config (a config error, not a failed start).
  bool check_failed() const { return check_failed_; }
  // Stops a handover under way (this process is shutting down): the new
  // process is sent SIGTERM; done fires with "cancelled".
  void cancel();
  // Closes every handle; call before the loop's last run. The process
  // that took over is not touched: it only stops being watched.
  void close();

  struct Child;  // internal; public only for the libuv callbacks

 private:
  int spawn(bool check, std::unique_ptr<Child> *out);
  void heard(Child &c);   // the pipe gave data or its end
  void exited(Child &c);  // the process ended
  void check_finished(Child &c);
  void failed(const std::string &why);
  void abandon(std::unique_ptr<Child> c);
  void finish(int pid, std::string error);
  static void on_timeout(void *arg, uint64_t timer_id);

  Loop &loop_;
  uint64_t ready_timeout_ms_;
  std::string exe_;
  std::vector<std::string> args_;
  std::vector<Socket> sockets_;
  std::function<std::string()> state_;
  Done done_;
  std::unique_ptr<Child> check_;
  std::unique_ptr<Child> next_;
  std::vector<std::unique_ptr<Child>> dying_;  // abandoned, until they exit
  uint64_t timer_id_ = 0;
  bool check_failed_ = false;
};

}  // namespace cg
