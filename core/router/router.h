// The router: every inbound message, from any channel, through dedupe,
// commands, context, the model backend and back out as a reply.
//
//   submit (the conversation's backlog cap) -> queue -> the conversation's
//   lane, one at a time -> dedupe (cache set-if-absent) -> /reset, /help, or
//   load context (cache get) -> model generate (timeout) -> store turn
//   (cache set) + reply (channel send) -> ack
//
// Every failure ends in a reply the user sees and one log line.
//
// THREAD: not thread-safe; loop thread only.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "base/log_throttle.h"
#include "config/config_types.h"
#include "config/user_messages.h"
#include "host/message_sink.h"
#include "net/token_bucket.h"
#include "router/context_codec.h"
#include "router/conversations_port.h"
#include "router/inbound_queue.h"

namespace cg {

class Cache;
class ChannelPort;
class DurableQueue;
class Queue;
class Loop;
class Metrics;
class ModelBackend;
class PluginChannelPort;
struct Histogram;

class RecentConversations;

class Router final : public MessageSink, public ConversationsPort {
 public:
  // `cache` may be null, and then the router works without context and
  // dedupe. `queue` (router.queue) may be null: then what channels emit
  // lives in memory until answered. OWNERSHIP: every reference is borrowed
  // and must outlive the router.
  Router(Loop &loop, const RouterConfig &config, ModelBackend &model, Cache *cache,
         Metrics &metrics, Queue *queue = nullptr);
  ~Router();
  Router(const Router &) = delete;
  Router &operator=(const Router &) = delete;

  // Accepts a message into the inbound queue: 0, CG_EBUSY when the queue
  // or the message's conversation backlog (router.maxConversationBacklog)
  // is full, CG_ECLOSED after stop_intake, CG_EINVAL without a channel.
  int submit(InboundMessage msg) override;
  // As submit, answered through done on a later loop turn. With the
  // in-memory queue, "safe" is submit's 0: the message is queued here; with
  // a durable queue, 0 once it is in the queue's store (CG_EEXIST: a
  // duplicate of one there; CG_EUNAVAIL: the store did not take it).
  void submit_durable(InboundMessage msg, cg_done_cb done, void *arg) override;
  // With a durable queue: starts taking partitions (after the plugins
  // started). Without: nothing.
  void start_queue();
  // A plugin channel that proactive sends may go through.
  void add_channel(PluginChannelPort *port) { plugin_channels_.push_back(port); }
  ProactiveResult send_proactive(const ProactiveMessage &msg, cg_done_cb done, void *arg) override;

  // The sender of the message with this reply token left (a client that
  // disconnected): its model call is cancelled, or it is dropped before it
  // starts, and no turn is stored. Unknown tokens are ignored.
  void abandon(const ChannelPort *channel, std::string_view reply_token);

  // A message the channel received and dropped itself (its policy): one
  // more received and one dropped with `reason` for that channel.
  void count_dropped(std::string_view channel, std::string_view reason) override;

  // Shutdown: refuse new messages; in-flight ones go on.
  void stop_intake();
  // Messages accepted and not yet finished.
  size_t in_flight() const;
  // Without router.queue, true; with it, whether this instance has joined
  // the queue's members (its first heartbeat was answered).
  bool queue_joined() const;
  // Cancels every model call still running (each job then replies and ends);
  // messages that start afterwards are answered with the shutdown text.
  void cancel_all();
  Loop &loop() const { return loop_; }

  // Keeps the recently answered conversations for the admin page, with the
  // last question and answer when `keep_content`.
  void track_conversations(bool keep_content);
  // A config reload: takes the context and timeout settings of `config`
  // (config_reload.h lists them) for messages that start from now on, and
  // whether the recent conversations keep their text.
  void reconfigure(const RouterConfig &config, bool keep_content);
  // The text the core sends a user of `channel` for `msg`: the channel
  // instance's locale (router.channel_locales, else router.locale), with
  // the config's `messages:` override if there is one.
  std::string_view user_text(UserMsg msg, const ChannelPort *channel) const;
  // MessageSink: the same by the instance's name and the catalog's key.
  std::optional<std::string_view> user_text(std::string_view instance,
                                            std::string_view key) const override;
  // A fresh cg_reply_t.answer_id, for a message sent outside the router
  // (the admin API's send): channels key streamed answers on it.
  uint64_t take_answer_id() { return next_answer_id_++; }
  // Null unless track_conversations ran.
  const RecentConversations *recent() const { return recent_.get(); }
  // ConversationsPort, for the admin API.
  std::string recent_json(std::string_view channel) const override;
  int reset_conversation(std::string_view channel, std::string_view conversation,
                         std::function<void(int)> done) override;

  struct Job;  // one message's journey; internal

