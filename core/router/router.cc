#include "router/router.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <chatgate/cpp.hpp>
#include <chrono>
#include <iterator>

#include "base/loop.h"
#include "base/metrics.h"
#include "host/cache.h"
#include "host/channel_port.h"
#include "host/model_backend.h"
#include "router/durable_queue.h"
#include "router/job.h"
#include "router/recent_conversations.h"

namespace cg {
namespace {

// Finished jobs kept for reuse; enough for the usual in-flight count.
constexpr size_t kSpareJobs = 256;

}  // namespace

Router::ChannelLimiter &Router::limiter(std::string_view channel) {
  auto it = limiters_.find(channel);
  if (it != limiters_.end()) return it->second;
  ChannelRateLimits limits = config_.rate_limits.defaults;
  for (const auto &[name, own] : config_.rate_limits.channels) {
    if (name == channel) limits = own;
  }
  return limiters_
      .emplace(std::string(channel), ChannelLimiter{TokenBuckets(limits.per_sender),
                                                    TokenBuckets(limits.per_conversation)})
      .first->second;
}

bool Router::notice_due(const std::string &key) {
  const uint64_t now = loop_.now_ms();
  const uint64_t interval = config_.rate_limits.notice_interval_seconds * 1000;
  // Expired entries go at most once an interval, so a flood of senders
  // costs one pass per interval, not one per message.
  if (notices_.size() > 4096 && now - notices_swept_ms_ >= interval) {
    notices_swept_ms_ = now;
    std::erase_if(notices_, [&](const auto &e) { return now - e.second >= interval; });
  }
  auto [it, fresh] = notices_.try_emplace(key, now);
  if (fresh) return true;
  if (now - it->second < interval) return false;
  it->second = now;
  return true;
}

// Sender first: one noisy user in a group should hit their own limit
// before the whole conversation's.
bool Router::rate_limited(Job &job) {
  ChannelLimiter &l = limiter(job.channel());
  const uint64_t now = loop_.now_ms();
  const InboundMessage &m = job.msg;
  std::string key;
  if (!m.sender_id.empty() && l.sender.take(m.sender_id, now) != 0) {
    key = fmt::format("{}\ns\n{}", job.channel(), m.sender_id);
  } else if (!m.conversation_id.empty() && l.conversation.take(m.conversation_id, now) != 0) {
    key = fmt::format("{}\nc\n{}", job.channel(), m.conversation_id);
  } else {
    return false;
  }
  count("chatgate_messages_dropped_total", job.channel(), "reason=\"rate_limited\"");
  if (m.channel->answers_every_message()) {
    m.channel->on_dropped(m, "rate_limited");
    finish(&job);
    return true;
  }
  if (!notice_due(key)) {
    spdlog::debug("router: message on '{}' from '{}' over the rate limit; dropped", job.channel(),
                  m.sender_id);
    m.channel->on_dropped(m, "rate_limited");
    finish(&job);
    return true;
  }
  if (std::string more; log_due("rate_limited", &more)) {
    spdlog::info("router: sender '{}' on '{}' over the rate limit; told to slow down{}",
                 m.sender_id, job.channel(), more);
  }
  job.replied = true;
  job.send(user_text(UserMsg::kSlowDown, job.msg.channel), CG_REPLY_FINAL | CG_REPLY_ERROR);
  finish(&job);
  return true;
}

void Router::track_conversations(bool keep_content) {
  recent_ = std::make_unique<RecentConversations>(keep_content);
}

void Router::reconfigure(const RouterConfig &config, bool keep_content) {
  config_.context_turns = config.context_turns;
  config_.context_ttl_seconds = config.context_ttl_seconds;
  config_.model_timeout_ms = config.model_timeout_ms;
  config_.dedupe_ttl_seconds = config.dedupe_ttl_seconds;
  config_.max_model_calls = config.max_model_calls;
  config_.max_conversation_backlog = config.max_conversation_backlog;
  if (!(config_.rate_limits == config.rate_limits)) {
    config_.rate_limits = config.rate_limits;
    limiters_.clear();  // made again from the new limits, full
  }
  if (recent_) recent_->set_keep_content(keep_content);
  config_.locale = config.locale;
  config_.messages = config.messages;
  config_.channel_locales = config.channel_locales;
  set_texts();
}

void Router::set_texts() {
  const auto locales = user_message_locales();
  for (size_t l = 0; l < texts_.size(); l++) {
    for (size_t i = 0; i < kUserMsgCount; i++) {
      const auto msg = static_cast<UserMsg>(i);
      auto it = config_.messages.find(std::string(user_message_key(msg)));
      std::string text =
          std::string(it != config_.messages.end() ? std::string_view(it->second)
                                                   : user_message_text(msg, locales[l]));
      if (msg == UserMsg::kUnknownCommand) {
        // The help it quotes is this locale's: filled once, not per message
        // ({command} stays for the job).
        const std::pair<std::string_view, std::string_view> help[] = {
            {"help", texts_[l][static_cast<size_t>(UserMsg::kHelp)]}};
        text = user_message_format(text, help);
      }
      texts_[l][i] = std::move(text);
    }
  }
}

std::string_view Router::user_text(UserMsg msg, const ChannelPort *channel) const {
  return texts_[locale_of(channel != nullptr ? channel->name() : std::string_view())]
               [static_cast<size_t>(msg)];
}

std::optional<std::string_view> Router::user_text(std::string_view instance,
                                                  std::string_view key) const {
  const std::optional<UserMsg> msg = user_message_by_key(key);
  if (!msg) return std::nullopt;
  return std::string_view(texts_[locale_of(instance)][static_cast<size_t>(*msg)]);
}

size_t Router::locale_of(std::string_view instance) const {
  std::string_view locale = config_.locale;
  if (!instance.empty() && !config_.channel_locales.empty()) {
    auto it = config_.channel_locales.find(instance);
    if (it != config_.channel_locales.end()) locale = it->second;
  }
  return user_message_locale_index(locale);
}

namespace {
struct ResetCall {
  std::function<void(int)> done;
};
}  // namespace

std::string Router::recent_json(std::string_view channel) const {
  return recent_ ? recent_->to_json(channel) : std::string(R"({"conversations":[]})");
}

int Router::reset_conversation(std::string_view channel, std::string_view conversation,
                               std::function<void(int)> done) {
  if (cache_ == nullptr) return CG_EUNAVAIL;
  const std::string key = fmt::format("c:{}:{}", channel, conversation);
  if (recent_) recent_->reset(channel, conversation);
  auto call = std::make_unique<ResetCall>(ResetCall{std::move(done)});
  const int rc = cache_->del(
      key,
      [](void *arg, int status, cg_str_t) {
        std::unique_ptr<ResetCall> c(static_cast<ResetCall *>(arg));
        c->done(status);
      },
      call.get());
  if (rc == 0) (void)call.release();  // the callback owns it
  return rc;
}

Router::Router(Loop &loop, const RouterConfig &config, ModelBackend &model, Cache *cache,
               Metrics &metrics, Queue *queue)
    : loop_(loop),
      config_(config),
      model_(model),
      cache_(cache),
      metrics_(metrics),
      queue_(std::make_unique<MemoryInboundQueue>(loop, config.max_queue)) {
  set_texts();
  queue_->set_consumer([this](InboundMessage &&m) { consume(std::move(m)); });
  if (queue != nullptr) {
    durable_ = std::make_unique<DurableQueue>(
        loop, *queue, metrics, config.queue_settings, config.dedupe_ttl_seconds * 1000,
        config.max_queue,
        [this](std::string_view name) -> ChannelPort * {
          for (PluginChannelPort *p : plugin_channels_) {
            if (p->name() == name) return p;
          }
          return nullptr;
        },
        [this](InboundMessage &&m) { consume_queued(std::move(m)); });
  }
  // Every router warning that log_due throttles is a warning.
  log_throttle_.attach(loop_, [](std::string_view cause, uint64_t held, int, std::string_view) {
    spdlog::warn("router: {} more '{}' warnings were held back, none since", held, cause);
  });
  model_latency_ =
      metrics_.histogram("chatgate_model_latency_seconds",
                         fmt::format("model=\"{}\"", model_.name()), "Model backend call latency");
  cache_hits_ = metrics_.counter("chatgate_cache_hits_total", "",
                                 "Context loads that found the conversation's context");
  cache_misses_ = metrics_.counter("chatgate_cache_misses_total", "",
                                   "Context loads that found none (new or expired)");
  model_calls_gauge_ =
      metrics_.gauge("chatgate_model_calls_in_flight", "",
                     "Model backend calls running (router.maxModelCalls caps them)");
}

// Jobs still here when the loop has stopped will get no more callbacks
// (the plugins are stopped): the map frees them.
Router::~Router() = default;

void Router::start_queue() {
  if (durable_) durable_->start();
}

Router::ChannelSeries &Router::series(std::string_view channel) {
  auto it = series_.find(channel);
  if (it != series_.end()) return it->second;
  const std::string ch = fmt::format("channel=\"{}\"", channel);
  ChannelSeries s;
  s.received =
      metrics_.counter("chatgate_messages_received_total", ch, "Messages accepted from channels");
  s.answered = metrics_.counter("chatgate_messages_answered_total", ch,
                                "Messages answered by the model or a command");
  s.failed = metrics_.counter("chatgate_messages_failed_total", ch,
                              "Messages answered with an error text or not delivered");
  s.duplicates = metrics_.counter("chatgate_messages_dropped_total", ch + ",reason=\"duplicate\"",
                                  "Messages dropped unanswered");
  s.queue_full = metrics_.counter("chatgate_messages_dropped_total", ch + ",reason=\"queue_full\"",
                                  "Messages dropped unanswered");
  s.backlog_full =
      metrics_.counter("chatgate_messages_dropped_total", ch + ",reason=\"conversation_backlog\"",
                       "Messages dropped unanswered");
  s.client_gone = metrics_.counter("chatgate_messages_dropped_total",
                                   ch + ",reason=\"client_gone\"", "Messages dropped unanswered");
  s.reply_latency = metrics_.histogram("chatgate_reply_latency_seconds", ch,
                                       "From accepting a message to its final reply");
  return series_.emplace(std::string(channel), s).first->second;
}

void Router::count_dropped(std::string_view channel, std::string_view reason) {
  if (double *c = series(channel).received) *c += 1;
  count("chatgate_messages_dropped_total", channel, fmt::format("reason=\"{}\"", reason));
}

void Router::count(std::string_view name, std::string_view channel, std::string_view extra) {
  const std::string labels = extra.empty() ? fmt::format("channel=\"{}\"", channel)
                                           : fmt::format("channel=\"{}\",{}", channel, extra);
  if (double *c = metrics_.counter(name, labels)) *c += 1;
}

void Router::cache_degraded(std::string_view what, int status) {
  // One warning per 10 s: a dead cache must not flood the log.
  const uint64_t now = loop_.now_ms();
  if (cache_warned_ms_ == 0 || now - cache_warned_ms_ >= 10000) {
    cache_warned_ms_ = now;
    spdlog::warn("router: cache '{}' unavailable for {} ({}); answering without it",
                 cache_ ? cache_->name() : std::string_view("none"), what, cg_strerror(status));
  }
  if (double *c = metrics_.counter("chatgate_cache_errors_total", fmt::format("op=\"{}\"", what))) {
    *c += 1;
  }
}

void Router::submit_durable(InboundMessage msg, cg_done_cb done, void *arg) {
  int rc = 0;
  if (durable_ && msg.channel != nullptr) {
    rc = durable_->enqueue(msg, done, arg);
    if (rc == 0) return;  // done comes from the queue
  } else {
    rc = submit(std::move(msg));
  }
  if (durable_answers_.empty() && loop_.defer(&Router::answer_durable, this) != 0) {
    // The loop is closing for good: no later turn to answer on, so at once,
    // and with what submit said (by now CG_ECLOSED: intake stopped long ago).
    done(arg, rc);
    return;
  }
  durable_answers_.push_back({done, arg, rc});
}

void Router::answer_durable(void *self) {
  auto *r = static_cast<Router *>(self);
  // A done may emit again: it then defers a new batch into the other vector.
  r->durable_answering_.swap(r->durable_answers_);
  for (const DurableAnswer &a : r->durable_answering_) a.done(a.arg, a.status);
  r->durable_answering_.clear();
}

int Router::submit(InboundMessage msg) {
  if (msg.channel == nullptr) return CG_EINVAL;
  msg.received_ms = loop_.now_ms();
  ChannelPort *channel = msg.channel;
  // One conversation that floods is refused early, at its own cap, before
  // it fills the queue every other conversation shares.
  conversation_key(*channel, msg.conversation_id, &key_buf_);
  auto [lane, fresh] = lanes_.try_emplace(key_buf_);
  const uint32_t cap = config_.max_conversation_backlog;
  if (cap != 0 && lane->second.backlog >= cap) {
    if (double *c = series(channel->name()).backlog_full) *c += 1;
    if (std::string more; log_due("conversation_backlog", &more)) {
      spdlog::warn(
          "router: conversation '{}' on '{}' has {} messages waiting "
          "(router.maxConversationBacklog); its new ones are refused, the channel told to "
          "retry{}",
          msg.conversation_id, channel->name(), cap, more);
    }
    return CG_EBUSY;
  }
  const int rc = queue_->push(std::move(msg));
  if (rc == 0) {
    if (double *c = series(channel->name()).received) *c += 1;
    lane->second.backlog++;
    return 0;
  }
  if (fresh) lanes_.erase(lane);
  if (rc == CG_EBUSY) {
    if (double *c = series(channel->name()).queue_full) *c += 1;
    if (std::string more; log_due("queue_full", &more)) {
      spdlog::warn("router: inbound queue full ({} messages); '{}' told to retry{}",
                   config_.max_queue, channel->name(), more);
    }
  }
  return rc;
}

bool Router::log_due(std::string_view cause, std::string *suffix) {
  return log_throttle_.due(cause, loop_.now_ms(), suffix);
}

void Router::conversation_key(const ChannelPort &channel, std::string_view conversation,
                              std::string *out) {
  out->clear();
  fmt::format_to(std::back_inserter(*out), "c:{}:{}", channel.name(), conversation);
}

void Router::consume(InboundMessage &&msg) {
  std::unique_ptr<Job> job;
  if (spare_.empty()) {
    job = std::make_unique<Job>();
  } else {
    job = std::move(spare_.back());
    spare_.pop_back();
  }
  job->router = this;
  job->msg = std::move(msg);
  if (!abandoned_tokens_.empty()) {
    if (auto it = abandoned_tokens_.find(job->msg.reply_token); it != abandoned_tokens_.end()) {
      abandoned_tokens_.erase(it);
      job->abandoned = true;
    }
  }
  job->answer_id = next_answer_id_++;
  conversation_key(*job->msg.channel, job->msg.conversation_id, &job->context_key);
  Job *raw = job.get();
  jobs_.emplace(raw, std::move(job));
  // submit made the lane, and it stays while this message counts in it.
  Lane &lane = lanes_.find(raw->context_key)->second;
  if (lane.running) {
    lane.waiting.push_back(raw);
    return;
  }
  lane.running = true;
  raw->start();
}

void Router::consume_queued(InboundMessage &&msg) {
  if (double *c = series(msg.channel->name()).received) *c += 1;
  conversation_key(*msg.channel, msg.conversation_id, &key_buf_);
  lanes_[key_buf_].backlog++;
  consume(std::move(msg));
}

bool Router::finish_queued(Job *job) {
  const InboundMessage &m = job->msg;
  if (job->requeue) {
    job->requeue = false;
    // The lane stays held: its next message waits for this one's retry.
    durable_->retry(m, [this, job](uint32_t deliveries) {
      if (jobs_.count(job) != 0) job->rerun(deliveries);
    });
    return false;
  }
  if (job->leave_pending) {
    durable_->leave(m);
  } else if (!job->dead_reason.empty()) {
    durable_->dead_letter(m, job->dead_reason);
  } else {
    durable_->ack(m, job->final_delivered ? DurableQueue::record_key(m) : std::string());
  }
  return true;
}

void Router::finish(Job *job) {
  // Called after each step; the job goes once it replied (or was dropped)
  // and nothing it started is still to call back.
  if (job->pending > 0) return;
  if (!job->replied && job->model_running) return;
  auto it = jobs_.find(job);
  if (it == jobs_.end()) return;
  if (job->queued()) {
    if (!finish_queued(job)) return;
  } else {
    queue_->ack();
  }
  std::unique_ptr<Job> owned = std::move(it->second);
  jobs_.erase(it);

  Job *next = nullptr;
  if (auto it = lanes_.find(job->context_key); it != lanes_.end()) {
    Lane &lane = it->second;
    lane.backlog--;
    if (lane.waiting.empty()) {
      lane.running = false;
      if (lane.backlog == 0) lanes_.erase(it);
    } else {
      next = lane.waiting.front();
      lane.waiting.pop_front();
    }
  }
  if (spare_.size() < kSpareJobs) {
    owned->reset();
    spare_.push_back(std::move(owned));
  }
  if (next != nullptr) next->start();
}

void Router::abandon(const ChannelPort *channel, std::string_view reply_token) {
  // A linear walk: a client leaving mid-answer is rare next to answers, and
  // a map from token to job would cost every message an entry.
  for (const auto &[job, owned] : jobs_) {
    if (job->msg.channel != channel || job->msg.reply_token != reply_token) continue;
    job->abandoned = true;
    if (job->model_running) job->cancel();
    return;
  }
  // Not consumed yet (still in the inbound queue): consume() checks.
  abandoned_tokens_.emplace(reply_token);
}

void Router::stop_intake() {
  queue_->close();
  if (durable_) durable_->stop();
}

bool Router::queue_joined() const { return !durable_ || durable_->joined(); }

size_t Router::in_flight() const {
  return queue_->in_flight() + (durable_ ? durable_->in_flight() : 0);
}

void Router::cancel_all() {
  cancelling_ = true;
  // A copy: a backend that breaks the rule and completes inside cancel
  // would otherwise erase from the map being walked.
  std::vector<Job *> jobs;
  jobs.reserve(jobs_.size());
  for (const auto &[job, owned] : jobs_) jobs.push_back(job);
  for (Job *job : jobs) {
    if (jobs_.count(job) != 0) job->cancel();
  }
}

}  // namespace cg
