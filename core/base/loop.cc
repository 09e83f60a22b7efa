#include "base/loop.h"

#include <chatgate/common.h>
#include <chatgate/host.h>

#include <utility>

namespace cg {

struct Loop::Timer {
  uv_timer_t handle{};
  Loop *owner = nullptr;
  uint64_t id = 0;
  LoopTimerFn fn = nullptr;
  void *arg = nullptr;
};

namespace {}  // namespace

struct Loop::Work {
  uv_work_t req{};
  Loop *owner = nullptr;
  LoopFn work;
  LoopWorkDoneFn done;
  void *arg;
};

namespace {

void free_timer_handle(uv_handle_t *h) {
  // Owned here once it left the map: see timer_stop().
  std::unique_ptr<Loop::Timer> owned(static_cast<Loop::Timer *>(h->data));
}

}  // namespace

Loop::Loop(uv_loop_t *loop) : loop_(loop) {
  uv_async_init(loop_, &async_, &Loop::on_async);
  async_.data = this;
  uv_check_init(loop_, &check_);
  check_.data = this;
  uv_check_start(&check_, &Loop::on_check);
  // The check handle must not keep the loop alive on its own.
  uv_unref(reinterpret_cast<uv_handle_t *>(&check_));
  uv_idle_init(loop_, &idle_);
  idle_.data = this;
}

Loop::~Loop() = default;

int Loop::post(LoopFn fn, void *arg) {
  // Sent under the lock: close() flips post_closed_ under it before closing
  // async_, so no thread can send to a closing handle.
  std::lock_guard lock(post_mutex_);
  if (post_closed_) return CG_ECLOSED;
  posted_.push_back({fn, arg});
  uv_async_send(&async_);
  return 0;
}

void Loop::on_async(uv_async_t *h) {
  auto *self = static_cast<Loop *>(h->data);
  std::vector<Task> batch;
  {
    std::lock_guard lock(self->post_mutex_);
    batch.swap(self->posted_);
  }
  for (const Task &t : batch) t.fn(t.arg);
}

int Loop::defer(LoopFn fn, void *arg) {
  // Once close() has drained the queue, the check handle that runs it is
  // gone. Tasks deferred during that last drain still run.
  if (defer_closed_) return CG_ECLOSED;
  deferred_.push_back({fn, arg});
  if (!idle_active_) {
    // An active idle handle makes the next poll non-blocking, so the check
    // callback runs promptly.
    uv_idle_start(&idle_, [](uv_idle_t *) {});
    idle_active_ = true;
  }
  return 0;
}

void Loop::on_check(uv_check_t *h) { static_cast<Loop *>(h->data)->run_deferred(); }

void Loop::run_deferred() {
  if (deferred_.empty()) {
    if (idle_active_) {
      uv_idle_stop(&idle_);
      idle_active_ = false;
    }
    return;
  }
  running_.swap(deferred_);
  for (const Task &t : running_) t.fn(t.arg);
  running_.clear();
  if (deferred_.empty() && idle_active_) {
    uv_idle_stop(&idle_);
    idle_active_ = false;
  }
}

int Loop::timer_start(uint64_t timeout_ms, uint64_t repeat_ms, LoopTimerFn fn, void *arg,
                      uint64_t *timer_id) {
  if (closing_) return CG_ECLOSED;
  if (fn == nullptr) return CG_EINVAL;
  auto t = std::make_unique<Timer>();
  t->owner = this;
  t->id = next_timer_id_++;
  t->fn = fn;
  t->arg = arg;
  uv_timer_init(loop_, &t->handle);
  t->handle.data = t.get();
  uv_timer_start(&t->handle, &Loop::on_timer, timeout_ms, repeat_ms);
  if (timer_id != nullptr) *timer_id = t->id;
  timers_.emplace(t->id, std::move(t));
  return 0;
}

void Loop::on_timer(uv_timer_t *h) {
  auto *t = static_cast<Timer *>(h->data);
  Loop *self = t->owner;
  const uint64_t id = t->id;
  const bool one_shot = uv_timer_get_repeat(h) == 0;
  t->fn(t->arg, id);
  // The callback may have stopped its own timer; only then is it gone.
  if (one_shot) self->timer_stop(id);
}

int Loop::timer_stop(uint64_t timer_id) {
  auto it = timers_.find(timer_id);
  if (it == timers_.end()) return CG_ENOENT;
  Timer *t = it->second.release();
  timers_.erase(it);
  uv_timer_stop(&t->handle);
  uv_close(reinterpret_cast<uv_handle_t *>(&t->handle), free_timer_handle);
  return 0;
}

int Loop::queue_work(LoopFn work, LoopWorkDoneFn done, void *arg) {
  if (closing_) return CG_ECLOSED;
  auto w = std::make_unique<Work>();
  w->owner = this;
  w->work = work;
  w->done = done;
  w->arg = arg;
  w->req.data = w.get();
  const int rc = uv_queue_work(
      loop_, &w->req,
      [](uv_work_t *req) {
        auto *w = static_cast<Work *>(req->data);
        w->work(w->arg);
      },
      [](uv_work_t *req, int status) {
        std::unique_ptr<Work> w(static_cast<Work *>(req->data));
        w->owner->work_.erase(w.get());
        w->done(w->arg, status == UV_ECANCELED ? CG_ECANCELED : 0);
      });
  if (rc != 0) return CG_EIO;
  work_.insert(w.release());  // owned by the after-work callback now
  return 0;
}

struct Loop::FdWatch {
  uv_poll_t handle{};
  uint64_t id = 0;
  int fd = -1;
  FdFn fn = nullptr;
  void *arg = nullptr;
  uint32_t events = 0;
};

namespace {

int uv_events_of(uint32_t events) {
  return ((events & CG_FD_READABLE) ? UV_READABLE : 0) |
         ((events & CG_FD_WRITABLE) ? UV_WRITABLE : 0);
}

void free_watch_handle(uv_handle_t *h) {
  std::unique_ptr<Loop::FdWatch> owned(static_cast<Loop::FdWatch *>(h->data));
}

void on_fd_ready(uv_poll_t *h, int status, int events) {
  auto *w = static_cast<Loop::FdWatch *>(h->data);
  uint32_t ready = 0;
  if (events & UV_READABLE) ready |= CG_FD_READABLE;
  if (events & UV_WRITABLE) ready |= CG_FD_WRITABLE;
  w->fn(w->arg, status < 0 ? CG_EIO : 0, ready);
}

}  // namespace

int Loop::fd_watch_start(int fd, uint32_t events, FdFn fn, void *arg, uint64_t *watch_id) {
  if (closing_) return CG_ECLOSED;
  if (fd < 0 || fn == nullptr || (events & (CG_FD_READABLE | CG_FD_WRITABLE)) == 0) {
    return CG_EINVAL;
  }
  if (watched_fds_.count(fd) != 0) return CG_EEXIST;
  auto w = std::make_unique<FdWatch>();
  w->id = next_watch_id_++;
  w->fd = fd;
  w->fn = fn;
  w->arg = arg;
  w->events = events;
  if (uv_poll_init(loop_, &w->handle, fd) != 0) return CG_EINVAL;
  w->handle.data = w.get();
  uv_poll_start(&w->handle, uv_events_of(events), on_fd_ready);
  if (watch_id != nullptr) *watch_id = w->id;
  watched_fds_.insert(fd);
  watches_.emplace(w->id, std::move(w));
  return 0;
}

int Loop::fd_watch_update(uint64_t watch_id, uint32_t events) {
  auto it = watches_.find(watch_id);
  if (it == watches_.end()) return CG_ENOENT;
  FdWatch *w = it->second.get();
  w->events = events;
  if ((events & (CG_FD_READABLE | CG_FD_WRITABLE)) == 0) {
    uv_poll_stop(&w->handle);
  } else {
    uv_poll_start(&w->handle, uv_events_of(events), on_fd_ready);
  }
  return 0;
}

int Loop::fd_watch_stop(uint64_t watch_id) {
  auto it = watches_.find(watch_id);
  if (it == watches_.end()) return CG_ENOENT;
  FdWatch *w = it->second.release();
  watches_.erase(it);
  watched_fds_.erase(w->fd);
  uv_poll_stop(&w->handle);
  uv_close(reinterpret_cast<uv_handle_t *>(&w->handle), free_watch_handle);
  return 0;
}

void Loop::close() {
  if (closing_) return;
  closing_ = true;
  std::vector<uint64_t> ids;
  ids.reserve(timers_.size());
  for (const auto &[id, t] : timers_) ids.push_back(id);
  for (uint64_t id : ids) timer_stop(id);
  // Watches a plugin forgot to stop: their callbacks never run again.
  ids.clear();
  for (const auto &[id, w] : watches_) ids.push_back(id);
  for (uint64_t id : ids) fd_watch_stop(id);
  // Work not yet picked up by a pool thread completes with CG_ECANCELED;
  // work already running finishes and completes normally.
  for (Work *w : work_) uv_cancel(reinterpret_cast<uv_req_t *>(&w->req));
  {
    std::lock_guard lock(post_mutex_);
    post_closed_ = true;
  }
  // Run what was posted or deferred before the handles go.
  on_async(&async_);
  while (!deferred_.empty()) run_deferred();
  defer_closed_ = true;
  uv_close(reinterpret_cast<uv_handle_t *>(&async_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t *>(&check_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t *>(&idle_), nullptr);
}

}  // namespace cg
