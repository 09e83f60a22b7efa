#include "router/inbound_queue.h"

#include <chatgate/common.h>

#include "base/loop.h"

namespace cg {
int MemoryInboundQueue::push(InboundMessage msg) {
  if (closed_) return CG_ECLOSED;
  if (in_flight_ >= capacity_) return CG_EBUSY;
  in_flight_++;
  pending_.push_back(std::move(msg));
  if (!drain_scheduled_) {
    drain_scheduled_ = true;
    loop_.defer(&MemoryInboundQueue::drain, this);
  }
  return 0;
}

void MemoryInboundQueue::drain(void *arg) {
  auto *self = static_cast<MemoryInboundQueue *>(arg);
  self->drain_scheduled_ = false;
  self->draining_.swap(self->pending_);
  for (InboundMessage &m : self->draining_) self->consumer_(std::move(m));
  self->draining_.clear();
}

void MemoryInboundQueue::ack() {
  if (in_flight_ > 0) in_flight_--;
}

}  // namespace cg
