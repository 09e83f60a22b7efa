// The router: every inbound message, from any channel, through dedupe,
// commands, context, the model backend and back out as a reply.
//
//   push -> dedupe (cache set-if-absent) -> /reset, /help, or
//   load context (cache get) -> model generate (timeout) -> store turn
//   (cache set) + reply (channel send) -> ack
//
// Every failure ends in a reply the user sees and one log line.
//
// THREAD: not thread-safe; loop thread only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_set>

#include "config.h"
#include "context_codec.h"
#include "inbound_queue.h"

namespace cg {

class Loop;
class Metrics;
class PluginInstance;

class Router {
 public:
  // `model` and `cache` are started instances of those kinds; `cache` may
  // be null, and then the router works without context and dedupe.
  Router(Loop &loop, const RouterConfig &config, PluginInstance &model, PluginInstance *cache,
         Metrics &metrics);
  ~Router();
  Router(const Router &) = delete;
  Router &operator=(const Router &) = delete;

  // Accepts a message (copied into the inbound queue): 0, CG_EBUSY when the
  // queue is full, CG_ECLOSED after stop_intake.
  int submit(InboundMessage msg);

  // Shutdown: refuse new messages; in-flight ones go on.
  void stop_intake();
  // Messages accepted and not yet finished.
  size_t in_flight() const;
  // Cancels every model call still running (each job then replies and ends).
  void cancel_all();
  Loop &loop() const { return loop_; }

  struct Job;  // one message's journey; internal

 private:
  void consume(InboundMessage &&msg);
  void finish(Job *job);
  // Adds 1 to name{channel="...",extra}.
  void count(std::string_view name, std::string_view channel, std::string_view extra);
  // Logs (rate-limited) and counts a cache failure the router works around.
  void cache_degraded(std::string_view what, int status);

  Loop &loop_;
  RouterConfig config_;
  PluginInstance &model_;
  PluginInstance *cache_;
  Metrics &metrics_;
  ContextCodec codec_;
  std::unique_ptr<InboundQueue> queue_;
  std::unordered_set<Job *> jobs_;
  uint64_t next_answer_id_ = 1;
  uint64_t cache_warned_ms_ = 0;
};

}  // namespace cg
