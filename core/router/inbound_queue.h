// The router's inbound path: channels push normalized messages, the router
// consumes them. Today the queue lives in memory; a durable one (Redis
// Streams with consumer groups, for fleets) implements the same interface,
// so moving to it changes a plugin, not the router.
//
// THREAD: not thread-safe; loop thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "host/inbound_message.h"

namespace cg {

class Loop;

class InboundQueue {
 public:
  using Consumer = std::function<void(InboundMessage &&)>;
  virtual ~InboundQueue() = default;
  // Accepts a message for the consumer. CG_EBUSY when full, CG_ECLOSED after
  // close(). The consumer never runs inside push.
  virtual int push(InboundMessage msg) = 0;
  // The consumer finished a message (answered or dropped): it may be
  // forgotten (a durable queue acknowledges it here).
  virtual void ack() = 0;
  // Messages accepted and not yet acknowledged.
  virtual size_t in_flight() const = 0;
  virtual void set_consumer(Consumer consumer) = 0;
  virtual void close() = 0;
};

// In memory, bounded by `capacity` unacknowledged messages.
class MemoryInboundQueue final : public InboundQueue {
 public:
  MemoryInboundQueue(Loop &loop, size_t capacity) : loop_(loop), capacity_(capacity) {}
  int push(InboundMessage msg) override;
  void ack() override;
  size_t in_flight() const override { return in_flight_; }
  void set_consumer(Consumer consumer) override { consumer_ = std::move(consumer); }
  void close() override { closed_ = true; }

 private:
  static void drain(void *arg);
  Loop &loop_;
  size_t capacity_;
  size_t in_flight_ = 0;
  bool closed_ = false;
  bool drain_scheduled_ = false;
  std::vector<InboundMessage> pending_, draining_;
  Consumer consumer_;
};

}  // namespace cg
