#include "router/durable_queue.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chatgate/cpp.hpp>
#include <random>

#include "base/loop.h"
#include "base/metrics.h"
#include "host/channel_port.h"
#include "host/queue.h"
#include "router/queue_codec.h"

namespace cg {
namespace {

constexpr auto sv = chatgate::view;
// How long a read waits for an entry: also how soon a partition taken
// meanwhile is read, and how long shutdown waits for the read out.
constexpr uint64_t kReadBlockMs = 500;
constexpr uint64_t kReadRetryMs = 200;
constexpr uint64_t kUnsentRetryMs = 500;
constexpr uint64_t kStatsIntervalMs = 5000;
constexpr uint64_t kRetryFirstMs = 500;
constexpr uint64_t kRetryCapMs = 5000;

enum class State { kFree, kTaking, kClaiming, kOwned, kReleasing };

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

struct DurableQueue::Partition {
  State state = State::kFree;
  uint32_t in_flight = 0;  // entries of this partition delivered, not finished
  bool claiming = false;   // a claim is out
};

// One queue call's context; also the retry's wait.
struct DurableQueue::Call {
  DurableQueue *q = nullptr;
  uint32_t partition = 0;
  bool dead = false;  // a dead letter (else an ack)
  std::string id, record, payload, reason;
  cg_done_cb done = nullptr;  // enqueue
  void *arg = nullptr;
  std::function<void(uint32_t)> again;  // retry
  uint32_t deliveries = 0;
  uint64_t timer_id = 0;
};

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
  claimed_ = metrics_.counter("chatgate_queue_claimed_total", "",
                              "Entries claimed from an instance that died");
  dead_lettered_ = metrics_.counter("chatgate_queue_dead_lettered_total", "",
                                    "Entries this instance moved to the dead letters");
  retried_ = metrics_.counter("chatgate_queue_retries_total", "",
                              "Entries tried again after a model or delivery failure");
  acked_ = metrics_.counter("chatgate_queue_acked_total", "",
                            "Entries answered and acknowledged by this instance");
  for (const char *r : {"ok", "duplicate", "full", "unavailable"}) {
    metrics_.counter("chatgate_queue_enqueued_total", fmt::format("result=\"{}\"", r),
                     "Messages channels handed to the durable queue, by result");
  }
}

DurableQueue::~DurableQueue() {
  for (uint64_t *t : {&tick_timer_, &stats_timer_, &read_timer_, &pending_timer_}) {
    if (*t != 0) loop_.timer_stop(*t);
  }
}

bool DurableQueue::warn_due(std::string_view cause, std::string *suffix) {
  return log_throttle_.due(cause, loop_.now_ms(), suffix);
}

void DurableQueue::start() {
  started_ = true;
  spdlog::info("queue: durable queue on '{}' ({} partitions, lease {} ms), this instance is {}",
               queue_.name(), config_.partitions, config_.lease_ms, me_);
  const uint64_t tick = std::max<uint64_t>(config_.lease_ms / 3, 50);
  loop_.timer_start(0, tick, &DurableQueue::on_tick, this, &tick_timer_);
  loop_.timer_start(kStatsIntervalMs / 5, kStatsIntervalMs, &DurableQueue::on_stats_timer, this,
                    &stats_timer_);
}

// ---- ingress ----------------------------------------------------------------

std::string DurableQueue::record_key(const InboundMessage &msg) {
  return fmt::format("r:{}:{}", msg.channel->name(),
                     msg.dedupe_key.empty() ? msg.id : msg.dedupe_key);
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
        DurableQueue *q = c->q;
        q->calls_--;
        const char *result = status == 0           ? "ok"
                             : status == CG_EEXIST ? "duplicate"
                             : status == CG_EBUSY  ? "full"
                                                   : "unavailable";
        if (double *m = q->metrics_.counter("chatgate_queue_enqueued_total",
                                            fmt::format("result=\"{}\"", result))) {
          *m += 1;
        }
        if (status != 0 && status != CG_EEXIST) {
          if (std::string more; q->warn_due(result, &more)) {
            spdlog::warn(
                "queue: '{}' could not keep a message ({}); the channel tells the "
                "platform to retry{}",
                q->queue_.name(), cg_strerror(status), more);
          }
          status = status == CG_EBUSY ? CG_EBUSY : CG_EUNAVAIL;
        }
        c->done(c->arg, status);
      },
      call.get());
  if (rc != 0) {
    if (double *m = metrics_.counter("chatgate_queue_enqueued_total", "result=\"unavailable\"")) {
      *m += 1;
    }
    if (std::string more; warn_due("unavailable", &more)) {
      spdlog::warn(
          "queue: '{}' could not keep a message ({}); the channel tells the platform "
          "to retry{}",
          queue_.name(), cg_strerror(rc), more);
    }
    return rc == CG_EBUSY ? CG_EBUSY : CG_EUNAVAIL;
  }
  calls_++;
  (void)call.release();
  return 0;
}

