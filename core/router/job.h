// One message's journey through the router, as its steps:
//
//   start: dedupe (cache set-if-absent on the channel's dedupe key)
//   dispatch: rate limits, the backlog deadline, /help, /reset, then the
//     context load (cache get)
//   call_model: the model call with its deadline timer; deltas become
//     partial replies where the channel instance shows them
//   store_turn: the new turn into the context (cache set), then
//   reply: the FINAL reply through the channel, metrics, recent conversations
//
// Every failure ends in reply() with an error text. Internal to the router.
//
// THREAD: not thread-safe; loop thread only.
#pragma once

#include <chatgate/plugin.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "host/channel_port.h"
#include "host/inbound_message.h"
#include "router/context_codec.h"
#include "router/router.h"

namespace cg {

// One message's journey. Freed by Router::finish once nothing it started is
// still pending (cache calls, the model call, the timer, the send).
struct Router::Job {
  Router *router = nullptr;
  InboundMessage msg;
  std::string context_key;
  std::string context_text;  // what `turns` views point into
  std::vector<ContextTurn> turns;
  std::vector<cg_model_turn_t> req_turns;
  std::string encoded;  // the context to store
  std::string answer;
  uint64_t answer_id = 0;
  uint64_t call_id = 0;
  uint64_t timer_id = 0;
  uint64_t model_started_ms = 0;
  uint32_t sequence = 0;
  int pending = 0;  // callbacks still to come
  bool model_running = false;
  bool timed_out = false;
  bool replied = false;
  bool abandoned = false;  // the sender left: answer nobody, store nothing
  // ---- a message from the durable queue (msg.queue_id set) ----
  bool requeue = false;        // try it again (a model or delivery failure)
  bool leave_pending = false;  // shutting down: another instance answers it
  bool final_delivered = false;  // the platform took the FINAL reply
  std::string dead_reason;     // not empty: to the dead letters
  bool queued() const { return !msg.queue_id.empty(); }
  // A queued message failed with `why`: tried again while deliveries
  // remain (true: the caller ends the job quietly), else marked for the
  // dead letters (false: the caller replies with its error text).
  bool retry_or_dead(std::string_view why);
  // Runs the same message again (a retry), as delivery `deliveries`.
  void rerun(uint32_t deliveries);
  static void on_record(void *arg, int status, cg_str_t);
  std::string_view channel() const { return msg.channel->name(); }
  bool streaming() const;

  // The sender left before this message was answered: drop it quietly.
  void drop_abandoned();

  // Back to a blank job that keeps its buffers' capacity.
  void reset();

  // ---- cache calls: each returns false when the cache refused at once ----
  static void on_dedupe(void *arg, int status, cg_str_t);
  void start();
  void dispatch();
  static void on_reset(void *arg, int status, cg_str_t);
  static void on_context(void *arg, int status, cg_str_t value);

  // ---- the model ----
  void call_model();
  static void on_timeout(void *arg, uint64_t);
  void cancel();
  static void on_delta(void *arg, cg_str_t text);
  static void on_model_done(void *arg, int status, cg_str_t text);
  void model_failed(int status);

  // True when the store is under way (on_stored then replies).
  bool store_turn();
  static void on_stored(void *arg, int status, cg_str_t);

  // ---- replies ----
  void send(std::string_view text, uint32_t flags);
  void reply(std::string_view text, uint32_t extra_flags);
  static void on_sent(void *arg, int status);
  static void on_final_sent(void *arg, int status);
};

}  // namespace cg
