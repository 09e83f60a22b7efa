// The Catch2 (v2) runner for every unit test file in this folder.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <cstdlib>
#include <string>

#include "unit_support.h"

int main(int argc, char *argv[]) {
  // libuv sizes its thread pool from UV_THREADPOOL_SIZE on first use; the
  // loop tests occupy every pool thread, so they fix the size before any
  // test runs rather than assume the environment leaves libuv's default.
  setenv("UV_THREADPOOL_SIZE", std::to_string(cg_test::kThreadPoolSize).c_str(), 1);
  return Catch::Session().run(argc, argv);
}
