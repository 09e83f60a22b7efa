#include "router/durable_queue.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <chatgate/cpp.hpp>
#include <random>

#include "base/loop.h"
#include "base/metrics.h"
#include "host/channel_port.h"
#include "host/queue.h"
#include "router/durable_queue_internal.h"
#include "router/queue_codec.h"

namespace cg {
namespace {

constexpr auto sv = chatgate::view;
constexpr uint64_t kUnsentRetryMs = 500;
constexpr uint64_t kStatsIntervalMs = 5000;
constexpr uint64_t kRetryFirstMs = 500;
constexpr uint64_t kRetryCapMs = 5000;
// chatgate_queue_enqueued_total's results, in DurableQueue::enqueued's order.
constexpr std::array<std::string_view, 4> kEnqueueResults = {"ok", "duplicate", "full",
                                                             "unavailable"};
// Entries one ack script takes at the most (redis.so takes up to 1,000).
constexpr size_t kAckBatchMax = 500;

using State = DurableQueueState;

// FNV-1a: the same partition for a conversation on every instance and
// build (std::hash promises neither).
uint32_t partition_of(std::string_view channel, std::string_view conversation, uint32_t n) {
  uint64_t h = 14695981039346656037ULL;
  auto mix = [&](std::string_view s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 1099511628211ULL;
    }
  };
  mix(channel);
  mix("\n");
  mix(conversation);
  return static_cast<uint32_t>(h % n);
}

std::string make_name() {
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  std::random_device rd;
  return fmt::format("{}-{}-{:08x}", host, getpid(), rd());
}

}  // namespace

DurableQueue::DurableQueue(Loop &loop, Queue &queue, Metrics &metrics, const QueueConfig &config,
                           uint64_t dedupe_ttl_ms, size_t max_in_flight, Resolve resolve,
                           Deliver deliver)
    : loop_(loop),
      queue_(queue),
      metrics_(metrics),
      config_(config),
      dedupe_ttl_ms_(dedupe_ttl_ms),
      max_in_flight_(std::max<size_t>(max_in_flight, 1)),
      resolve_(std::move(resolve)),
      deliver_(std::move(deliver)),
      me_(make_name()),
      consumer_(me_ + "-0"),
      parts_(config.partitions) {
  log_throttle_.attach(loop_, [](std::string_view cause, uint64_t held, int, std::string_view) {
    spdlog::warn("queue: {} more '{}' warnings were held back, none since", held, cause);
  });
  owned_gauge_ = metrics_.gauge("chatgate_queue_partitions_owned", "",
                                "Durable queue partitions this instance reads");
  members_gauge_ = metrics_.gauge("chatgate_queue_members", "",
                                  "Live instances sharing the durable queue, as last seen");
  length_ = metrics_.gauge("chatgate_queue_length", "",
                           "Entries in the durable queue not yet answered (all partitions)");
  pending_ = metrics_.gauge("chatgate_queue_pending", "",
                            "Entries read by an instance and not yet acknowledged");
  oldest_ = metrics_.gauge("chatgate_queue_oldest_pending_seconds", "",
                           "Age of the oldest pending entry; 0: none");
  dead_ = metrics_.gauge("chatgate_queue_dead_letters", "", "Entries in the dead-letter stream");
  claimed_ = metrics_.counter(
      "chatgate_queue_claimed_total", "",
      "Entries claimed from an instance that died, or back after an answer from the store was "
      "lost");
  dead_lettered_ = metrics_.counter("chatgate_queue_dead_lettered_total", "",
                                    "Entries this instance moved to the dead letters");
  retried_ = metrics_.counter("chatgate_queue_retries_total", "",
                              "Entries tried again after a model or delivery failure");
  acked_ = metrics_.counter("chatgate_queue_acked_total", "",
                            "Entries answered and acknowledged by this instance");
  for (size_t i = 0; i < kEnqueueResults.size(); ++i) {
    enqueued_[i] = metrics_.counter("chatgate_queue_enqueued_total",
                                    fmt::format("result=\"{}\"", kEnqueueResults[i]),
                                    "Messages channels handed to the durable queue, by result");
  }
}

