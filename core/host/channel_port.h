// A channel as the router sees it: a channel plugin instance or a built-in
// channel (the HTTP chat API, the admin page's web chat). Replies go out
// through send; a message the router will not answer (duplicate, rate
// limit, shutdown) is reported through on_dropped, so a channel with a
// waiting client can answer it.
//
// THREAD: not thread-safe; loop thread only.
#pragma once

#include <chatgate/plugin.h>

#include <cstdint>
#include <string_view>

namespace cg {

struct InboundMessage;
class PluginInstance;

class ChannelPort {
 public:
  virtual ~ChannelPort() = default;
  virtual std::string_view name() const = 0;
  // CG_CHANNEL_CAP_* of this channel (for a plugin: of this instance).
  virtual uint32_t capabilities() const = 0;
  // As cg_channel_ops_t.send: 0 then done exactly once, or an error and no
  // done. OWNERSHIP: `reply` is borrowed for the call; `arg` is the caller's.
  virtual int send(const cg_reply_t &reply, cg_done_cb done, void *arg) = 0;
  // True when every message must be answered (a client waits on each: the
  // HTTP chat API), so a message the router will not answer goes to
  // on_dropped rather than being dropped quietly.
  virtual bool answers_every_message() const { return false; }
  // The router will not answer `msg`; `reason` is a short token
  // ("duplicate", "rate_limited", "backlog"). OWNERSHIP: borrowed.
  virtual void on_dropped(const InboundMessage &msg, std::string_view reason) {
    (void)msg;
    (void)reason;
  }
};

// The port of a loaded channel plugin instance: send goes to its ops
// table; the capabilities are what the instance declared at init (ABI 1.4
// set_capabilities), bounded by its descriptor's bits.
class PluginChannelPort final : public ChannelPort {
 public:
  explicit PluginChannelPort(PluginInstance &instance) : instance_(instance) {}
  std::string_view name() const override;
  uint32_t capabilities() const override;
  int send(const cg_reply_t &reply, cg_done_cb done, void *arg) override;
  PluginInstance &instance() const { return instance_; }

 private:
  PluginInstance &instance_;
};

}  // namespace cg
