// What the unit test runner (main.cc) fixes for every test.
#pragma once

namespace cg_test {
// The libuv thread pool's size in the unit tests: main.cc sets
// UV_THREADPOOL_SIZE to it before any test runs.
inline constexpr int kThreadPoolSize = 4;
}  // namespace cg_test
