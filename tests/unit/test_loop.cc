// Loop: defer, post from other threads, timers, thread-pool work, and close
// (queued work that never started completes with CG_ECANCELED).
#include <chatgate/common.h>
#include <chatgate/host.h>
#include <unistd.h>
#include <uv.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <thread>
#include <vector>

#include "base/loop.h"
#include "unit_support.h"

using cg::Loop;

namespace {

struct UvLoop {
  uv_loop_t uv{};
  UvLoop() { uv_loop_init(&uv); }
  ~UvLoop() {
    uv_run(&uv, UV_RUN_DEFAULT);
    REQUIRE(uv_loop_close(&uv) == 0);
  }
};

}  // namespace

TEST_CASE("loop: deferred tasks run on the next turn, in order", "[loop]") {
  UvLoop u;
  Loop loop(&u.uv);
  std::vector<int> order;
  auto push = [](void *arg) { static_cast<std::vector<int> *>(arg)->push_back(1); };
  auto push2 = [](void *arg) { static_cast<std::vector<int> *>(arg)->push_back(2); };
  REQUIRE(loop.defer(push, &order) == 0);
  REQUIRE(loop.defer(push2, &order) == 0);
  CHECK(order.empty());  // never inside defer
  uv_run(&u.uv, UV_RUN_NOWAIT);
  CHECK(order == std::vector<int>{1, 2});
  loop.close();
}

TEST_CASE("loop: post from many threads runs every task once on the loop thread", "[loop]") {
  UvLoop u;
  Loop loop(&u.uv);
  struct State {
    std::thread::id loop_thread = std::this_thread::get_id();
    int runs = 0;
    bool wrong_thread = false;
  } state;
  constexpr int kThreads = 4, kPerThread = 250;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&] {
      for (int i = 0; i < kPerThread; i++) {
        REQUIRE(loop.post(
                    [](void *arg) {
                      auto *s = static_cast<State *>(arg);
                      s->runs++;
                      if (std::this_thread::get_id() != s->loop_thread) s->wrong_thread = true;
                    },
                    &state) == 0);
      }
    });
  }
  for (auto &t : threads) t.join();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (state.runs < kThreads * kPerThread && std::chrono::steady_clock::now() < deadline) {
    uv_run(&u.uv, UV_RUN_ONCE);
  }
  CHECK(state.runs == kThreads * kPerThread);
  CHECK_FALSE(state.wrong_thread);
  loop.close();
  CHECK(loop.post([](void *) {}, nullptr) == CG_ECLOSED);
}

TEST_CASE("loop: a one-shot timer fires once; stop after firing is ENOENT", "[loop]") {
  UvLoop u;
  Loop loop(&u.uv);
  int fired = 0;
  uint64_t id = 0;
  REQUIRE(loop.timer_start(
              5, 0, [](void *arg, uint64_t) { ++*static_cast<int *>(arg); }, &fired, &id) == 0);
  CHECK(loop.active_timers() == 1);
  // The loop's own async handle keeps uv_run busy, so run turn by turn.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (fired == 0 && std::chrono::steady_clock::now() < deadline) uv_run(&u.uv, UV_RUN_ONCE);
  uv_run(&u.uv, UV_RUN_NOWAIT);
  CHECK(fired == 1);
  CHECK(loop.active_timers() == 0);
  CHECK(loop.timer_stop(id) == CG_ENOENT);
  loop.close();
}

TEST_CASE("loop: close cancels queued work that has not started", "[loop]") {
  UvLoop u;
  Loop loop(&u.uv);
  // Occupy every pool thread, so the extra item waits in the queue.
  static std::atomic<bool> release{false};
  static std::atomic<int> running{0};
  release = false;
  running = 0;
  constexpr int kPool = cg_test::kThreadPoolSize;  // set by main.cc
  struct Result {
    int done = 0;
    int cancelled = 0;
  } result;
  auto block = [](void *) {
    running++;
    while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  };
  auto done = [](void *arg, int status) {
    auto *r = static_cast<Result *>(arg);
    if (status == CG_ECANCELED) {
      r->cancelled++;
    } else {
      r->done++;
    }
  };
  for (int i = 0; i < kPool; i++) REQUIRE(loop.queue_work(block, done, &result) == 0);
  while (running < kPool) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  REQUIRE(loop.queue_work([](void *) {}, done, &result) == 0);
  loop.close();
  CHECK(loop.queue_work([](void *) {}, done, &result) == CG_ECLOSED);
  release = true;
  uv_run(&u.uv, UV_RUN_DEFAULT);
  CHECK(result.done == kPool);
  CHECK(result.cancelled == 1);
}

TEST_CASE("loop: tasks deferred during close still run; after close defer is refused", "[loop]") {
  UvLoop u;
  Loop loop(&u.uv);
  struct State {
    Loop *loop;
    int runs = 0;
  } state{&loop};
  // A task that defers another while close() drains the queue.
  REQUIRE(loop.defer(
              [](void *arg) {
                auto *s = static_cast<State *>(arg);
                s->runs++;
                REQUIRE(s->loop->defer([](void *a) { static_cast<State *>(a)->runs++; }, s) == 0);
              },
              &state) == 0);
  loop.close();
  CHECK(state.runs == 2);
  CHECK(loop.defer([](void *) {}, nullptr) == CG_ECLOSED);
}

TEST_CASE("loop: fd watches report readiness until stopped", "[loop]") {
  UvLoop u;
  Loop loop(&u.uv);
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  struct State {
    int calls = 0;
    uint32_t events = 0;
  } state;
  auto fn = [](void *arg, int status, uint32_t events) {
    auto *s = static_cast<State *>(arg);
    if (status == 0) s->events |= events;
    s->calls++;
  };
  uint64_t id = 0;
  REQUIRE(loop.fd_watch_start(fds[0], CG_FD_READABLE, fn, &state, &id) == 0);
  CHECK(loop.fd_watch_start(fds[0], CG_FD_READABLE, fn, &state, nullptr) == CG_EEXIST);
  CHECK(loop.fd_watch_start(fds[1], 0, fn, &state, nullptr) == CG_EINVAL);
  uv_run(&u.uv, UV_RUN_NOWAIT);
  CHECK(state.calls == 0);  // nothing to read yet
  REQUIRE(::write(fds[1], "x", 1) == 1);
  for (int i = 0; i < 100 && state.calls == 0; i++) uv_run(&u.uv, UV_RUN_ONCE);
  CHECK(state.events == CG_FD_READABLE);
  REQUIRE(loop.fd_watch_update(id, 0) == 0);  // paused: no more calls though still readable
  const int seen = state.calls;
  uv_run(&u.uv, UV_RUN_NOWAIT);
  CHECK(state.calls == seen);
  CHECK(loop.fd_watch_stop(id) == 0);
  CHECK(loop.fd_watch_stop(id) == CG_ENOENT);
  loop.close();
  uv_run(&u.uv, UV_RUN_DEFAULT);
  ::close(fds[0]);
  ::close(fds[1]);
}
