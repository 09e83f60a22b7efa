// Proactive sends: a message from the bot through a channel plugin
// instance, not in answer to anyone. Behind the admin API's
// POST /admin/api/send and cg_host_api_t.send_message.
//
// THREAD: not thread-safe; loop thread only.
#pragma once

#include <chatgate/plugin.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace cg {

class PluginInstance;
class Router;

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

// Checks the message and the instance (it exists, is a channel, runs or is
// degraded, renders markdown if asked) and hands a FINAL reply with a fresh
// answer id to the channel's send. done(arg, status) follows when the
// status is 0, never inside the call. OWNERSHIP: `msg` is borrowed for the
// call; `arg` is the caller's.
ProactiveResult channel_send_proactive(const std::vector<std::unique_ptr<PluginInstance>> &plugins,
                                       Router &router, const ProactiveMessage &msg, cg_done_cb done,
                                       void *arg);

}  // namespace cg
