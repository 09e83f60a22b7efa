#include "router/inbound_queue.h"

#include <chatgate/common.h>

#include <cstddef>

#include "base/loop.h"
#include "host/plugin_instance.h"
#include "router/channel.h"

namespace cg {
namespace {

std::string copy(cg_str_t s) { return s.ptr ? std::string(s.ptr, s.len) : std::string(); }

}  // namespace

InboundMessage InboundMessage::from_c(Channel *channel, const cg_message_t &m) {
  InboundMessage out;
  out.channel = channel;
  out.conversation_type = m.conversation_type == CG_CONV_GROUP ? CG_CONV_GROUP : CG_CONV_DIRECT;
  out.id = copy(m.id);
  out.conversation_id = copy(m.conversation_id);
  out.sender_id = copy(m.sender_id);
  out.sender_name = copy(m.sender_name);
  out.text = copy(m.text);
  out.mentioned = m.mentioned != 0;
  out.timestamp_ms = m.timestamp_ms;
  out.reply_token = copy(m.reply_token);
  if (m.attachment_count > 0 && m.attachments != nullptr &&
      m.attachments[0].struct_size >= offsetof(cg_attachment_t, name) + sizeof(cg_str_t)) {
    // Step by the writer's struct size so a newer writer's array still reads.
    const auto *base = reinterpret_cast<const unsigned char *>(m.attachments);
    const size_t stride = m.attachments[0].struct_size;
    for (uint32_t i = 0; i < m.attachment_count; i++) {
      const auto *a = reinterpret_cast<const cg_attachment_t *>(base + i * stride);
      out.attachments.push_back(
          {a->kind, copy(a->url), copy(a->key), copy(a->mime), copy(a->name)});
    }
  }
  return out;
}

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

std::string_view PluginChannel::name() const { return instance_.name(); }

uint32_t PluginChannel::capabilities() const {
  return static_cast<uint32_t>(instance_.desc()->capabilities);
}

int PluginChannel::send(const cg_reply_t &reply, cg_done_cb done, void *arg) {
  return instance_.channel_ops()->send(instance_.state(), &reply, done, arg);
}

}  // namespace cg
