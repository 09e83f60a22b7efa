// Feishu's long connection: a protobuf Frame (frame.proto, protobuf-lite)
// as the plugin reads it, its headers, and an event in its payload.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "feishu_event.h"
#include "frame.pb.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  feishu::pb::Frame frame;
  if (!frame.ParseFromArray(data, static_cast<int>(size))) return 0;
  std::string type, sum, seq;
  for (const auto &h : frame.headers()) {
    if (h.key() == "type") type = h.value();
    if (h.key() == "sum") sum = h.value();
    if (h.key() == "seq") seq = h.value();
  }
  (void)std::strtol(sum.c_str(), nullptr, 10);
  (void)std::strtol(seq.c_str(), nullptr, 10);
  feishu::Event ev;
  if (feishu::event_parse(frame.payload(), &ev).empty())
    (void)feishu::message_content(ev, "ou_bot");
  return 0;
}