 private:
  // The per-channel series of the hot path, looked up once per channel.
  struct ChannelSeries {
    double *received = nullptr;
    double *answered = nullptr;
    double *failed = nullptr;
    double *duplicates = nullptr;
    double *queue_full = nullptr;
    double *backlog_full = nullptr;  // refused at router.maxConversationBacklog
    double *client_gone = nullptr;
    Histogram *reply_latency = nullptr;
  };
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  // One conversation's messages run one at a time, in arrival order: each
  // reads the context the previous one stored, so no turn is lost. Made at
  // submit, gone when its last message finished.
  struct Lane {
    uint32_t backlog = 0;  // accepted and not finished: queued, waiting or running
    bool running = false;
    std::deque<Job *> waiting;  // behind the running one
  };

  // Token buckets of one channel: by sender and by conversation.
  struct ChannelLimiter {
    TokenBuckets sender;
    TokenBuckets conversation;
  };
  ChannelLimiter &limiter(std::string_view channel);
  // The message is over its channel's rate: true when the router dealt
  // with it (a "slow down" notice or a quiet drop) and the job is done.
  bool rate_limited(Job &job);
  // Whether `key` may get a "slow down" notice now (one per interval).
  bool notice_due(const std::string &key);

  // "c:<channel>:<conversation>": the context key, and the key of the
  // conversation's lane and backlog count.
  static void conversation_key(const ChannelPort &channel, std::string_view conversation,
                               std::string *out);
  void consume(InboundMessage &&msg);
  // A message read from the durable queue: into its lane, as submit does.
  void consume_queued(InboundMessage &&msg);
  // A queued message's job is over: its entry acknowledged, tried again,
  // dead-lettered or left pending. False when the job goes on (a retry).
  bool finish_queued(Job *job);
  void finish(Job *job);
  ChannelSeries &series(std::string_view channel);
  // Adds 1 to name{channel="...",extra}; for the rare paths.
  void count(std::string_view name, std::string_view channel, std::string_view extra);
  // Whether a line for `cause` may be written now (base/log_throttle.h: one
  // a second per cause); then *suffix tells how many were held back.
  bool log_due(std::string_view cause, std::string *suffix);
  // Logs (rate-limited) and counts a cache failure the router works around.
  void cache_degraded(std::string_view what, int status);

  Loop &loop_;
  RouterConfig config_;
  ModelBackend &model_;
  Cache *cache_;
  std::vector<PluginChannelPort *> plugin_channels_;
  Metrics &metrics_;
  ContextCodec codec_;
  std::unique_ptr<InboundQueue> queue_;
  std::unique_ptr<DurableQueue> durable_;  // router.queue; else null
  // Every text of every locale, overrides applied (set_texts).
  std::array<std::array<std::string, kUserMsgCount>, kUserLocaleCount> texts_;
  void set_texts();
  // The catalog place of the locale of instance `instance` (its own
  // `locale:`, else router.locale).
  size_t locale_of(std::string_view instance) const;
  std::unordered_map<Job *, std::unique_ptr<Job>> jobs_;
  // Context key -> that conversation's lane.
  std::unordered_map<std::string, Lane, StringHash, std::equal_to<>> lanes_;
  std::unordered_map<std::string, ChannelSeries, StringHash, std::equal_to<>> series_;
  // Finished jobs kept for reuse: their strings and vectors keep capacity.
  std::vector<std::unique_ptr<Job>> spare_;
  Histogram *model_latency_ = nullptr;
  std::unique_ptr<RecentConversations> recent_;
  double *cache_hits_ = nullptr;    // a conversation's context was found
  double *cache_misses_ = nullptr;  // none stored (a new conversation, or expired)
  // Reply tokens whose sender left before the router consumed the message.
  std::unordered_set<std::string, StringHash, std::equal_to<>> abandoned_tokens_;
  std::unordered_map<std::string, ChannelLimiter, StringHash, std::equal_to<>> limiters_;
  std::unordered_map<std::string, uint64_t> notices_;  // key -> when the last notice went
  uint64_t notices_swept_ms_ = 0;
  uint32_t model_calls_ = 0;  // in flight, for router.maxModelCalls
  double *model_calls_gauge_ = nullptr;
  uint64_t next_answer_id_ = 1;
  uint64_t cache_warned_ms_ = 0;
  std::string key_buf_;  // reused by submit: no allocation per message
  LogThrottle log_throttle_;
  // submit_durable's answers, given together on the next loop turn.
  struct DurableAnswer {
    cg_done_cb done;
    void *arg;
    int status;
  };
  std::vector<DurableAnswer> durable_answers_, durable_answering_;
  static void answer_durable(void *self);
  bool cancelling_ = false;
};

}  // namespace cg
