// A channel as the router sees it: a plugin channel or a built-in one (the
// HTTP chat API). Replies go out through send; a message the router drops
// (duplicate, shutdown) is reported through on_dropped so a channel with a
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

class Channel {
 public:
  virtual ~Channel() = default;
  virtual std::string_view name() const = 0;
  virtual uint32_t capabilities() const = 0;  // CG_CHANNEL_CAP_*
  // As cg_channel_ops_t.send: 0 then done exactly once, or an error and no done.
  virtual int send(const cg_reply_t &reply, cg_done_cb done, void *arg) = 0;
  // True when every message must be answered (a client waits on each: the
  // HTTP chat API), so a message the router will not answer goes to
  // on_dropped rather than being dropped quietly.
  virtual bool answers_every_message() const { return false; }
  // The router will not answer `msg`; `reason` is a short token ("duplicate",
  // "rate_limited").
  virtual void on_dropped(const InboundMessage &msg, std::string_view reason) {
    (void)msg;
    (void)reason;
  }
};

// A channel backed by a loaded channel plugin.
class PluginChannel final : public Channel {
 public:
  explicit PluginChannel(PluginInstance &instance) : instance_(instance) {}
  std::string_view name() const override;
  uint32_t capabilities() const override;
  int send(const cg_reply_t &reply, cg_done_cb done, void *arg) override;

 private:
  PluginInstance &instance_;
};

}  // namespace cg
