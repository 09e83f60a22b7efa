// DingTalk: a Stream-mode frame and the robot message it carries, and the
// HTTP callback body (the same robot message).
#include <cstdint>
#include <string>

#include "dingtalk_protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const std::string_view in(reinterpret_cast<const char *>(data), size);
  dingtalk::StreamFrame f;
  if (dingtalk::stream_frame_parse(in, &f).empty()) {
    dingtalk::RobotMessage m;
    (void)dingtalk::robot_message_parse(f.data, &m);
  }
  dingtalk::RobotMessage m;
  (void)dingtalk::robot_message_parse(in, &m);
  return 0;
}
