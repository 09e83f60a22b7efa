// The loop thread's scheduling services: post (from any thread), defer (next
// turn, no syscall), timers by id, and thread-pool work. They back the
// plugin host API and the core alike.
//
// THREAD: not thread-safe, except Loop::post.
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace cg {

using LoopFn = void (*)(void *arg);
using LoopTimerFn = void (*)(void *arg, uint64_t timer_id);
using LoopWorkDoneFn = void (*)(void *arg, int status);

class Loop {
 public:
  explicit Loop(uv_loop_t *loop);
  ~Loop();
  Loop(const Loop &) = delete;
  Loop &operator=(const Loop &) = delete;

  uv_loop_t *uv() const { return loop_; }
  uint64_t now_ms() const { return uv_now(loop_); }

  // Runs fn(arg) on the loop thread. THREAD: any. Returns CG_ECLOSED after
  // close() began (fn is then never called).
  int post(LoopFn fn, void *arg);
  // Runs fn(arg) on the next loop turn. Tasks deferred while the queue runs
  // wait for the turn after, so a task that re-defers cannot starve I/O.
  // CG_ECLOSED once close() has run the deferred queue for the last time
  // (fn is then never called).
  int defer(LoopFn fn, void *arg);
  // Timers by id: stop is safe after the timer fired (returns CG_ENOENT).
  int timer_start(uint64_t timeout_ms, uint64_t repeat_ms, LoopTimerFn fn, void *arg,
                  uint64_t *timer_id);
  int timer_stop(uint64_t timer_id);
  // work(arg) on the thread pool, then done(arg, 0 | CG_ECANCELED) here.
  int queue_work(LoopFn work, LoopWorkDoneFn done, void *arg);

  // Readiness of a descriptor someone else reads and writes (a plugin's
  // client library), by id. events: CG_FD_*; status 0 or CG_EIO.
  using FdFn = void (*)(void *arg, int status, uint32_t events);
  int fd_watch_start(int fd, uint32_t events, FdFn fn, void *arg, uint64_t *watch_id);
  int fd_watch_update(uint64_t watch_id, uint32_t events);
  int fd_watch_stop(uint64_t watch_id);

  size_t active_timers() const { return timers_.size(); }

  // Stops every timer (their callbacks never run), cancels queued work that
  // has not started (its done gets CG_ECANCELED), refuses new posts and
  // closes the loop's own handles. Pending deferred and posted tasks still
  // run first, so every started completion fires.
  void close();

  struct Timer;    // internal; public only so the close callback can free it
  struct Work;     // internal, likewise
  struct FdWatch;  // internal, likewise

 private:
  struct Task {
    LoopFn fn;
    void *arg;
  };
  static void on_async(uv_async_t *h);
  static void on_check(uv_check_t *h);
  static void on_timer(uv_timer_t *h);
  void run_deferred();

  uv_loop_t *loop_;
  uv_async_t async_{};
  uv_check_t check_{};
  uv_idle_t idle_{};
  bool idle_active_ = false;
  bool closing_ = false;
  bool defer_closed_ = false;  // close() drained the deferred queue for the last time
  std::vector<Task> deferred_, running_;
  std::mutex post_mutex_;
  std::vector<Task> posted_;  // guarded by post_mutex_
  bool post_closed_ = false;  // guarded by post_mutex_
  uint64_t next_timer_id_ = 1;
  std::unordered_map<uint64_t, std::unique_ptr<Timer>> timers_;
  std::unordered_set<Work *> work_;  // queued or running; owned by their callbacks
  uint64_t next_watch_id_ = 1;
  std::unordered_map<uint64_t, std::unique_ptr<FdWatch>> watches_;
  std::unordered_set<int> watched_fds_;
};

}  // namespace cg
