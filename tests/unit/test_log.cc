// Unit tests for core/base/log.cc: level filtering, the rotating file, errors
// copied to stderr when logging to a file, open errors, and log_shutdown
// writing out everything queued on the async logger.
//
// Each test ends with cg::log_shutdown(), so the next one (in this file or
// another) finds a plain synchronous stderr logger.
#include <chatgate/common.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "base/log.h"

namespace fs = std::filesystem;

namespace {

// A fresh directory, removed with everything in it at the end of the scope.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = fs::temp_directory_path() /
            ("cg_test_log_" + std::to_string(getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string &name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

std::string read_text(const std::string &path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

size_t count(const std::string &text, const std::string &needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) n++;
  return n;
}

// Sends fd 2 to a file for one scope, so a test can read what reached stderr.
class StderrCapture {
 public:
  explicit StderrCapture(std::string path) : path_(std::move(path)) {
    std::fflush(stderr);
    saved_ = dup(2);
    const int fd = open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    REQUIRE(saved_ >= 0);
    REQUIRE(fd >= 0);
    dup2(fd, 2);
    close(fd);
  }
  ~StderrCapture() { restore(); }
  // Puts stderr back and returns what was written to it meanwhile.
  std::string restore() {
    if (saved_ >= 0) {
      std::fflush(stderr);
      dup2(saved_, 2);
      close(saved_);
      saved_ = -1;
    }
    return read_text(path_);
  }

 private:
  std::string path_;
  int saved_ = -1;
};

cg::LoggingConfig to_file(const std::string &path, const std::string &level = "info") {
  cg::LoggingConfig config;
  config.level = level;
  config.file = path;
  return config;
}

}  // namespace

TEST_CASE("log: lines below the level are dropped", "[log]") {
  TempDir dir;
  const std::string path = dir.file("app.log");
  StderrCapture err(dir.file("stderr"));
  REQUIRE(cg::log_setup(to_file(path, "warn")) == "");
  spdlog::debug("debug-line");
  spdlog::info("info-line");
  spdlog::warn("warn-line");
  spdlog::error("error-line");
  // What a plugin logs maps onto the same levels.
  spdlog::log(static_cast<spdlog::level::level_enum>(cg::log_level_from_cg(CG_LOG_INFO)),
              "plugin-info-line");
  spdlog::log(static_cast<spdlog::level::level_enum>(cg::log_level_from_cg(CG_LOG_WARN)),
              "plugin-warn-line");
  cg::log_shutdown();
  const std::string text = read_text(path);
  CHECK(text.find("debug-line") == std::string::npos);
  CHECK(text.find("info-line") == std::string::npos);
  CHECK(text.find("plugin-info-line") == std::string::npos);
  CHECK(text.find(" warning warn-line\n") != std::string::npos);
  CHECK(text.find(" error error-line\n") != std::string::npos);
  CHECK(text.find("plugin-warn-line") != std::string::npos);

  REQUIRE(cg::log_setup(to_file(path, "debug")) == "");
  spdlog::trace("trace-line");
  spdlog::debug("debug-line");
  cg::log_shutdown();
  CHECK(read_text(path).find("trace-line") == std::string::npos);
  CHECK(read_text(path).find("debug-line") != std::string::npos);
}

TEST_CASE("log: the file rotates at maxSizeMb and keeps maxFiles", "[log]") {
  TempDir dir;
  cg::LoggingConfig config = to_file(dir.file("app.log"));
  config.max_size_mb = 1;
  config.max_files = 2;
  REQUIRE(cg::log_setup(config) == "");
  // About 4 MiB in lines of 1 KB: three rotations, the last of which drops
  // the oldest file. Fewer lines than the queue holds, so none is dropped.
  const std::string filler(1000, 'x');
  constexpr int kLines = 4000;
  static_assert(kLines < cg::kLogQueueSize);
  for (int i = 0; i < kLines; i++) spdlog::info("line {} {}", i, filler);
  cg::log_shutdown();

  CHECK(fs::exists(dir.file("app.log")));
  CHECK(fs::exists(dir.file("app.1.log")));
  CHECK(fs::exists(dir.file("app.2.log")));
  CHECK_FALSE(fs::exists(dir.file("app.3.log")));
  for (const char *name : {"app.log", "app.1.log", "app.2.log"}) {
    INFO(name);
    CHECK(fs::file_size(dir.file(name)) <= 1024 * 1024);
    CHECK(fs::file_size(dir.file(name)) > 0);
  }
  CHECK(read_text(dir.file("app.log")).find(" line 3999 x") != std::string::npos);
  CHECK(read_text(dir.file("app.2.log")).find(" line 0 x") == std::string::npos);
}

TEST_CASE("log: with a file, errors also reach stderr", "[log]") {
  TempDir dir;
  const std::string path = dir.file("app.log");
  StderrCapture err(dir.file("stderr"));
  REQUIRE(cg::log_setup(to_file(path)) == "");
  spdlog::info("info-line");
  spdlog::warn("warn-line");
  spdlog::error("error-line");
  spdlog::critical("critical-line");
  cg::log_shutdown();
  const std::string console = err.restore();

  const std::string file = read_text(path);
  CHECK(file.find("info-line") != std::string::npos);
  CHECK(file.find("warn-line") != std::string::npos);
  CHECK(file.find("error-line") != std::string::npos);
  CHECK(console.find(" error error-line\n") != std::string::npos);
  CHECK(console.find("critical-line") != std::string::npos);
  CHECK(console.find("info-line") == std::string::npos);
  CHECK(console.find("warn-line") == std::string::npos);
}

TEST_CASE("log: without a file, every line goes to stderr", "[log]") {
  TempDir dir;
  StderrCapture err(dir.file("stderr"));
  REQUIRE(cg::log_setup(cg::LoggingConfig{}) == "");
  spdlog::debug("debug-line");
  spdlog::info("info-line");
  spdlog::error("error-line");
  cg::log_shutdown();
  const std::string console = err.restore();
  CHECK(console.find("debug-line") == std::string::npos);
  CHECK(count(console, "info-line") == 1);
  CHECK(count(console, "error-line") == 1);
}

TEST_CASE("log: an unwritable file is a clear error", "[log]") {
  TempDir dir;
  const std::string first = dir.file("first.log");
  REQUIRE(cg::log_setup(to_file(first)) == "");

  // A regular file where a directory should be: fails even for root.
  std::ofstream(dir.file("blocker")) << "x";
  const std::string path = dir.file("blocker") + "/sub/app.log";
  const std::string error = cg::log_setup(to_file(path));
  CHECK(error.rfind("cannot open log file " + path + ": ", 0) == 0);
  CHECK(error.find("Not a directory") != std::string::npos);

  // The logger in place stays.
  spdlog::info("still-here");
  cg::log_shutdown();
  CHECK(read_text(first).find("still-here") != std::string::npos);

  // Missing parent directories are created.
  const std::string nested = dir.file("a/b/app.log");
  REQUIRE(cg::log_setup(to_file(nested)) == "");
  spdlog::info("nested-line");
  cg::log_shutdown();
  CHECK(read_text(nested).find("nested-line") != std::string::npos);
}

TEST_CASE("log: out-of-range sizes are refused", "[log]") {
  cg::LoggingConfig config;
  config.max_size_mb = cg::kLogMaxSizeMbLimit + 1;
  CHECK(cg::log_setup(config) == "logging.maxSizeMb must be in 1..1048576");
  config.max_size_mb = 0;
  CHECK_FALSE(cg::log_setup(config).empty());
  config = {};
  config.max_files = cg::kLogMaxFilesLimit + 1;
  CHECK(cg::log_setup(config) == "logging.maxFiles must be in 1..200000");
  config = {};
  config.level = "verbose";
  CHECK(cg::log_setup(config) == "unknown log level 'verbose'");
}

TEST_CASE("log: log_shutdown writes out everything logged before it", "[log]") {
  TempDir dir;
  const std::string path = dir.file("app.log");
  REQUIRE(cg::log_setup(to_file(path)) == "");
  // Info lines are not flushed on their own: only the shutdown gets them out.
  for (int i = 0; i < 1000; i++) spdlog::info("queued {}", i);
  cg::log_shutdown();
  const std::string text = read_text(path);
  CHECK(count(text, " info queued ") == 1000);
  CHECK(text.find(" info queued 999\n") != std::string::npos);

  // Logging afterwards still works, synchronously, on stderr.
  StderrCapture err(dir.file("stderr"));
  spdlog::info("after-shutdown");
  const std::string console = err.restore();
  CHECK(console.find("after-shutdown") != std::string::npos);
  CHECK(read_text(path).find("after-shutdown") == std::string::npos);
  cg::log_shutdown();  // a second call is harmless
}

TEST_CASE("log: setting up again drains the previous logger", "[log]") {
  TempDir dir;
  REQUIRE(cg::log_setup(to_file(dir.file("a.log"))) == "");
  for (int i = 0; i < 100; i++) spdlog::info("to-a {}", i);
  REQUIRE(cg::log_setup(to_file(dir.file("b.log"))) == "");
  spdlog::info("to-b");
  cg::log_shutdown();
  CHECK(count(read_text(dir.file("a.log")), "to-a ") == 100);
  CHECK(read_text(dir.file("a.log")).find("to-b") == std::string::npos);
  CHECK(read_text(dir.file("b.log")).find("to-b") != std::string::npos);
}

// Whether lines are dropped depends on how fast the logging thread writes,
// so this checks what must hold either way: the newest line is there, and
// the lines that are there come once each, in order.
TEST_CASE("log: a burst beyond the queue keeps the newest line and the order", "[log]") {
  TempDir dir;
  const std::string path = dir.file("app.log");
  REQUIRE(cg::log_setup(to_file(path)) == "");
  constexpr int kLines = 10 * static_cast<int>(cg::kLogQueueSize);
  for (int i = 0; i < kLines; i++) spdlog::info("burst {}", i);
  cg::log_shutdown();
  const std::string text = read_text(path);
  CHECK(text.find(" info burst " + std::to_string(kLines - 1) + "\n") != std::string::npos);
  long last = -1;
  bool ordered = true;
  for (size_t at = text.find(" info burst "); at != std::string::npos;
       at = text.find(" info burst ", at + 1)) {
    const long n = std::strtol(text.c_str() + at + 12, nullptr, 10);
    if (n <= last) ordered = false;
    last = n;
  }
  CHECK(ordered);
  CHECK(last == kLines - 1);
}