DurableQueue::~DurableQueue() {
  for (uint64_t *t : {&tick_timer_, &stats_timer_, &read_timer_, &pending_timer_, &fast_timer_}) {
    if (*t != 0) loop_.timer_stop(*t);
  }
  for (auto &[call, owned] : waiting_) loop_.timer_stop(call->timer_id);
}

bool DurableQueue::warn_due(std::string_view cause, std::string *suffix) {
  return log_throttle_.due(cause, loop_.now_ms(), suffix);
}

void DurableQueue::start() {
  started_ = true;
  spdlog::info("queue: durable queue on '{}' ({} partitions, lease {} ms), this instance is {}",
               queue_.name(), config_.partitions, config_.lease_ms, me_);
  const uint64_t tick = std::max<uint64_t>(config_.lease_ms / 3, 50);
  fast_until_ms_ = loop_.now_ms() + config_.lease_ms;
  loop_.timer_start(0, tick, &DurableQueue::on_tick, this, &tick_timer_);
  loop_.timer_start(kStatsIntervalMs / 5, kStatsIntervalMs, &DurableQueue::on_stats_timer, this,
                    &stats_timer_);
}

// ---- ingress ----------------------------------------------------------------

std::string DurableQueue::record_key(const InboundMessage &msg) {
  return fmt::format("r:{}:{}", msg.channel->name(),
                     msg.dedupe_key.empty() ? msg.id : msg.dedupe_key);
}

int DurableQueue::enqueued(int status) {
  const size_t result = status == 0 ? 0 : status == CG_EEXIST ? 1 : status == CG_EBUSY ? 2 : 3;
  if (double *m = enqueued_[result]) *m += 1;
  if (result < 2) return status;
  if (std::string more; warn_due(kEnqueueResults[result], &more)) {
    spdlog::warn(
        "queue: '{}' could not keep a message ({}); the channel tells the platform to "
        "retry{}",
        queue_.name(), cg_strerror(status), more);
  }
  return status == CG_EBUSY ? CG_EBUSY : CG_EUNAVAIL;
}

int DurableQueue::enqueue(const InboundMessage &msg, cg_done_cb done, void *arg) {
  if (stopping_) return CG_ECLOSED;
  const std::string_view channel = msg.channel->name();
  const uint32_t p = partition_of(channel, msg.conversation_id, config_.partitions);
  queue_message_encode(msg, channel, &payload_buf_);
  const std::string dedupe =
      msg.dedupe_key.empty() ? std::string() : fmt::format("qd:{}:{}", channel, msg.dedupe_key);
  std::unique_ptr<Call> call = make_call(0);
  call->done = done;
  call->arg = arg;
  const int rc = queue_.enqueue(
      p, dedupe, dedupe_ttl_ms_, payload_buf_,
      [](void *a, int status, cg_str_t) {
        std::unique_ptr<Call> c(static_cast<Call *>(a));
        c->q->calls_--;
        c->done(c->arg, c->q->enqueued(status));
      },
      call.get());
  if (rc != 0) return enqueued(rc);
  calls_++;
  (void)call.release();
  return 0;
}

// ---- finishing ---------------------------------------------------------------

void DurableQueue::ack(const InboundMessage &msg, std::string_view record_key) {
  const uint32_t p = msg.queue_partition;
  if (acking_.size() < parts_.size()) acking_.resize(parts_.size());
  std::unique_ptr<Call> &batch = acking_[p];
  if (!batch) batch = make_call(p);
  batch->ids.push_back(msg.queue_id);
  batch->records.emplace_back(record_key);
  // One script a partition a loop turn rather than one a message: the
  // acknowledgement is Redis's largest cost per message.
  if (batch->ids.size() >= kAckBatchMax) {
    std::unique_ptr<Call> full = std::move(batch);
    send_finish(std::move(full));
    return;
  }
  if (!acks_scheduled_) {
    if (loop_.defer(&DurableQueue::flush_acks, this) == 0) {
      acks_scheduled_ = true;
    } else {
      flush_acks(this);  // the loop is closing: now or never
    }
  }
}

