// Unit tests for core/base/log_throttle.cc: one line per interval per
// cause, the count of what was held back, and a bounded cause table.
#include <catch2/catch.hpp>

#include "base/log_throttle.h"

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
