// Unit tests for core/base/log_throttle.cc: one line per interval per
// cause, the count of what was held back, and a bounded cause table.
#include <uv.h>

#include <catch2/catch.hpp>
#include <string>
#include <tuple>
#include <vector>

#include "base/log_throttle.h"
#include "base/loop.h"

TEST_CASE("log throttle: one line per second per cause, with the held-back count") {
  cg::LogThrottle t(1000);
  uint64_t held = 99;
  CHECK(t.admit("queue_full", 10'000, &held));
  CHECK(held == 0);
  for (int i = 0; i < 5; i++) CHECK_FALSE(t.admit("queue_full", 10'000 + 100 * i, &held));
  // Another cause is not held by the first.
  CHECK(t.admit("model_failed", 10'500, &held));
  CHECK(held == 0);
  CHECK_FALSE(t.admit("queue_full", 10'999, &held));
  CHECK(t.admit("queue_full", 11'000, &held));
  CHECK(held == 6);
  // The count starts again after each line written.
  CHECK_FALSE(t.admit("queue_full", 11'500, &held));
  CHECK(t.admit("queue_full", 12'000, &held));
  CHECK(held == 1);
  CHECK(t.admit("queue_full", 20'000, &held));
  CHECK(held == 0);
}

TEST_CASE("log throttle: the suffix names the held-back count") {
  CHECK(cg::log_throttle_suffix(0).empty());
  CHECK(cg::log_throttle_suffix(41) == " (and 41 more like it since the last such line)");
  cg::LogThrottle t(1000);
  std::string more = "unset";
  CHECK(t.due("c", 5'000, &more));
  CHECK(more.empty());
  CHECK_FALSE(t.due("c", 5'001, &more));
  CHECK(t.due("c", 6'000, &more));
  CHECK(more == " (and 1 more like it since the last such line)");
}

TEST_CASE("log throttle: the cause table stays bounded") {
  cg::LogThrottle t(1000);
  uint64_t held = 0;
  for (int i = 0; i < 10'000; i++) {
    REQUIRE(t.admit("cause-" + std::to_string(i), 1'000'000 + static_cast<uint64_t>(i) * 2, &held));
  }
  CHECK(t.causes() <= 4096 + 1);
}

TEST_CASE("log throttle: a quiet cause's held-back count is flushed by the timer") {
  uv_loop_t uv;
  REQUIRE(uv_loop_init(&uv) == 0);
  {
    cg::Loop loop(&uv);
    cg::LogThrottle t(20);
    std::vector<std::tuple<std::string, uint64_t, int>> flushed;
    t.attach(loop, [&](std::string_view cause, uint64_t held, int tag, std::string_view line) {
      flushed.emplace_back(std::string(cause), held, tag);
      CHECK(line == "queue full, first");
    });
    uint64_t held = 0;
    const uint64_t now = loop.now_ms();
    CHECK(t.admit("queue_full", now, &held, 4, "queue full, first"));
    for (int i = 0; i < 3; i++) CHECK_FALSE(t.admit("queue_full", now, &held, 3, "not kept"));
    CHECK(t.admit("other", now, &held));  // written at once, nothing held
    // The cause goes quiet: the timer writes its count one interval on.
    // Each turn waits for the next due timer; the deadline only ends a
    // failing run.
    const uint64_t give_up = now + 10'000;
    while (flushed.empty() && loop.now_ms() < give_up) uv_run(&uv, UV_RUN_ONCE);
    REQUIRE(flushed.size() == 1);
    CHECK(loop.active_timers() == 0);  // nothing held: the timer did not re-arm
    CHECK(std::get<0>(flushed[0]) == "queue_full");
    CHECK(std::get<1>(flushed[0]) == 3);
    CHECK(std::get<2>(flushed[0]) == 3);
    // Written once: the next occurrence starts a new count.
    t.flush_quiet(loop.now_ms() + 1000);
    CHECK(flushed.size() == 1);
    loop.close();
    uv_run(&uv, UV_RUN_DEFAULT);
  }
  CHECK(uv_loop_close(&uv) == 0);
}

TEST_CASE("log throttle: a cause still repeating is not flushed early") {
  uv_loop_t uv;
  REQUIRE(uv_loop_init(&uv) == 0);
  {
    cg::Loop loop(&uv);
    cg::LogThrottle t(1000);
    int calls = 0;
    t.attach(loop, [&](std::string_view, uint64_t, int, std::string_view) { calls++; });
    uint64_t held = 0;
    CHECK(t.admit("c", 10'000, &held));
    CHECK_FALSE(t.admit("c", 10'100, &held));
    t.flush_quiet(10'500);  // inside the interval: the next line will carry it
    CHECK(calls == 0);
    CHECK(t.admit("c", 11'000, &held));
    CHECK(held == 1);
    loop.close();
    uv_run(&uv, UV_RUN_DEFAULT);
  }
  CHECK(uv_loop_close(&uv) == 0);
}
