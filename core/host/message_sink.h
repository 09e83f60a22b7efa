// Where the host API hands what channel plugins emit: the router, behind a
// named interface, so the host layer does not know the router and a test
// can stand in for it. The app wires the router in (HostServices::sink).
//
// THREAD: not thread-safe; loop thread only.
#pragma once

#include <chatgate/host.h>
#include <chatgate/message.h>

#include <optional>
#include <string>
#include <string_view>

#include "host/inbound_message.h"

namespace cg {

// A message from the bot through a channel instance, not in answer to
// anyone: cg_host_api_t.send_message and the admin API's send.
struct ProactiveMessage {
  std::string_view channel;       // the channel instance's name
  std::string_view conversation;  // the platform's conversation (chat) id
  uint32_t conversation_type = CG_CONV_DIRECT;
  uint32_t format = CG_REPLY_TEXT;
  std::string_view text;
};

struct ProactiveResult {
  int status = 0;        // 0: sent to the channel, done follows; else CG_E*, no done
  bool refused = false;  // the channel itself refused it (its send returned status)
  std::string why;       // for the log or an HTTP answer; no secrets
};

class MessageSink {
 public:
  virtual ~MessageSink() = default;
  // Accepts a message (as cg_host_api_t.emit_message): 0, CG_EBUSY (the
  // queue, or this conversation's backlog, is full: tell the platform to
  // retry), CG_ECLOSED (shutting down).
  virtual int submit(InboundMessage msg) = 0;
  // As submit, answered once the message is safe (see cg_host_api_t.
  // emit_message_durable): done(arg, status) exactly once, never inside the
  // call. OWNERSHIP: `arg` is the caller's, held until done ran.
  virtual void submit_durable(InboundMessage msg, cg_done_cb done, void *arg) = 0;
  // A message the channel received and dropped itself (its policy).
  virtual void count_dropped(std::string_view channel, std::string_view reason) = 0;
  // Checks `msg` and the channel and hands the channel a FINAL reply;
  // done(arg, status) follows when the result's status is 0, never inside
  // the call. OWNERSHIP: `msg` is borrowed for the call; `arg` is the
  // caller's.
  virtual ProactiveResult send_proactive(const ProactiveMessage &msg, cg_done_cb done,
                                         void *arg) = 0;
  // What an end user of the instance `instance` reads for the catalog key
  // `key` (cg_host_api_t.user_text), or nullopt for a key the catalog does
  // not have. OWNERSHIP: the view is the sink's, valid until the next
  // config reload.
  virtual std::optional<std::string_view> user_text(std::string_view instance,
                                                    std::string_view key) const = 0;
};

}  // namespace cg