void DurableQueue::flush_acks(void *self) {
  auto *q = static_cast<DurableQueue *>(self);
  q->acks_scheduled_ = false;
  for (std::unique_ptr<Call> &batch : q->acking_) {
    if (!batch) continue;
    std::unique_ptr<Call> c = std::move(batch);
    q->send_finish(std::move(c));
  }
}

void DurableQueue::dead_letter(const InboundMessage &msg, std::string_view reason) {
  std::string payload;
  queue_message_encode(msg, msg.channel->name(), &payload);
  spdlog::warn(
      "queue: message {} on '{}' (conversation '{}') moved to the dead letters after {} "
      "deliveries: {}",
      msg.id, msg.channel->name(), msg.conversation_id, msg.deliveries, reason);
  dead_letter_entry(msg.queue_partition, msg.queue_id, std::move(payload), std::string(reason));
}

void DurableQueue::dead_letter_entry(uint32_t p, std::string id, std::string payload,
                                     std::string reason) {
  std::unique_ptr<Call> call = make_call(p);
  call->dead = true;
  call->id = std::move(id);
  call->payload = std::move(payload);
  call->reason = std::move(reason);
  send_finish(std::move(call));
}

void DurableQueue::send_finish(std::unique_ptr<Call> call) {
  const int rc =
      call->dead
          ? queue_.dead_letter(call->partition, call->id, call->payload, call->reason,
                               &DurableQueue::on_finished, call.get())
          : queue_.ack(call->partition, call->ids, call->records, config_.record_ttl_seconds * 1000,
                       &DurableQueue::on_finished, call.get());
  if (rc == 0) {
    (void)call.release();
    return;
  }
  unsent_.push_back(std::move(call));
  if (pending_timer_ == 0) {
    loop_.timer_start(kUnsentRetryMs, 0, &DurableQueue::on_pending_timer, this, &pending_timer_);
  }
}

void DurableQueue::on_pending_timer(void *self, uint64_t) {
  auto *q = static_cast<DurableQueue *>(self);
  q->pending_timer_ = 0;
  std::vector<std::unique_ptr<Call>> calls = std::move(q->unsent_);
  q->unsent_.clear();
  for (auto &c : calls) q->send_finish(std::move(c));
}

void DurableQueue::on_finished(void *arg, int status, cg_str_t) {
  std::unique_ptr<Call> c(static_cast<Call *>(arg));
  DurableQueue *q = c->q;
  if (status != 0) {
    // Kept and sent again: an entry left pending would be answered again
    // by whoever takes the partition next.
    if (std::string more; q->warn_due("ack", &more)) {
      spdlog::warn("queue: acknowledging an entry failed ({}); trying again{}", cg_strerror(status),
                   more);
    }
    q->unsent_.push_back(std::move(c));
    if (q->pending_timer_ == 0) {
      q->loop_.timer_start(kUnsentRetryMs, 0, &DurableQueue::on_pending_timer, q,
                           &q->pending_timer_);
    }
    return;
  }
  const size_t entries = c->dead ? 1 : c->ids.size();
  if (double *m = c->dead ? q->dead_lettered_ : q->acked_) *m += static_cast<double>(entries);
  if (c->dead) {
    q->entry_done(c->partition, c->id);
  } else {
    for (const std::string &id : c->ids) q->entry_done(c->partition, id);
  }
}

void DurableQueue::retry(const InboundMessage &msg, std::function<void(uint32_t)> again) {
  std::unique_ptr<Call> call = make_call(msg.queue_partition);
  call->deliveries = msg.deliveries + 1;
  call->again = std::move(again);
  if (retried_ != nullptr) *retried_ += 1;
  calls_++;  // until `again` runs
  Call *raw = call.get();
  const int rc = queue_.retry(
      raw->partition, msg.queue_id, consumer_,
      [](void *a, int status, cg_str_t value) {
        std::unique_ptr<Call> c(static_cast<Call *>(a));
        if (status == 0) {
          const std::string_view v = sv(value);
          std::from_chars(v.data(), v.data() + v.size(), c->deliveries);
        }
        DurableQueue *q = c->q;
        q->wait_then_again(std::move(c));
      },
      raw);
  if (rc == 0) {
    (void)call.release();
  } else {
    wait_then_again(std::move(call));  // counted here only; the store counts on the next try
  }
}

