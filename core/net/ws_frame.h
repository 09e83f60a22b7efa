// RFC 6455 framing for the client side: masked frames out, an incremental
// reader for the server's unmasked frames in. No extensions are negotiated,
// so any RSV bit is a protocol error. Pure code, no I/O, so the rules are
// unit-tested one by one (tests/unit/test_ws_frame.cc).
//
// THREAD: not thread-safe; one reader per connection.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace cg {

enum WsOpcode : uint8_t {
  kWsContinuation = 0x0,
  kWsText = 0x1,
  kWsBinary = 0x2,
  kWsClose = 0x8,
  kWsPing = 0x9,
  kWsPong = 0xA,
};

// Close codes the client itself sends (RFC 6455 section 7.4.1).
enum WsCloseCode : uint16_t {
  kWsNormal = 1000,
  kWsGoingAway = 1001,
  kWsProtocolError = 1002,
  kWsNoStatus = 1005,  // never sent: "the close frame had no code"
  kWsAbnormal = 1006,  // never sent: "no close frame at all"
  kWsInvalidData = 1007,
  kWsTooBig = 1009,
};

// Appends one final (FIN) frame with the given mask key to `out`.
void ws_frame_append(std::string *out, uint8_t opcode, std::string_view payload,
                     std::span<const uint8_t, 4> mask);

// Builds a close frame's payload: the code in network order, then the reason
// cut to 123 bytes. code 0 means no payload.
std::string ws_close_payload(uint16_t code, std::string_view reason);

// True for codes a peer may put in a close frame.
bool ws_close_code_valid(uint16_t code);

// A complete incoming message or control frame. `payload` is valid until
// the next feed().
struct WsEvent {
  uint8_t opcode;            // kWsText, kWsBinary, kWsClose, kWsPing, kWsPong
  std::string_view payload;  // for kWsClose: the reason only
  uint16_t close_code;       // kWsClose: the code, or kWsNoStatus
};

class WsReader {
 public:
  explicit WsReader(size_t max_message_bytes) : max_message_(max_message_bytes) {}

  // Consumes `data`, calling on_event(const WsEvent &) for every complete
  // message and control frame in order. Returns 0, or the close code to
  // send for a breach (kWsProtocolError, kWsInvalidData, kWsTooBig), after
  // which error() says what happened and the reader must not be fed again.
  // on_event may stop the reading by returning false (feed returns 0).
  template <typename F>
  uint16_t feed(std::string_view data, F &&on_event);

  // Bytes of an unfinished frame or message held, for "vanished mid-frame".
  bool mid_frame() const { return pos_ < buf_.size() || msg_opcode_ != 0; }
  const std::string &error() const { return error_; }

 private:
  enum class Step { kNeedMore, kEvent, kBreach };
  Step next(WsEvent *ev);
  Step fail(uint16_t code, std::string why);

  size_t max_message_;
  std::string buf_;  // received, unparsed bytes from pos_
  size_t pos_ = 0;
  std::string msg_;         // joined fragments of the message in progress
  uint8_t msg_opcode_ = 0;  // its opcode; 0 when none is in progress
  uint16_t breach_ = 0;
  std::string error_;
};

template <typename F>
uint16_t WsReader::feed(std::string_view data, F &&on_event) {
  if (pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
  } else if (pos_ > 0 && pos_ * 2 >= buf_.size()) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  buf_.append(data);
  for (;;) {
    WsEvent ev{};
    switch (next(&ev)) {
      case Step::kNeedMore:
        return 0;
      case Step::kBreach:
        return breach_;
      case Step::kEvent:
        if (!on_event(ev)) return 0;
        break;
    }
  }
}

}  // namespace cg
