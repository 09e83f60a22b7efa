#include "host/channel_port.h"

#include "host/plugin_instance.h"

namespace cg {

std::string_view PluginChannelPort::name() const { return instance_.name(); }

uint32_t PluginChannelPort::capabilities() const {
  return static_cast<uint32_t>(instance_.capabilities());
}

int PluginChannelPort::send(const cg_reply_t &reply, cg_done_cb done, void *arg) {
  return instance_.channel_ops()->send(instance_.state(), &reply, done, arg);
}

}  // namespace cg
