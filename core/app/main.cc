// chatgate command line:
//   chatgate [--config FILE]                 run (the embedded default without --config)
//   chatgate --check-config [--config FILE]  validate config and plugins, open no port
//   chatgate --list-plugins [DIR]            describe every plugin in DIR
//   chatgate --version | --help
#include <chatgate/plugin.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <uv.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "app/app.h"
#include "base/log.h"
#include "base/version.h"
#include "config/config.h"
#include "config/config_schema.h"
#include "host/plugin_instance.h"
#include "host/plugin_loader.h"

namespace cg {
extern const std::string_view kDefaultConfigYaml;
}

namespace {

constexpr std::string_view kUsage =
    "usage: chatgate [--config FILE]\n"
    "       chatgate --check-config [--config FILE]\n"
    "       chatgate --list-plugins [DIR]\n"
    "       chatgate --version\n"
    "\n"
    "Without --config, chatgate runs on its embedded default config\n"
    "(echo model backend, memory cache, HTTP chat API on 127.0.0.1:8080).\n";

struct Options {
  std::string config_file;
  bool check = false;
  bool list = false;
  std::string list_dir;
};

// Returns -1 to go on, else the exit code.
int parse_args(int argc, char **argv, Options *o) {
  for (int i = 1; i < argc; i++) {
    const std::string_view a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage.data(), stdout);
      return 0;
    }
    if (a == "--version") {
      std::printf("chatgate %s (plugin ABI %d.%d)\n", cg::build_version().c_str(), CG_ABI_MAJOR,
                  CG_ABI_MINOR);
      return 0;
    }
    if (a == "--config" || a == "-c") {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "chatgate: --config needs a file\n%s", kUsage.data());
        return 2;
      }
      o->config_file = argv[++i];
    } else if (a.starts_with("--config=")) {
      o->config_file = std::string(a.substr(9));
    } else if (a == "--check-config") {
      o->check = true;
    } else if (a == "--list-plugins") {
      o->list = true;
      if (i + 1 < argc && argv[i + 1][0] != '-') o->list_dir = argv[++i];
    } else {
      std::fprintf(stderr, "chatgate: unknown argument '%s'\n%s", argv[i], kUsage.data());
      return 2;
    }
  }
  return -1;
}

int list_plugins(std::string dir) {
  if (dir.empty()) dir = cg::config_default_plugin_dir();
  std::error_code ec;
  std::vector<std::string> files;
  for (const auto &e : std::filesystem::directory_iterator(dir, ec)) {
    if (e.path().extension() == ".so") files.push_back(e.path().string());
  }
  if (ec) {
    std::fprintf(stderr, "chatgate: cannot read plugin folder %s: %s\n", dir.c_str(),
                 ec.message().c_str());
    return 1;
  }
  std::sort(files.begin(), files.end());
  std::printf("plugins in %s (host ABI %d.%d):\n", dir.c_str(), CG_ABI_MAJOR, CG_ABI_MINOR);
  for (const std::string &f : files) {
    cg::LoadedPlugin p;
    std::string error;
    if (cg::plugin_load(f, &p, &error) != 0) {
      std::printf("\n  refused: %s\n", error.c_str());
      continue;
    }
    std::printf("\n%s  kind=%s  version=%s  ABI %u.%u  file=%s\n  %s\n", p.desc->name,
                std::string(cg::plugin_kind_name(p.desc->kind)).c_str(), p.desc->version,
                p.desc->abi_major, p.desc->abi_minor, f.c_str(),
                p.desc->description ? p.desc->description : "");
    const std::string help = cg::plugin_config_help(p.fields);
    if (!help.empty()) std::printf("  config:\n%s", help.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char **argv) {
#ifdef CG_BUILD_TAG
  cg::build_version_tag(CG_BUILD_TAG);  // a test build: tests/integration/CMakeLists.txt
#endif
  // A peer closing mid-write must give EPIPE, not kill the process.
  std::signal(SIGPIPE, SIG_IGN);
  Options opts;
  if (const int rc = parse_args(argc, argv, &opts); rc >= 0) return rc;
  if (opts.list) return list_plugins(opts.list_dir);

  cg::Config config;
  std::optional<cg::ConfigError> err =
      opts.config_file.empty()
          ? cg::config_load_string(cg::kDefaultConfigYaml, cg::kEmbeddedConfigName, &config)
          : cg::config_load_file(opts.config_file, &config);
  if (err) {
    std::fprintf(stderr, "chatgate: config error: %s\n", err->to_string().c_str());
    return 1;
  }

  if (opts.check) {
    size_t instances = 0;
    if (std::string e = cg::app_check_config(config, &instances); !e.empty()) {
      std::fprintf(stderr, "chatgate: config error: %s\n", e.c_str());
      return 1;
    }
    std::printf("config OK: %s (%zu plugin instances; api on %s:%d)\n", config.file.c_str(),
                instances, config.api.address.c_str(), config.api.port);
    return 0;
  }

  if (std::string e = cg::log_setup(config.logging); !e.empty()) {
    std::fprintf(stderr, "chatgate: %s (logging.file in %s)\n", e.c_str(), config.file.c_str());
    return 1;
  }
  // Every connection is a descriptor: take the whole hard limit (systemd's
  // LimitNOFILE) rather than the soft 1024 a shell hands down, and say what
  // it is, since listeners.*.maxConnections beyond it cannot be served.
  if (rlimit lim{}; getrlimit(RLIMIT_NOFILE, &lim) == 0) {
    if (lim.rlim_cur < lim.rlim_max) {
      rlimit raised = lim;
      raised.rlim_cur = lim.rlim_max;
      if (setrlimit(RLIMIT_NOFILE, &raised) == 0) lim = raised;
    }
    // The API listener's cap and room for the rest (admin, plugins, logs).
    const auto want = static_cast<rlim_t>(config.api.limits.max_connections + 256);
    if (lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur < want) {
      spdlog::warn(
          "open file limit is {}, below the {} listeners.api.maxConnections needs; "
          "raise LimitNOFILE (systemd) or ulimit -n",
          static_cast<uint64_t>(lim.rlim_cur), static_cast<uint64_t>(want));
    }
  }
  int rc = 0;
  {
    cg::App app;
    // A handover (SIGUSR2, a reload that needs a new process) starts the
    // binary found at this path, with these arguments: after a package
    // upgrade that is the new binary.
    // The path it was started by (systemd's ExecStart=, a symlink kept as
    // such, so that repointing it upgrades too), else the kernel's.
    std::string exe_path;
    std::error_code ec;
    if (std::strchr(argv[0], '/') != nullptr) {
      exe_path = std::filesystem::absolute(argv[0], ec).lexically_normal().string();
    }
    if (exe_path.empty()) {
      char exe[4096];
      size_t exe_len = sizeof exe;
      if (uv_exepath(exe, &exe_len) == 0) exe_path.assign(exe, exe_len);
    }
    app.set_command(exe_path, std::vector<std::string>(argv + 1, argv + argc));
    rc = app.run(std::move(config));
  }
  // Writes out what the logging thread still holds, then joins it.
  cg::log_shutdown();
  return rc;
}