// ---- ownership ---------------------------------------------------------------

void DurableQueue::on_tick(void *self, uint64_t) {
  auto *q = static_cast<DurableQueue *>(self);
  // While the store is down the plugin says so (one line per outage); the
  // leases held run out and the others take over if it stays down.
  if (q->stopping_ || !q->queue_.healthy()) return;
  const int rc = q->queue_.members(q->me_, q->config_.lease_ms, &DurableQueue::on_members, q);
  if (rc == 0) {
    q->calls_++;
  } else if (std::string more; rc != CG_EUNAVAIL && q->warn_due("heartbeat", &more)) {
    // (CG_EUNAVAIL: not connected yet, or an outage the plugin reports.)
    spdlog::warn(
        "queue: heartbeat to '{}' failed ({}); partitions are kept while their leases "
        "last{}",
        q->queue_.name(), cg_strerror(rc), more);
  }
  q->maybe_read();
}

void DurableQueue::on_members(void *arg, int status, cg_str_t value) {
  auto *q = static_cast<DurableQueue *>(arg);
  q->calls_--;
  if (q->stopping_) return;
  if (status != 0) {
    if (std::string more; q->warn_due("heartbeat", &more)) {
      spdlog::warn(
          "queue: heartbeat to '{}' failed ({}); partitions are kept while their "
          "leases last{}",
          q->queue_.name(), cg_strerror(status), more);
    }
    return;
  }
  uint32_t n = 1;
  const std::string_view v = sv(value);
  std::from_chars(v.data(), v.data() + v.size(), n);
  q->balance(std::max<uint32_t>(n, 1));
}

void DurableQueue::balance(uint32_t members) {
  members_ = members;
  if (members_gauge_ != nullptr) *members_gauge_ = members;
  const uint32_t n = config_.partitions;
  const uint32_t share = (n + members - 1) / members;
  uint32_t owned = 0;
  for (uint32_t p = 0; p < n; ++p) {
    Partition &part = parts_[p];
    if (part.state == State::kClaiming || part.state == State::kOwned ||
        part.state == State::kReleasing) {
      std::unique_ptr<Call> call = make_call(p);  // on_renew frees it
      if (queue_.lease(p, me_, config_.lease_ms, &DurableQueue::on_renew, call.get()) == 0) {
        calls_++;
        (void)call.release();
      }
      if (part.state != State::kReleasing) owned++;
      if (part.state == State::kClaiming && !part.claiming) claim(p);
    }
  }
  if (owned < share && !taking_) {
    to_take_.clear();
    for (uint32_t p = 0; p < n; ++p) {
      if (parts_[p].state == State::kFree) to_take_.push_back(p);
    }
    std::shuffle(to_take_.begin(), to_take_.end(), std::mt19937(std::random_device{}()));
    take_next();
  } else if (owned > share) {
    // Hand the extras over: the highest numbers first, so instances agree
    // on no order but converge anyway.
    for (uint32_t p = n; p-- > 0 && owned > share;) {
      if (parts_[p].state != State::kOwned) continue;
      parts_[p].state = State::kReleasing;
      owned--;
      maybe_release(p);
    }
  }
  set_owned_gauge();
}

