#include "router/job.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <chatgate/cpp.hpp>
#include <chrono>

#include "base/loop.h"
#include "base/metrics.h"
#include "config/user_messages.h"
#include "host/cache.h"
#include "host/model_backend.h"
#include "router/durable_queue.h"
#include "router/recent_conversations.h"

namespace cg {
namespace {

constexpr auto sv = chatgate::view;
constexpr auto cs = chatgate::str;

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

// A spare job's buffers above this size are freed rather than kept.
constexpr size_t kKeepBufferBytes = size_t{16} * 1024;

}  // namespace

bool Router::Job::streaming() const {
  return msg.stream || (msg.channel->capabilities() & CG_CHANNEL_CAP_STREAMING) != 0;
}

void Router::Job::drop_abandoned() {
  if (double *c = router->series(channel()).client_gone) *c += 1;
  spdlog::debug("router: sender of message on '{}' for conversation '{}' left; dropped", channel(),
                msg.conversation_id);
  msg.channel->on_dropped(msg, "client_gone");
  router->finish(this);
}

void Router::Job::reset() {
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
  requeue = leave_pending = final_delivered = false;
  dead_reason.clear();
}

bool Router::Job::retry_or_dead(std::string_view why) {
  if (msg.deliveries < router->durable_->max_deliveries()) {
    requeue = true;
    return true;
  }
  dead_reason = fmt::format("{} (delivery {} of {})", why, msg.deliveries,
                            router->durable_->max_deliveries());
  return false;
}

void Router::Job::rerun(uint32_t deliveries) {
  msg.deliveries = deliveries;
  msg.received_ms = router->loop_.now_ms();
  turns.clear();
  req_turns.clear();
  context_text.clear();
  encoded.clear();
  answer.clear();
  call_id = timer_id = model_started_ms = 0;
  sequence = 0;
  pending = 0;
  model_running = timed_out = replied = false;
  requeue = leave_pending = final_delivered = false;
  dead_reason.clear();
  // A fresh answer: a streaming channel starts a new card for it.
  answer_id = router->next_answer_id_++;
  start();
}

void Router::Job::on_record(void *arg, int status, cg_str_t) {
  auto *job = static_cast<Job *>(arg);
  job->pending--;
  if (status == 0) {
    // Its reply went out before the instance that had it died: nothing to
    // send again, only the acknowledgement that did not happen.
    job->router->count("chatgate_messages_dropped_total", job->channel(),
                       "reason=\"already_answered\"");
    spdlog::info(
        "router: message {} on '{}' was answered before its instance stopped; "
        "acknowledged without answering again",
        job->msg.id, job->channel());
    job->router->finish(job);
    return;
  }
  if (status != CG_ENOENT) job->router->cache_degraded("reply record", status);
  job->dispatch();
}

void Router::Job::on_dedupe(void *arg, int status, cg_str_t) {
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

void Router::Job::start() {
  if (queued()) {
    // The queue deduped at the door; a redelivery may have been answered
    // already (its instance died before acknowledging): the reply record
    // tells.
    if (msg.deliveries > router->durable_->max_deliveries()) {
      dead_reason = fmt::format(
          "delivered {} times (max {}): each instance that took it stopped "
          "before answering",
          msg.deliveries, router->durable_->max_deliveries());
      reply(router->user_text(UserMsg::kFailed, msg.channel), CG_REPLY_ERROR);
      return;
    }
    if (msg.deliveries > 1 && router->cache_ != nullptr) {
      pending++;
      const int rc = router->cache_->get(DurableQueue::record_key(msg), &Job::on_record, this);
      if (rc == 0) return;
      pending--;
      router->cache_degraded("reply record", rc);
    }
    dispatch();
    return;
  }
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

void Router::Job::dispatch() {
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
    if (std::string more; router->log_due("backlog_deadline", &more)) {
      spdlog::warn(
          "router: message on '{}' for conversation '{}' waited over {} ms behind "
          "earlier ones; answered busy{}",
          channel(), msg.conversation_id, timeout, more);
    }
    router->count("chatgate_messages_dropped_total", channel(), "reason=\"backlog\"");
    reply(router->user_text(UserMsg::kBusy, msg.channel), CG_REPLY_ERROR);
    return;
  }
  const std::string cmd = command_of(msg.text);
  if (cmd == "/help") {
    reply(router->user_text(UserMsg::kHelp, msg.channel), 0);
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
    reply(router->user_text(UserMsg::kReset, msg.channel), 0);
    return;
  }
  if (!cmd.empty() && cmd.size() > 1 && cmd.find('/', 1) == std::string::npos) {
    const std::pair<std::string_view, std::string_view> values[] = {{"command", cmd}};
    reply(user_message_format(router->user_text(UserMsg::kUnknownCommand, msg.channel), values), 0);
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

void Router::Job::on_reset(void *arg, int status, cg_str_t) {
  auto *job = static_cast<Job *>(arg);
  job->pending--;
  if (status != 0 && status != CG_ENOENT) job->router->cache_degraded("reset", status);
  job->reply(job->router->user_text(UserMsg::kReset, job->msg.channel), 0);
}

void Router::Job::on_context(void *arg, int status, cg_str_t value) {
  auto *job = static_cast<Job *>(arg);
  job->pending--;
  if (status == 0 && job->router->cache_hits_ != nullptr) *job->router->cache_hits_ += 1;
  if (status == CG_ENOENT && job->router->cache_misses_ != nullptr) {
    *job->router->cache_misses_ += 1;
  }
  if (status == 0) {
    if (!job->router->codec_.decode(sv(value), &job->context_text, &job->turns)) {
      if (std::string more; job->router->log_due("context_unreadable", &more)) {
        spdlog::warn(
            "router: context of conversation '{}' on '{}' is unreadable; starting afresh{}",
            job->msg.conversation_id, job->channel(), more);
      }
    }
  } else if (status != CG_ENOENT) {
    job->router->cache_degraded("context load", status);
  }
  job->call_model();
}

void Router::Job::call_model() {
  if (router->cancelling_) {
    if (queued()) {
      // Left in the queue: the instance that takes its partition answers.
      leave_pending = true;
      router->finish(this);
      return;
    }
    // Never reached the model: no model error to count.
    reply(router->user_text(UserMsg::kRestarting, msg.channel), CG_REPLY_ERROR);
    return;
  }
  const uint32_t cap = router->config_.max_model_calls;
  if (cap != 0 && router->model_calls_ >= cap) {
    if (std::string more; router->log_due("model_calls_capped", &more)) {
      spdlog::warn(
          "router: {} model calls in flight (router.maxModelCalls); conversation '{}' "
          "on '{}' answered busy{}",
          cap, msg.conversation_id, channel(), more);
    }
    router->count("chatgate_model_calls_capped_total", channel(), "");
    reply(router->user_text(UserMsg::kBusy, msg.channel), CG_REPLY_ERROR);
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
    if (std::string more; router->log_due("model_refused", &more)) {
      spdlog::error(
          "router: model '{}' refused the request for conversation '{}' on '{}': {}{}{}{}",
          router->model_.name(), msg.conversation_id, channel(), cg_strerror(rc),
          why.empty() ? "" : ": ", why, more);
    }
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

void Router::Job::on_timeout(void *arg, uint64_t) {
  auto *job = static_cast<Job *>(arg);
  job->pending--;
  job->timer_id = 0;
  if (!job->model_running) return;
  job->timed_out = true;
  job->router->model_.cancel(job->call_id);
}

void Router::Job::cancel() {
  if (model_running) router->model_.cancel(call_id);
}

void Router::Job::on_delta(void *arg, cg_str_t text) {
  auto *job = static_cast<Job *>(arg);
  if (!job->model_running) return;
  job->answer.append(sv(text));
  if (job->streaming() && !job->abandoned) {
    job->send(job->answer, CG_REPLY_PARTIAL);
  }
}

void Router::Job::on_model_done(void *arg, int status, cg_str_t text) {
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
    if (std::string more;
        r->log_due(status == CG_ETIMEDOUT ? "model_timeout" : "model_failed", &more)) {
      spdlog::error("router: model '{}' failed for conversation '{}' on '{}': {} ({}){}{}{}",
                    r->model_.name(), job->msg.conversation_id, job->channel(), cg_strerror(status),
                    cg_err_name(status), text.len ? ": " : "", sv(text), more);
    }
    job->model_failed(status);
    return;
  }
  job->answer.assign(sv(text));
  // The answer goes out once the turn is stored: a user who answers at
  // once may land on another instance sharing the cache, which must see
  // this turn. One cache round trip, next to a model's seconds.
  if (!job->store_turn()) job->reply(job->answer, 0);
}

void Router::Job::model_failed(int status) {
  router->count("chatgate_model_errors_total", channel(),
                fmt::format("cause=\"{}\"", cg_err_name(status)));
  if (queued()) {
    if (status == CG_ECANCELED && router->cancelling_) {
      leave_pending = true;  // shutting down: the next owner answers it
      router->finish(this);
      return;
    }
    if (retry_or_dead(fmt::format("model failed: {}", cg_strerror(status)))) {
      router->finish(this);
      return;
    }
  }
  const UserMsg which = status == CG_ETIMEDOUT   ? UserMsg::kTimeout
                        : status == CG_EBUSY     ? UserMsg::kBusy
                        : status == CG_ECANCELED ? UserMsg::kRestarting
                                                 : UserMsg::kFailed;
  const std::string_view text = router->user_text(which, msg.channel);
  reply(text, CG_REPLY_ERROR);
}

bool Router::Job::store_turn() {
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

void Router::Job::on_stored(void *arg, int status, cg_str_t) {
  auto *job = static_cast<Job *>(arg);
  job->pending--;
  if (status != 0) job->router->cache_degraded("context store", status);
  // A failed store still answers: the user loses a turn of memory, not
  // the answer.
  job->reply(job->answer, 0);
}

void Router::Job::send(std::string_view text, uint32_t flags) {
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
  r.delivery = msg.deliveries > 0 ? msg.deliveries : 1;
  pending++;
  const bool final = (flags & CG_REPLY_FINAL) != 0;
  const int rc = msg.channel->send(r, final ? &Job::on_final_sent : &Job::on_sent, this);
  if (rc != 0) {
    pending--;
    if (final && queued() && dead_reason.empty()) {
      (void)retry_or_dead(fmt::format("reply refused: {}", cg_strerror(rc)));
    }
    if (std::string more; router->log_due("channel_refused", &more)) {
      spdlog::error("router: channel '{}' refused a reply for conversation '{}': {}{}", channel(),
                    msg.conversation_id, cg_strerror(rc), more);
    }
    if (flags & CG_REPLY_FINAL) {
      if (double *c = router->series(channel()).failed) *c += 1;
    }
  }
}

void Router::Job::reply(std::string_view text, uint32_t extra_flags) {
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

void Router::Job::on_final_sent(void *arg, int status) {
  auto *job = static_cast<Job *>(arg);
  if (job->queued()) {
    // Acknowledged only once the platform took the reply; else tried again.
    if (status == 0) {
      job->final_delivered = true;
    } else if (job->dead_reason.empty()) {
      (void)job->retry_or_dead(fmt::format("reply not delivered: {}", cg_strerror(status)));
    }
  }
  on_sent(arg, status);
}

void Router::Job::on_sent(void *arg, int status) {
  auto *job = static_cast<Job *>(arg);
  job->pending--;
  if (status != 0) {
    if (std::string more; job->router->log_due("channel_undelivered", &more)) {
      spdlog::error("router: channel '{}' failed to deliver a reply for conversation '{}': {}{}",
                    job->channel(), job->msg.conversation_id, cg_strerror(status), more);
    }
  }
  job->router->finish(job);
}

}  // namespace cg
