// The core's own copy of a normalized message: what the host makes of a
// channel plugin's cg_message_t (or a built-in channel's request) before
// the router sees it. Owned strings, so it outlives the plugin's call and
// can sit in a queue.
//
// THREAD: plain values.
#pragma once

#include <chatgate/message.h>

#include <cstdint>
#include <string>
#include <vector>

namespace cg {

class ChannelPort;

struct InboundAttachment {
  uint32_t kind = CG_ATTACH_OTHER;
  std::string url, key, mime, name;
};

struct InboundMessage {
  ChannelPort *channel = nullptr;  // where it came from and where the reply goes
  uint32_t conversation_type = CG_CONV_DIRECT;
  bool mentioned = false;
  bool stream = false;  // the sender wants partial answers (the chat API's "stream")
  int64_t timestamp_ms = 0;
  uint64_t received_ms = 0;  // loop time when accepted
  std::string id, conversation_id, sender_id, sender_name, text, reply_token;
  // What the router dedupes on, per channel: the channel's dedupe_key
  // (since 1.4: the platform's event id, which a redelivery repeats) or
  // else the message id. Empty: not deduped.
  std::string dedupe_key;
  std::vector<InboundAttachment> attachments;
  // Set when the message came from the durable queue (router.queue): the
  // entry that keeps it until it is answered. Empty queue_id: it came
  // straight from a channel (or the chat API) and lives only in memory.
  std::string queue_id;
  uint32_t queue_partition = 0;
  uint32_t deliveries = 0;  // this one included

  // Copies a plugin's message; reads fields up to msg.struct_size only.
  // OWNERSHIP: `msg` is borrowed for the call; `channel` is kept.
  static InboundMessage from_c(ChannelPort *channel, const cg_message_t &msg);
};

}  // namespace cg