void DurableQueue::take_next() {
  uint32_t owned = 0;
  for (const Partition &part : parts_) {
    if (part.state == State::kClaiming || part.state == State::kOwned ||
        part.state == State::kTaking) {
      owned++;
    }
  }
  const uint32_t share = (config_.partitions + members_ - 1) / members_;
  while (!to_take_.empty() && owned < share && !stopping_) {
    const uint32_t p = to_take_.back();
    to_take_.pop_back();
    if (parts_[p].state != State::kFree) continue;
    std::unique_ptr<Call> call = make_call(p);  // on_take frees it
    if (queue_.lease(p, me_, config_.lease_ms, &DurableQueue::on_take, call.get()) != 0) break;
    (void)call.release();
    calls_++;
    parts_[p].state = State::kTaking;
    taking_ = true;
    return;  // one at a time: on_take goes on
  }
  to_take_.clear();
  taking_ = false;
}

void DurableQueue::on_take(void *arg, int status, cg_str_t) {
  std::unique_ptr<Call> c(static_cast<Call *>(arg));
  DurableQueue *q = c->q;
  q->calls_--;
  Partition &part = q->parts_[c->partition];
  if (status != 0 || q->stopping_) {
    part.state = State::kFree;
    if (status == 0) {
      // Taken while stopping: given back at once.
      part.state = State::kReleasing;
      q->maybe_release(c->partition);
    }
  } else {
    part.state = State::kClaiming;
    spdlog::debug("queue: took partition {}", c->partition);
    q->claim(c->partition);
  }
  q->set_owned_gauge();
  q->take_next();
}

void DurableQueue::on_renew(void *arg, int status, cg_str_t) {
  std::unique_ptr<Call> c(static_cast<Call *>(arg));
  DurableQueue *q = c->q;
  q->calls_--;
  if (status != CG_EBUSY) return;  // renewed, or unknown (kept while it may still hold)
  Partition &part = q->parts_[c->partition];
  if (part.state == State::kFree || part.state == State::kTaking) return;
  // Another instance holds it: this one stalled past its lease. What it
  // still runs from there may be answered twice (docs/fleet.md).
  spdlog::warn(
      "queue: lost partition {} to another instance (this one missed its lease); "
      "{} of its messages still running here",
      c->partition, part.in_flight);
  part.state = State::kFree;
  q->set_owned_gauge();
}

void DurableQueue::claim(uint32_t p) {
  std::unique_ptr<Call> call = make_call(p);  // on_claimed frees it
  if (queue_.claim(p, me_, 0, config_.read_batch, &DurableQueue::on_claimed, call.get()) != 0) {
    return;  // the next tick tries again
  }
  (void)call.release();
  calls_++;
  parts_[p].claiming = true;
}

void DurableQueue::on_claimed(void *arg, int status, const cg_queue_entry_t *entries,
                              size_t count) {
  std::unique_ptr<Call> c(static_cast<Call *>(arg));
  DurableQueue *q = c->q;
  q->calls_--;
  Partition &part = q->parts_[c->partition];
  part.claiming = false;
  if (part.state != State::kClaiming) return;
  if (status != 0) {
    if (std::string more; q->warn_due("claim", &more)) {
      spdlog::warn("queue: claiming partition {}'s pending entries failed ({}); tried again{}",
                   c->partition, cg_strerror(status), more);
    }
    return;  // the next tick
  }
  if (count > 0) {
    spdlog::info(
        "queue: claimed {} unanswered entries of partition {} from an instance that "
        "stopped",
        count, c->partition);
    if (q->claimed_ != nullptr) *q->claimed_ += static_cast<double>(count);
  }
  for (size_t i = 0; i < count; ++i) q->deliver(entries[i]);
  if (count >= q->config_.read_batch) {
    q->claim(c->partition);
    return;
  }
  part.state = State::kOwned;
  q->maybe_read();
}

