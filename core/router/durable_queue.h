// The durable inbound queue's logic (router.queue): what a fleet of
// chatgate instances sharing one Redis does so that a message a channel
// acknowledged is answered once, in order per conversation, even when the
// instance that took it dies. docs/fleet.md is the design; in short:
//
//   ingress: enqueue (dedupe key + stream entry, one step) -> the channel's
//     done: the platform is acknowledged only now
//   ownership: each partition (a hash of channel and conversation) is read
//     by the one instance holding its lease; instances heartbeat, and each
//     holds about partitions / instances of them (taking free ones,
//     handing extras over once their messages are answered)
//   takeover: a partition whose owner died (lease expired) is taken, and
//     its entries that owner had read and not acknowledged are claimed, in
//     order, before new ones are read
//   finish: ack + reply record after the platform took the reply; a model
//     or delivery failure is tried again until max deliveries, then the
//     entry goes to the dead letters
//
// The router runs the messages exactly as in-memory ones (lanes, limits,
// context); this class only moves them in and out of the queue.
//
// THREAD: not thread-safe; loop thread only.
#pragma once

#include <chatgate/plugin.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "base/log_throttle.h"
#include "config/config_types.h"
#include "host/inbound_message.h"

namespace cg {

class ChannelPort;
class Loop;
class Metrics;
class Queue;

class DurableQueue {
 public:
  // A channel instance by name (the entry stores the name), or null.
  using Resolve = std::function<ChannelPort *(std::string_view name)>;
  // Runs a message read from the queue. It must end, once, in ack,
  // retry or dead_letter.
  using Deliver = std::function<void(InboundMessage &&msg)>;

  // OWNERSHIP: every reference is borrowed and must outlive this queue.
  // `max_in_flight` caps the entries read and not yet finished.
  DurableQueue(Loop &loop, Queue &queue, Metrics &metrics, const QueueConfig &config,
               uint64_t dedupe_ttl_ms, size_t max_in_flight, Resolve resolve, Deliver deliver);
  ~DurableQueue();
  DurableQueue(const DurableQueue &) = delete;
  DurableQueue &operator=(const DurableQueue &) = delete;

  // Starts the heartbeat: partitions are taken from the next loop turn on.
  void start();
  // Keeps `msg` in the queue: 0 and done(arg, status) on a later turn with
  // 0 (kept), CG_EEXIST (a duplicate of one kept before), CG_EBUSY (full)
  // or CG_EUNAVAIL (the store did not take it); or at once CG_ECLOSED
  // (stopping), CG_EBUSY or CG_EUNAVAIL, and no done.
  // OWNERSHIP: msg is borrowed for the call.
  int enqueue(const InboundMessage &msg, cg_done_cb done, void *arg);
  // The message was answered and the platform took the reply: acknowledged,
  // with a reply record under record_key (empty: none).
  void ack(const InboundMessage &msg, std::string_view record_key);
  // Tries the message again after a pause (its delivery count goes up);
  // `again` then runs with the new count. A message at max deliveries is
  // not retried: the caller dead-letters it instead.
  void retry(const InboundMessage &msg, std::function<void(uint32_t deliveries)> again);
  // Leaves the entry pending (shutting down): whoever takes its partition
  // next answers it.
  void leave(const InboundMessage &msg) { entry_done(msg.queue_partition, msg.queue_id); }
  // Moves the message to the dead letters with `reason`.
  void dead_letter(const InboundMessage &msg, std::string_view reason);
  uint32_t max_deliveries() const { return config_.max_deliveries; }
  // The key a message's reply record has: "r:<channel>:<dedupe key or id>".
  static std::string record_key(const InboundMessage &msg);

  // Shutdown: no new enqueues or reads; once every entry read is finished
  // the partitions are handed back (others take them at once).
  void stop();
  // Entries read and not finished, and queue calls still to complete.
  size_t in_flight() const;
  // Whether a heartbeat has been answered: this instance is one of the
  // members, so the others make room for it (a handover's new process
  // says it is ready only then).
  bool joined() const { return joined_; }

  struct Partition;  // internal
  struct Call;       // internal

