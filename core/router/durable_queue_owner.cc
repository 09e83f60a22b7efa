// DurableQueue's partitions: the heartbeat and the share, taking and
// renewing leases, claiming a dead owner's entries, reading, handing
// partitions over (docs/fleet.md, "Owners, balance and failover").
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <chatgate/cpp.hpp>
#include <random>

#include "base/loop.h"
#include "host/queue.h"
#include "router/durable_queue.h"
#include "router/durable_queue_internal.h"
#include "router/queue_codec.h"

namespace cg {
namespace {

constexpr auto sv = chatgate::view;
using State = DurableQueueState;
// How long a read waits for an entry: also how soon a partition taken
// meanwhile is read, and how long shutdown waits for the read out.
constexpr uint64_t kReadBlockMs = 500;
constexpr uint64_t kReadRetryMs = 200;
constexpr uint64_t kFastTickMs = 100;

}  // namespace

// ---- ownership ---------------------------------------------------------------

void DurableQueue::schedule_fast_tick() {
  if (stopping_ || fast_timer_ != 0 || loop_.now_ms() >= fast_until_ms_) return;
  loop_.timer_start(
      kFastTickMs, 0,
      [](void *self, uint64_t id) {
        auto *q = static_cast<DurableQueue *>(self);
        if (q->fast_timer_ == id) q->fast_timer_ = 0;
        on_tick(q, 0);
      },
      this, &fast_timer_);
}

void DurableQueue::on_tick(void *self, uint64_t) {
  auto *q = static_cast<DurableQueue *>(self);
  // While the store is down the plugin says so (one line per outage); the
  // leases held run out and the others take over if it stays down.
  if (q->stopping_) return;
  if (!q->queue_.healthy()) {
    q->schedule_fast_tick();  // connecting at start: join as soon as it is up
    return;
  }
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
  n = std::max<uint32_t>(n, 1);
  if (!q->joined_ || n != q->members_) q->fast_until_ms_ = q->loop_.now_ms() + q->config_.lease_ms;
  q->joined_ = true;
  q->balance(n);
  q->schedule_fast_tick();
}

void DurableQueue::balance(uint32_t members) {
  members_ = members;
  if (members_gauge_ != nullptr) *members_gauge_ = members;
  if (reclaim_ && !reading_) {
    // A read or claim lost its answer: what Redis handed to the old
    // consumer name and never reached here is claimed back under a new
    // one, as a dead instance's would be (deliver skips what runs here).
    reclaim_ = false;
    consumer_ = fmt::format("{}-{}", me_, ++generation_);
    for (Partition &part : parts_) {
      if (part.state == State::kOwned) part.state = State::kClaiming;
    }
    spdlog::info("queue: an answer from '{}' was lost; claiming back what it handed out as {}",
                 queue_.name(), consumer_);
  }
  const uint32_t n = config_.partitions;
  const uint32_t share = this->share();
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
  // One take at a time: none is kTaking here.
  const uint32_t owned = owned_count();
  while (!to_take_.empty() && owned < share() && !stopping_) {
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
  if (queue_.claim(p, consumer_, 0, config_.read_batch, &DurableQueue::on_claimed, call.get()) !=
      0) {
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
    // Redis may have claimed them for this consumer before the answer was
    // lost (CG_EUNAVAIL: the connection dropped with the call out).
    q->reclaim_ = true;
    return;  // the next tick
  }
  if (count > 0) {
    spdlog::info(
        "queue: claimed {} unanswered entries of partition {} (left by an instance that "
        "stopped, or handed out in an answer that was lost)",
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
  // After a lost answer nothing new is read until what the lost one handed
  // out is claimed back: a conversation's later message must not overtake it.
  if (!started_ || stopping_ || reading_ || reclaim_) return;
  read_parts_.clear();
  for (uint32_t p = 0; p < parts_.size(); ++p) {
    if (parts_[p].state == State::kOwned) read_parts_.push_back(p);
  }
  if (read_parts_.empty() || in_flight_ >= max_in_flight_) return;
  const auto room =
      static_cast<uint32_t>(std::min<size_t>(config_.read_batch, max_in_flight_ - in_flight_));
  const int rc =
      queue_.read(read_parts_, consumer_, room, kReadBlockMs, &DurableQueue::on_read, this);
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
    // The read may have been served (its entries now pending for this
    // consumer) and its answer lost with the connection.
    q->reclaim_ = true;
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
  // Claimed back after a lost answer while it still runs here: once is enough.
  if (!running_.emplace(running_key(e.partition, sv(e.id))).second) return;
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
    dead_letter_entry(e.partition, msg.queue_id, std::string(payload), why);
    return;
  }
  msg.channel = port;
  msg.received_ms = loop_.now_ms();
  deliver_(std::move(msg));
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
  *owned_gauge_ = owned_count();
}

uint32_t DurableQueue::owned_count() const {
  uint32_t owned = 0;
  for (const Partition &part : parts_) {
    if (part.state == State::kClaiming || part.state == State::kOwned) owned++;
  }
  return owned;
}

uint32_t DurableQueue::share() const { return (config_.partitions + members_ - 1) / members_; }

}  // namespace cg