// ---- reading -----------------------------------------------------------------

void DurableQueue::maybe_read() {
  if (!started_ || stopping_ || reading_) return;
  read_parts_.clear();
  for (uint32_t p = 0; p < parts_.size(); ++p) {
    if (parts_[p].state == State::kOwned) read_parts_.push_back(p);
  }
  if (read_parts_.empty() || in_flight_ >= max_in_flight_) return;
  const auto room =
      static_cast<uint32_t>(std::min<size_t>(config_.read_batch, max_in_flight_ - in_flight_));
  const int rc = queue_.read(read_parts_, me_, room, kReadBlockMs, &DurableQueue::on_read, this);
  if (rc != 0) {
    read_parts_.clear();
    if (!read_timer_armed_) {
      read_timer_armed_ = true;
      loop_.timer_start(kReadRetryMs, 0, &DurableQueue::on_read_timer, this, &read_timer_);
    }
    return;
  }
  reading_ = true;
}

void DurableQueue::on_read_timer(void *self, uint64_t) {
  auto *q = static_cast<DurableQueue *>(self);
  q->read_timer_armed_ = false;
  q->read_timer_ = 0;
  q->maybe_read();
}

void DurableQueue::on_read(void *arg, int status, const cg_queue_entry_t *entries, size_t count) {
  auto *q = static_cast<DurableQueue *>(arg);
  q->reading_ = false;
  const std::vector<uint32_t> parts = std::move(q->read_parts_);
  q->read_parts_.clear();
  for (size_t i = 0; i < count; ++i) q->deliver(entries[i]);
  for (uint32_t p : parts) q->maybe_release(p);
  if (status != 0) {
    if (std::string more; q->warn_due("read", &more)) {
      spdlog::warn("queue: reading from '{}' failed ({}); trying again{}", q->queue_.name(),
                   cg_strerror(status), more);
    }
    if (!q->read_timer_armed_ && !q->stopping_) {
      q->read_timer_armed_ = true;
      q->loop_.timer_start(kReadRetryMs, 0, &DurableQueue::on_read_timer, q, &q->read_timer_);
    }
    return;
  }
  q->maybe_read();
}

void DurableQueue::deliver(const cg_queue_entry_t &e) {
  if (e.partition >= parts_.size()) return;
  in_flight_++;
  parts_[e.partition].in_flight++;
  InboundMessage msg;
  std::string channel;
  const std::string_view payload = sv(e.payload);
  ChannelPort *port = nullptr;
  std::string why;
  if (!queue_message_decode(payload, &msg, &channel)) {
    why = "unreadable entry";
  } else if ((port = resolve_(channel)) == nullptr) {
    why = fmt::format("no channel instance named '{}' on this instance", channel);
  }
  msg.queue_id = std::string(sv(e.id));
  msg.queue_partition = e.partition;
  msg.deliveries = e.deliveries;
  if (!why.empty()) {
    spdlog::error("queue: entry {} of partition {}: {}; moved to the dead letters", msg.queue_id,
                  e.partition, why);
    finish_op(e.partition, "dead_letter", msg.queue_id, {}, std::string(payload), why);
    return;
  }
  msg.channel = port;
  msg.received_ms = loop_.now_ms();
  deliver_(std::move(msg));
}

// ---- finishing ---------------------------------------------------------------

void DurableQueue::ack(const InboundMessage &msg, std::string_view record_key) {
  finish_op(msg.queue_partition, "ack", msg.queue_id, std::string(record_key), {}, {});
}

void DurableQueue::dead_letter(const InboundMessage &msg, std::string_view reason) {
  std::string payload;
  queue_message_encode(msg, msg.channel->name(), &payload);
  spdlog::warn(
      "queue: message {} on '{}' (conversation '{}') moved to the dead letters after {} "
      "deliveries: {}",
      msg.id, msg.channel->name(), msg.conversation_id, msg.deliveries, reason);
  finish_op(msg.queue_partition, "dead_letter", msg.queue_id, {}, std::move(payload),
            std::string(reason));
}