 private:
  static void on_tick(void *self, uint64_t);
  static void on_members(void *arg, int status, cg_str_t value);
  void balance(uint32_t members);
  void take_next();
  static void on_take(void *arg, int status, cg_str_t);
  static void on_renew(void *arg, int status, cg_str_t);
  void claim(uint32_t p);
  static void on_claimed(void *arg, int status, const cg_queue_entry_t *entries, size_t count);
  void maybe_read();
  static void on_read(void *arg, int status, const cg_queue_entry_t *entries, size_t count);
  static void on_read_timer(void *self, uint64_t);
  void deliver(const cg_queue_entry_t &e);
  void entry_done(uint32_t p, const std::string &id);
  void maybe_release(uint32_t p);
  static void on_released(void *arg, int status, cg_str_t);
  static void on_stats_timer(void *self, uint64_t);
  static void on_stats(void *arg, int status, const cg_queue_stats_t *stats);
  // The acks of a loop turn go out together, one script a partition.
  static void flush_acks(void *self);
  void dead_letter_entry(uint32_t p, std::string id, std::string payload, std::string reason);
  static void on_finished(void *arg, int status, cg_str_t);
  static void on_pending_timer(void *self, uint64_t);
  void send_finish(std::unique_ptr<Call> call);
  // The retry's pause, then its `again`.
  void wait_then_again(std::unique_ptr<Call> call);
  std::unique_ptr<Call> make_call(uint32_t partition);
  void set_owned_gauge();
  // Partitions this instance reads or is claiming.
  uint32_t owned_count() const;
  // The partitions each live member aims to hold: ceil(partitions / members).
  uint32_t share() const;
  bool warn_due(std::string_view cause, std::string *suffix);
  // Counts an enqueue's outcome (and warns, throttled, on a refusal);
  // returns what the channel's done gets: 0, CG_EEXIST, CG_EBUSY or
  // CG_EUNAVAIL.
  int enqueued(int status);

  Loop &loop_;
  Queue &queue_;
  Metrics &metrics_;
  QueueConfig config_;
  uint64_t dedupe_ttl_ms_;
  size_t max_in_flight_;
  Resolve resolve_;
  Deliver deliver_;
  std::string me_;  // this instance's name: the owner of its leases, a member
  // The consumer name it reads and claims as: me_ and a generation. After a
  // read or claim whose answer was lost (the connection dropped, Redis
  // restarted) entries may be pending for it that it never got; it then
  // takes a new generation and claims the old one's entries like a dead
  // instance's, skipping those it is running.
  std::string consumer_;
  uint32_t generation_ = 0;
  bool reclaim_ = false;
  // Entries delivered and not finished, by running_key: an id is unique
  // in its partition's stream only (two streams can make the same id).
  std::unordered_set<std::string> running_;
  static std::string running_key(uint32_t partition, std::string_view id) {
    return std::to_string(partition) + ":" + std::string(id);
  }
  std::vector<Partition> parts_;
  uint32_t members_ = 1;
  bool joined_ = false;
  // Until this time, ticks come every kFastTickMs instead of every
  // leaseMs / 3: after start and after the members changed, when
  // partitions are about to be free (a process that leaves hands them
  // over at once) and waiting a whole tick would leave them unread.
  uint64_t fast_until_ms_ = 0;
  uint64_t fast_timer_ = 0;
  void schedule_fast_tick();
  std::vector<uint32_t> to_take_;  // candidates this tick, tried one at a time
  bool taking_ = false;
  size_t in_flight_ = 0;  // entries delivered and not finished
  size_t calls_ = 0;      // queue calls out that shutdown must wait for
  bool reading_ = false;  // a read is out
  std::vector<uint32_t> read_parts_;
  bool read_timer_armed_ = false;
  uint64_t tick_timer_ = 0, stats_timer_ = 0, read_timer_ = 0, pending_timer_ = 0;
  bool stopping_ = false;
  bool started_ = false;
  // Acks and dead letters the store refused (unreachable): tried again.
  std::vector<std::unique_ptr<Call>> unsent_;
  // Retries waiting out their pause (wait_then_again), owned until then.
  std::unordered_map<Call *, std::unique_ptr<Call>> waiting_;
  // This turn's acks by partition, sent by flush_acks.
  std::vector<std::unique_ptr<Call>> acking_;
  bool acks_scheduled_ = false;
  std::string payload_buf_;
  LogThrottle log_throttle_;
  double *owned_gauge_ = nullptr, *members_gauge_ = nullptr;
  double *length_ = nullptr, *pending_ = nullptr, *oldest_ = nullptr, *dead_ = nullptr;
  double *enqueued_[4] = {};  // by result: ok, duplicate, full, unavailable
  double *claimed_ = nullptr, *dead_lettered_ = nullptr, *retried_ = nullptr, *acked_ = nullptr;
};

}  // namespace cg
