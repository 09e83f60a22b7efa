// DurableQueue's internals shared by its two files: durable_queue.cc
// (ingress, finishing, retries, stats) and durable_queue_owner.cc
// (partitions: heartbeat, leases, claims, reads, hand-over).
//
// THREAD: not thread-safe; loop thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "router/durable_queue.h"

namespace cg {

enum class DurableQueueState { kFree, kTaking, kClaiming, kOwned, kReleasing };

struct DurableQueue::Partition {
  DurableQueueState state = DurableQueueState::kFree;
  uint32_t in_flight = 0;  // entries of this partition delivered, not finished
  bool claiming = false;   // a claim is out
};

// One queue call's context; also the retry's wait.
struct DurableQueue::Call {
  DurableQueue *q = nullptr;
  uint32_t partition = 0;
  bool dead = false;                // a dead letter (else an ack)
  std::string id, payload, reason;  // a dead letter's
  // An ack's entries (one script for all), each with its reply record
  // key (empty: none).
  std::vector<std::string> ids, records;
  cg_done_cb done = nullptr;  // enqueue
  void *arg = nullptr;
  std::function<void(uint32_t)> again;  // retry
  uint32_t deliveries = 0;
  uint64_t timer_id = 0;
};

}  // namespace cg
