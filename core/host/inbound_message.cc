#include "host/inbound_message.h"

#include <chatgate/common.h>

#include <cstddef>

namespace cg {
namespace {

std::string copy(cg_str_t s) { return s.ptr ? std::string(s.ptr, s.len) : std::string(); }

// True when a writer of `struct_size` bytes filled `field` (a cg_str_t).
constexpr bool has_str(uint32_t struct_size, size_t offset) {
  return struct_size >= offset + sizeof(cg_str_t);
}

}  // namespace

InboundMessage InboundMessage::from_c(ChannelPort *channel, const cg_message_t &m) {
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
  if (has_str(m.struct_size, offsetof(cg_message_t, dedupe_key)) && m.dedupe_key.len > 0) {
    out.dedupe_key = copy(m.dedupe_key);
  } else {
    out.dedupe_key = out.id;
  }
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

}  // namespace cg
