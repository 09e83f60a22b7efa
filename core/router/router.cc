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
#include "router/recent_conversations.h"

namespace cg {
namespace {

constexpr auto sv = chatgate::view;
constexpr auto cs = chatgate::str;

constexpr std::string_view kHelpText =
    "Commands:\n"
    "/reset - forget this conversation and start over\n"
    "/help - show this help";
constexpr std::string_view kResetText = "Context cleared. Let's start over.";
constexpr std::string_view kBusyText = "The model is busy right now, please try again in a moment.";
constexpr std::string_view kTimeoutText = "The model took too long to answer, please try again.";
constexpr std::string_view kFailedText =
    "Sorry, something went wrong while answering. Please try again.";
constexpr std::string_view kShutdownText = "The bot is restarting, please send that again shortly.";
constexpr std::string_view kSlowDownText =
    "You are sending messages faster than I can answer. Please slow down and try again in a "
    "moment.";

std::string_view trim(std::string_view s) {
  while (!s.empty() &&
         (s.front() == ' ' || s.front() == '\t' || s.front() == '\n' || s.front() == '\r')) {
    s.remove_prefix(1);
  }
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\t' || s.back() == '\n' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

// The command word of a message ("/reset"), lower-cased, or empty.
std::string command_of(std::string_view text) {
  text = trim(text);
  if (text.empty() || text.front() != '/') return {};
  const size_t end = text.find_first_of(" \t\n");
  std::string cmd(text.substr(0, end));
  std::transform(cmd.begin(), cmd.end(), cmd.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return cmd;
}

// Finished jobs kept for reuse; enough for the usual in-flight count.
constexpr size_t kSpareJobs = 256;
// A spare job's buffers above this size are freed rather than kept.
constexpr size_t kKeepBufferBytes = size_t{16} * 1024;

}  // namespace

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

  std::string_view channel() const { return msg.channel->name(); }
  bool streaming() const {
    return msg.stream || (msg.channel->capabilities() & CG_CHANNEL_CAP_STREAMING) != 0;
  }

  // The sender left before this message was answered: drop it quietly.
  void drop_abandoned() {
    if (double *c = router->series(channel()).client_gone) *c += 1;
    spdlog::debug("router: sender of message on '{}' for conversation '{}' left; dropped",
                  channel(), msg.conversation_id);
    msg.channel->on_dropped(msg, "client_gone");
    router->finish(this);
  }

  // Back to a blank job that keeps its buffers' capacity.
  void reset() {
    // msg is move-assigned by the next consume(); only the buffers kept for
    // reuse need clearing here.
    context_key.clear();
    turns.clear();
    req_turns.clear();
    // Kept for the next job, unless one long conversation made them large.
    for (std::string *buf : {&context_text, &encoded, &answer}) {
      if (buf->capacity() > kKeepBufferBytes) {
        std::string().swap(*buf);
      } else {
        buf->clear();
      }
    }
    answer_id = call_id = timer_id = model_started_ms = 0;
    sequence = 0;
    pending = 0;
    model_running = timed_out = replied = abandoned = false;
  }

  // ---- cache calls: each returns false when the cache refused at once ----

  static void on_dedupe(void *arg, int status, cg_str_t) {
    auto *job = static_cast<Job *>(arg);
    job->pending--;
    if (status == CG_EEXIST) {
      if (double *c = job->router->series(job->channel()).duplicates) *c += 1;
      spdlog::debug("router: duplicate message {} on '{}' dropped", job->msg.id, job->channel());
      job->msg.channel->on_dropped(job->msg, "duplicate");
      job->router->finish(job);
      return;
    }
    if (status != 0) job->router->cache_degraded("dedupe", status);
    job->dispatch();
  }

  void start() {
    if (!msg.dedupe_key.empty() && router->cache_ != nullptr) {
      const std::string key = fmt::format("d:{}:{}", channel(), msg.dedupe_key);
      pending++;
      const int rc = router->cache_->set_nx(key, "1", router->config_.dedupe_ttl_seconds * 1000,
                                            &Job::on_dedupe, this);
      if (rc == 0) return;
      pending--;
      router->cache_degraded("dedupe", rc);
    }
    dispatch();
  }

  void dispatch() {
    if (abandoned) {
      drop_abandoned();
      return;
    }
    if (router->rate_limited(*this)) return;
    // A message that waited behind its conversation's earlier ones for longer
    // than a model call may take is answered "busy" at once: a hung model
    // must not let one conversation's backlog hold the queue for hours.
    const uint64_t timeout = router->config_.model_timeout_ms;
    if (timeout > 0 && router->loop_.now_ms() - msg.received_ms > timeout) {
      spdlog::warn(
          "router: message on '{}' for conversation '{}' waited over {} ms behind "
          "earlier ones; answered busy",
          channel(), msg.conversation_id, timeout);
      router->count("chatgate_messages_dropped_total", channel(), "reason=\"backlog\"");
      reply(kBusyText, CG_REPLY_ERROR);
      return;
    }
    const std::string cmd = command_of(msg.text);
    if (cmd == "/help") {
      reply(kHelpText, 0);
      return;
    }
    if (cmd == "/reset") {
      if (router->cache_ != nullptr) {
        pending++;
        const int rc = router->cache_->del(context_key, &Job::on_reset, this);
        if (rc == 0) return;
        pending--;
        router->cache_degraded("reset", rc);
      }
      reply(kResetText, 0);
      return;
    }
    if (!cmd.empty() && cmd.size() > 1 && cmd.find('/', 1) == std::string::npos) {
      reply(fmt::format("Unknown command {}. {}", cmd, kHelpText), 0);
      return;
    }
    if (router->cache_ != nullptr && router->config_.context_turns > 0) {
      pending++;
      const int rc = router->cache_->get(context_key, &Job::on_context, this);
      if (rc == 0) return;
      pending--;
      router->cache_degraded("context load", rc);
    }
    call_model();
  }

  static void on_reset(void *arg, int status, cg_str_t) {
    auto *job = static_cast<Job *>(arg);
    job->pending--;
    if (status != 0 && status != CG_ENOENT) job->router->cache_degraded("reset", status);
    job->reply(kResetText, 0);
  }

  static void on_context(void *arg, int status, cg_str_t value) {
    auto *job = static_cast<Job *>(arg);
    job->pending--;
    if (status == 0 && job->router->cache_hits_ != nullptr) *job->router->cache_hits_ += 1;
    if (status == CG_ENOENT && job->router->cache_misses_ != nullptr) {
      *job->router->cache_misses_ += 1;
    }
    if (status == 0) {
      if (!job->router->codec_.decode(sv(value), &job->context_text, &job->turns)) {
        spdlog::warn("router: context of conversation '{}' on '{}' is unreadable; starting afresh",
                     job->msg.conversation_id, job->channel());
      }
    } else if (status != CG_ENOENT) {
      job->router->cache_degraded("context load", status);
    }
    job->call_model();
  }

  // ---- the model ----

  void call_model() {
    if (router->cancelling_) {
      // Never reached the model: no model error to count.
      reply(kShutdownText, CG_REPLY_ERROR);
      return;
    }
    const uint32_t cap = router->config_.max_model_calls;
    if (cap != 0 && router->model_calls_ >= cap) {
      spdlog::warn(
          "router: {} model calls in flight (router.maxModelCalls); conversation '{}' "
          "on '{}' answered busy",
          cap, msg.conversation_id, channel());
      router->count("chatgate_model_calls_capped_total", channel(), "");
      reply(kBusyText, CG_REPLY_ERROR);
      return;
    }
    req_turns.clear();
    req_turns.reserve(turns.size() * 2 + 1);
    for (const ContextTurn &t : turns) {
      req_turns.push_back({sizeof(cg_model_turn_t), CG_ROLE_USER, cs(t.user)});
      req_turns.push_back({sizeof(cg_model_turn_t), CG_ROLE_ASSISTANT, cs(t.assistant)});
    }
    req_turns.push_back({sizeof(cg_model_turn_t), CG_ROLE_USER, cs(msg.text)});
    cg_model_request_t req{};
    req.struct_size = sizeof req;
    req.turn_count = static_cast<uint32_t>(req_turns.size());
    req.turns = req_turns.data();
    req.channel = cs(channel());
    req.conversation_id = cs(msg.conversation_id);
    req.user_id = cs(msg.sender_id);
    req.stream = streaming() ? 1 : 0;
    req.timeout_ms = router->config_.model_timeout_ms;
    cg_model_sink_t sink{sizeof(cg_model_sink_t), this, &Job::on_delta, &Job::on_model_done};
    model_started_ms = router->loop_.now_ms();
    pending++;
    std::string why;
    const int rc = router->model_.generate(req, sink, &call_id, &why);
    if (rc != 0) {
      pending--;
      spdlog::error("router: model '{}' refused the request for conversation '{}' on '{}': {}{}{}",
                    router->model_.name(), msg.conversation_id, channel(), cg_strerror(rc),
                    why.empty() ? "" : ": ", why);
      model_failed(rc);
      return;
    }
    model_running = true;
    router->model_calls_++;
    if (router->model_calls_gauge_ != nullptr) *router->model_calls_gauge_ = router->model_calls_;
    if (router->config_.model_timeout_ms > 0) {
      pending++;
      if (router->loop_.timer_start(router->config_.model_timeout_ms, 0, &Job::on_timeout, this,
                                    &timer_id) != 0) {
        pending--;
      }
    }
  }

  static void on_timeout(void *arg, uint64_t) {
    auto *job = static_cast<Job *>(arg);
    job->pending--;
    job->timer_id = 0;
    if (!job->model_running) return;
    job->timed_out = true;
    job->router->model_.cancel(job->call_id);
  }

  void cancel() {
    if (model_running) router->model_.cancel(call_id);
  }

  static void on_delta(void *arg, cg_str_t text) {
    auto *job = static_cast<Job *>(arg);
    if (!job->model_running) return;
    job->answer.append(sv(text));
    if (job->streaming() && !job->abandoned) {
      job->send(job->answer, CG_REPLY_PARTIAL);
    }
  }

  static void on_model_done(void *arg, int status, cg_str_t text) {
    auto *job = static_cast<Job *>(arg);
    job->pending--;
    job->model_running = false;
    Router *router = job->router;
    router->model_calls_--;
    if (router->model_calls_gauge_ != nullptr) *router->model_calls_gauge_ = router->model_calls_;
    if (job->timer_id != 0 && job->router->loop_.timer_stop(job->timer_id) == 0) job->pending--;
    job->timer_id = 0;
    Router *r = job->router;
    const double secs = static_cast<double>(r->loop_.now_ms() - job->model_started_ms) / 1000.0;
    if (r->model_latency_ != nullptr) r->model_latency_->observe(secs);
    if (job->abandoned) {
      job->drop_abandoned();
      return;
    }
    if (status != 0) {
      if (job->timed_out) status = CG_ETIMEDOUT;
      spdlog::error("router: model '{}' failed for conversation '{}' on '{}': {} ({}){}{}",
                    r->model_.name(), job->msg.conversation_id, job->channel(), cg_strerror(status),
                    cg_err_name(status), text.len ? ": " : "", sv(text));
      job->model_failed(status);
      return;
    }
    job->answer.assign(sv(text));
    // The answer goes out once the turn is stored: a user who answers at
    // once may land on another instance sharing the cache, which must see
    // this turn. One cache round trip, next to a model's seconds.
    if (!job->store_turn()) job->reply(job->answer, 0);
  }

  void model_failed(int status) {
    router->count("chatgate_model_errors_total", channel(),
                  fmt::format("cause=\"{}\"", cg_err_name(status)));
    const std::string_view text = status == CG_ETIMEDOUT   ? kTimeoutText
                                  : status == CG_EBUSY     ? kBusyText
                                  : status == CG_ECANCELED ? kShutdownText
                                                           : kFailedText;
    reply(text, CG_REPLY_ERROR);
  }

  // True when the store is under way (on_stored then replies).
  bool store_turn() {
    if (router->cache_ == nullptr || router->config_.context_turns == 0) return false;
    turns.push_back({msg.text, answer});
    ContextCodec::encode(turns, router->config_.context_turns, &encoded);
    pending++;
    const int rc = router->cache_->set(
        context_key, encoded, router->config_.context_ttl_seconds * 1000, &Job::on_stored, this);
    if (rc != 0) {
      pending--;
      router->cache_degraded("context store", rc);
      return false;
    }
    return true;
  }

  static void on_stored(void *arg, int status, cg_str_t) {
    auto *job = static_cast<Job *>(arg);
    job->pending--;
    if (status != 0) job->router->cache_degraded("context store", status);
    // A failed store still answers: the user loses a turn of memory, not
    // the answer.
    job->reply(job->answer, 0);
  }

  // ---- replies ----

  void send(std::string_view text, uint32_t flags) {
    cg_reply_t r{};
    r.struct_size = sizeof r;
    r.format = CG_REPLY_TEXT;
    r.flags = flags;
    r.sequence = ++sequence;
    r.conversation_id = cs(msg.conversation_id);
    r.conversation_type = msg.conversation_type;
    r.in_reply_to = cs(msg.id);
    r.reply_token = cs(msg.reply_token);
    r.recipient_id = cs(msg.sender_id);
    r.text = cs(text);
    r.answer_id = answer_id;
    pending++;
    const int rc = msg.channel->send(r, &Job::on_sent, this);
    if (rc != 0) {
      pending--;
      spdlog::error("router: channel '{}' refused a reply for conversation '{}': {}", channel(),
                    msg.conversation_id, cg_strerror(rc));
      if (flags & CG_REPLY_FINAL) {
        if (double *c = router->series(channel()).failed) *c += 1;
      }
    }
  }

  void reply(std::string_view text, uint32_t extra_flags) {
    replied = true;
    Router *r = router;
    ChannelSeries &s = r->series(channel());
    if (double *c = (extra_flags & CG_REPLY_ERROR) ? s.failed : s.answered) *c += 1;
    const uint64_t latency_ms = r->loop_.now_ms() - msg.received_ms;
    if (s.reply_latency != nullptr) {
      s.reply_latency->observe(static_cast<double>(latency_ms) / 1000.0);
    }
    if (r->recent_) {
      const auto unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
      r->recent_->record(channel(), msg.conversation_id, msg.text, text,
                         (extra_flags & CG_REPLY_ERROR) != 0, latency_ms, unix_ms, turns.size());
    }
    send(text, CG_REPLY_FINAL | extra_flags);
    r->finish(this);
  }

  static void on_sent(void *arg, int status) {
    auto *job = static_cast<Job *>(arg);
    job->pending--;
    if (status != 0) {
      spdlog::error("router: channel '{}' failed to deliver a reply for conversation '{}': {}",
                    job->channel(), job->msg.conversation_id, cg_strerror(status));
    }
    job->router->finish(job);
  }
};

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
  spdlog::info("router: sender '{}' on '{}' over the rate limit; told to slow down", m.sender_id,
               job.channel());
  job.replied = true;
  job.send(kSlowDownText, CG_REPLY_FINAL | CG_REPLY_ERROR);
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
  if (!(config_.rate_limits == config.rate_limits)) {
    config_.rate_limits = config.rate_limits;
    limiters_.clear();  // made again from the new limits, full
  }
  if (recent_) recent_->set_keep_content(keep_content);
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
               Metrics &metrics)
    : loop_(loop),
      config_(config),
      model_(model),
      cache_(cache),
      metrics_(metrics),
      queue_(std::make_unique<MemoryInboundQueue>(loop, config.max_queue)) {
  queue_->set_consumer([this](InboundMessage &&m) { consume(std::move(m)); });
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

int Router::submit(InboundMessage msg) {
  if (msg.channel == nullptr) return CG_EINVAL;
  msg.received_ms = loop_.now_ms();
  ChannelPort *channel = msg.channel;
  const int rc = queue_->push(std::move(msg));
  if (rc == 0) {
    if (double *c = series(channel->name()).received) *c += 1;
  } else if (rc == CG_EBUSY) {
    if (double *c = series(channel->name()).queue_full) *c += 1;
    spdlog::warn("router: inbound queue full ({} messages); '{}' told to retry", config_.max_queue,
                 channel->name());
  }
  return rc;
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
  fmt::format_to(std::back_inserter(job->context_key), "c:{}:{}", job->msg.channel->name(),
                 job->msg.conversation_id);
  Job *raw = job.get();
  jobs_.emplace(raw, std::move(job));
  auto [lane, idle] = lanes_.try_emplace(raw->context_key);
  if (!idle) {
    lane->second.push_back(raw);
    return;
  }
  raw->start();
}

void Router::finish(Job *job) {
  // Called after each step; the job goes once it replied (or was dropped)
  // and nothing it started is still to call back.
  if (job->pending > 0) return;
  if (!job->replied && job->model_running) return;
  auto it = jobs_.find(job);
  if (it == jobs_.end()) return;
  std::unique_ptr<Job> owned = std::move(it->second);
  jobs_.erase(it);
  queue_->ack();

  Job *next = nullptr;
  if (auto lane = lanes_.find(job->context_key); lane != lanes_.end()) {
    if (lane->second.empty()) {
      lanes_.erase(lane);
    } else {
      next = lane->second.front();
      lane->second.pop_front();
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

void Router::stop_intake() { queue_->close(); }

size_t Router::in_flight() const { return queue_->in_flight(); }

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
