// A message as the durable queue stores it: every field of InboundMessage
// but the channel pointer (its instance name instead) and the loop times.
// Binary-safe and versioned: "cgq1" then each field as <length>:<bytes>,
// so a platform's text of any content goes through unchanged, and a later
// version can add fields at the end (older readers ignore them).
//
// THREAD: safe (no shared state).
#pragma once

#include <string>
#include <string_view>

#include "host/inbound_message.h"

namespace cg {

// Appends `msg`, stored under `channel`, to *out (cleared first).
void queue_message_encode(const InboundMessage &msg, std::string_view channel, std::string *out);

// Fills *msg (channel left null) and *channel from `data`: false when it is
// not a message this version can read (the entry goes to the dead letters).
bool queue_message_decode(std::string_view data, InboundMessage *msg, std::string *channel);

}  // namespace cg