void DurableQueue::finish_op(uint32_t p, std::string_view op, std::string id, std::string record,
                             std::string payload, std::string reason) {
  std::unique_ptr<Call> call = make_call(p);
  call->dead = op == "dead_letter";
  call->id = std::move(id);
  call->record = std::move(record);
  call->payload = std::move(payload);
  call->reason = std::move(reason);
  send_finish(std::move(call));
}

void DurableQueue::send_finish(std::unique_ptr<Call> call) {
  const int rc =
      call->dead
          ? queue_.dead_letter(call->partition, call->id, call->payload, call->reason,
                               &DurableQueue::on_finished, call.get())
          : queue_.ack(call->partition, call->id, call->record, config_.record_ttl_seconds * 1000,
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
  if (double *m = c->dead ? q->dead_lettered_ : q->acked_) *m += 1;
  q->entry_done(c->partition);
}

void DurableQueue::retry(const InboundMessage &msg, std::function<void(uint32_t)> again) {
  std::unique_ptr<Call> call = make_call(msg.queue_partition);
  call->deliveries = msg.deliveries + 1;
  call->again = std::move(again);
  if (retried_ != nullptr) *retried_ += 1;
  calls_++;  // until `again` runs
  Call *raw = call.get();
  const int rc = queue_.retry(
      raw->partition, msg.queue_id, me_,
      [](void *a, int status, cg_str_t value) {
        std::unique_ptr<Call> c(static_cast<Call *>(a));
        if (status == 0) {
          const std::string_view v = sv(value);
          std::from_chars(v.data(), v.data() + v.size(), c->deliveries);
        }
        c->q->wait_then_again(std::move(c));
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
  const int rc = loop_.timer_start(
      ms, 0,
      [](void *a, uint64_t) {
        std::unique_ptr<Call> c(static_cast<Call *>(a));
        c->q->calls_--;
        c->again(c->deliveries);
      },
      raw, &raw->timer_id);
  if (rc == 0) {
    (void)call.release();
    return;
  }
  calls_--;  // the loop is closing: the entry stays pending for whoever comes next
}

std::unique_ptr<DurableQueue::Call> DurableQueue::make_call(uint32_t partition) {
  auto call = std::make_unique<Call>();
  call->q = this;
  call->partition = partition;
  return call;
}

void DurableQueue::entry_done(uint32_t p) {
  if (in_flight_ > 0) in_flight_--;
  Partition &part = parts_[p];
  if (part.in_flight > 0) part.in_flight--;
  if (part.state == State::kReleasing) maybe_release(p);
  maybe_read();
}

void DurableQueue::maybe_release(uint32_t p) {
  Partition &part = parts_[p];
  if (part.state != State::kReleasing || part.in_flight > 0 || part.claiming) return;
  if (reading_ && std::find(read_parts_.begin(), read_parts_.end(), p) != read_parts_.end()) {
    return;  // on_read comes back here
  }
  part.state = State::kFree;
  std::unique_ptr<Call> call = make_call(p);  // on_released frees it
  if (queue_.release(p, me_, &DurableQueue::on_released, call.get()) != 0) {
    return;  // its lease runs out instead
  }
  (void)call.release();
  calls_++;
  set_owned_gauge();
}

void DurableQueue::on_released(void *arg, int, cg_str_t) {
  std::unique_ptr<Call> c(static_cast<Call *>(arg));
  c->q->calls_--;
  spdlog::debug("queue: handed partition {} over", c->partition);
}

void DurableQueue::set_owned_gauge() {
  if (owned_gauge_ == nullptr) return;
  uint32_t owned = 0;
  for (const Partition &part : parts_) {
    if (part.state == State::kClaiming || part.state == State::kOwned) owned++;
  }
  *owned_gauge_ = owned;
}

void DurableQueue::stop() {
  if (stopping_) return;
  stopping_ = true;
  for (uint64_t *t : {&tick_timer_, &stats_timer_}) {
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

bool DurableQueue::healthy() const { return queue_.healthy(); }

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
