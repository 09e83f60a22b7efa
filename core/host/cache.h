// The core's handle on the configured cache plugin instance. Every cache
// call, the router's own and those plugins make through the host API,
// passes through here: counted (calls in flight, completions by result),
// and completed through the host rather than from the cache plugin into
// its caller. A plugin caller's completion is deferred to a later loop turn
// with its own copy of the value, so one plugin's callback never runs on
// another plugin's stack; the router's (host code) is called at once.
//
// THREAD: not thread-safe; loop thread only.
#pragma once

#include <chatgate/plugin.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace cg {

class Loop;
class Metrics;
class PluginInstance;

class Cache {
 public:
  // How a completion reaches its caller.
  enum class Delivery {
    kDirect,   // inside the cache's completion (host code only)
    kDeferred  // on a later loop turn, with a copy of the value (plugins)
  };

  Cache(PluginInstance &instance, Loop &loop, Metrics &metrics);
  ~Cache();
  Cache(const Cache &) = delete;
  Cache &operator=(const Cache &) = delete;

  std::string_view name() const;
  // False until the instance started, and again once it stops.
  bool available() const;

  // As cg_cache_ops_t: 0 and cb(arg, status, value) exactly once, never
  // inside the call; or an error (CG_EUNAVAIL when not available, or the
  // cache's refusal) and no cb. OWNERSHIP: key and value are borrowed for
  // the call; the value given to cb is borrowed until cb returns; `arg`
  // is the caller's.
  int get(std::string_view key, cg_cache_cb cb, void *arg, Delivery d = Delivery::kDirect);
  int set(std::string_view key, std::string_view value, uint64_t ttl_ms, cg_cache_cb cb, void *arg,
          Delivery d = Delivery::kDirect);
  int set_nx(std::string_view key, std::string_view value, uint64_t ttl_ms, cg_cache_cb cb,
             void *arg, Delivery d = Delivery::kDirect);
  int del(std::string_view key, cg_cache_cb cb, void *arg, Delivery d = Delivery::kDirect);

  size_t in_flight() const { return in_flight_; }

  struct Call;  // internal

 private:
  Call *begin(cg_cache_cb cb, void *arg, Delivery d);
  // The cache refused the call at once: the Call goes back unused.
  int refused(Call *call, int rc);
  void finish(Call *call);
  static void on_done(void *arg, int status, cg_str_t value);
  static void deliver(void *arg);

  PluginInstance &instance_;
  Loop &loop_;
  std::vector<std::unique_ptr<Call>> calls_;  // every Call made; reused
  std::vector<Call *> spare_;
  size_t in_flight_ = 0;
  double *in_flight_gauge_ = nullptr;
  double *ok_ = nullptr, *missing_ = nullptr, *failed_ = nullptr;
};

}  // namespace cg