void DurableQueue::wait_then_again(std::unique_ptr<Call> call) {
  const uint32_t d = call->deliveries;
  const uint64_t ms =
      std::min<uint64_t>(kRetryCapMs, kRetryFirstMs << std::min<uint32_t>(d > 2 ? d - 2 : 0, 8));
  Call *raw = call.get();
  // Owned here while it waits: a wait the loop's end cuts short is freed
  // with the queue, not leaked.
  waiting_.emplace(raw, std::move(call));
  const int rc = loop_.timer_start(
      ms, 0,
      [](void *a, uint64_t) {
        auto *c = static_cast<Call *>(a);
        DurableQueue *q = c->q;
        auto it = q->waiting_.find(c);
        if (it == q->waiting_.end()) return;
        std::unique_ptr<Call> owned = std::move(it->second);
        q->waiting_.erase(it);
        q->calls_--;
        owned->again(owned->deliveries);
      },
      raw, &raw->timer_id);
  if (rc != 0) {
    waiting_.erase(raw);
    calls_--;  // the loop is closing: the entry stays pending for whoever comes next
  }
}

std::unique_ptr<DurableQueue::Call> DurableQueue::make_call(uint32_t partition) {
  auto call = std::make_unique<Call>();
  call->q = this;
  call->partition = partition;
  return call;
}

void DurableQueue::entry_done(uint32_t p, const std::string &id) {
  running_.erase(running_key(p, id));
  if (in_flight_ > 0) in_flight_--;
  Partition &part = parts_[p];
  if (part.in_flight > 0) part.in_flight--;
  if (part.state == State::kReleasing) maybe_release(p);
  maybe_read();
}

void DurableQueue::stop() {
  if (stopping_) return;
  stopping_ = true;
  for (uint64_t *t : {&tick_timer_, &stats_timer_, &fast_timer_}) {
    if (*t != 0) loop_.timer_stop(*t);
    *t = 0;
  }
  to_take_.clear();
  for (uint32_t p = 0; p < parts_.size(); ++p) {
    State &s = parts_[p].state;
    if (s == State::kOwned || s == State::kClaiming) s = State::kReleasing;
    maybe_release(p);
  }
  // Leave the members at once, so the others' shares grow now rather than
  // when this heartbeat runs out.
  if (queue_.members(
          me_, 1, [](void *a, int, cg_str_t) { static_cast<DurableQueue *>(a)->calls_--; }, this) ==
      0) {
    calls_++;
  }
  set_owned_gauge();
}

size_t DurableQueue::in_flight() const {
  return in_flight_ + calls_ + (reading_ ? 1 : 0) + unsent_.size();
}

// ---- stats -------------------------------------------------------------------

void DurableQueue::on_stats_timer(void *self, uint64_t) {
  auto *q = static_cast<DurableQueue *>(self);
  if (q->stopping_) return;
  if (q->queue_.stats(q->config_.partitions, &DurableQueue::on_stats, q) == 0) q->calls_++;
}

void DurableQueue::on_stats(void *arg, int status, const cg_queue_stats_t *s) {
  auto *q = static_cast<DurableQueue *>(arg);
  q->calls_--;
  if (status != 0 || s == nullptr) return;
  if (q->length_ != nullptr) *q->length_ = static_cast<double>(s->length);
  if (q->pending_ != nullptr) *q->pending_ = static_cast<double>(s->pending);
  if (q->oldest_ != nullptr) *q->oldest_ = static_cast<double>(s->oldest_pending_ms) / 1000.0;
  if (q->dead_ != nullptr) *q->dead_ = static_cast<double>(s->dead_letters);
}

}  // namespace cg
