// Proactive sends: a message from the bot through a channel plugin
// instance, not in answer to anyone. Behind the admin API's
// POST /admin/api/send and cg_host_api_t.send_message.
#include <algorithm>

#include "host/channel_port.h"
#include "host/plugin_instance.h"
#include "router/router.h"

namespace cg {

ProactiveResult Router::send_proactive(const ProactiveMessage &msg, cg_done_cb done, void *arg) {
  ProactiveResult out;
  const std::string name(msg.channel);
  if (msg.conversation.empty() || msg.text.empty()) {
    out.status = CG_EINVAL;
    out.why = "conversationId and text must not be empty";
    return out;
  }
  auto it = std::find_if(plugin_channels_.begin(), plugin_channels_.end(),
                         [&](const PluginChannelPort *p) { return p->name() == msg.channel; });
  if (it == plugin_channels_.end()) {
    out.status = CG_ENOENT;
    out.why = "no channel plugin instance named '" + name +
              "' (the web and api channels only answer their own chats)";
    return out;
  }
  PluginChannelPort &target = **it;
  const PluginInstance &instance = target.instance();
  const int health = instance.health();
  if (health != CG_STATE_RUNNING && health != CG_STATE_DEGRADED) {
    out.status = CG_EUNAVAIL;
    out.why = "channel '" + name + "' is " + (health == CG_STATE_STARTING ? "starting" : "failed") +
              ": " + instance.health_reason();
    return out;
  }
  if (msg.format == CG_REPLY_MARKDOWN && (target.capabilities() & CG_CHANNEL_CAP_MARKDOWN) == 0) {
    out.status = CG_ENOTSUP;
    out.why = "channel '" + name + "' does not render markdown";
    return out;
  }
  cg_reply_t reply{};
  reply.struct_size = sizeof reply;
  reply.format = msg.format;
  reply.flags = CG_REPLY_FINAL;
  reply.sequence = 1;
  reply.conversation_id = {msg.conversation.data(), msg.conversation.size()};
  reply.conversation_type = msg.conversation_type == CG_CONV_GROUP ? CG_CONV_GROUP : CG_CONV_DIRECT;
  reply.text = {msg.text.data(), msg.text.size()};
  reply.answer_id = take_answer_id();
  if (const int rc = target.send(reply, done, arg); rc != 0) {
    out.status = rc;
    out.refused = true;
    out.why = "channel '" + name + "' could not deliver: " + cg_strerror(rc);
  }
  return out;
}

}  // namespace cg
