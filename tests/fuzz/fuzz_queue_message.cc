// A durable queue entry as read back from Redis (router/queue_codec.h):
// whatever a store hands back, decoding never reads past it, and what
// decodes encodes back to the same bytes.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "host/inbound_message.h"
#include "router/queue_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const std::string_view in(reinterpret_cast<const char *>(data), size);
  cg::InboundMessage msg;
  std::string channel;
  if (!cg::queue_message_decode(in, &msg, &channel)) return 0;
  std::string again;
  cg::queue_message_encode(msg, channel, &again);
  cg::InboundMessage msg2;
  std::string channel2;
  // A round trip of what decoded must decode to the same message.
  if (!cg::queue_message_decode(again, &msg2, &channel2) || channel2 != channel ||
      msg2.text != msg.text || msg2.id != msg.id || msg2.reply_token != msg.reply_token ||
      msg2.attachments.size() != msg.attachments.size()) {
    abort();
  }
  return 0;
}
