#include "net/ws_frame.h"

#include <simdjson.h>

#include <algorithm>
#include <cstring>

namespace cg {

void ws_frame_append(std::string *out, uint8_t opcode, std::string_view payload,
                     std::span<const uint8_t, 4> mask) {
  const size_t n = payload.size();
  const size_t start = out->size();
  size_t head = 2 + 4;
  if (n > 0xFFFF) {
    head += 8;
  } else if (n > 125) {
    head += 2;
  }
  out->resize(start + head + n);
  auto *p = reinterpret_cast<uint8_t *>(out->data() + start);
  *p++ = static_cast<uint8_t>(0x80u | opcode);
  if (n > 0xFFFF) {
    *p++ = 0x80u | 127u;
    for (int shift = 56; shift >= 0; shift -= 8) *p++ = static_cast<uint8_t>(n >> shift);
  } else if (n > 125) {
    *p++ = 0x80u | 126u;
    *p++ = static_cast<uint8_t>(n >> 8);
    *p++ = static_cast<uint8_t>(n);
  } else {
    *p++ = static_cast<uint8_t>(0x80u | n);
  }
  std::memcpy(p, mask.data(), 4);
  p += 4;
  const auto *in = reinterpret_cast<const uint8_t *>(payload.data());
  // Eight bytes at a time: a 1 MB message is masked in well under a millisecond.
  uint64_t mask8 = 0;
  for (int i = 0; i < 8; ++i)
    reinterpret_cast<uint8_t *>(&mask8)[i] = mask[static_cast<size_t>(i % 4)];
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, in + i, 8);
    w ^= mask8;
    std::memcpy(p + i, &w, 8);
  }
  for (; i < n; ++i) p[i] = in[i] ^ mask[i % 4];
}

std::string ws_close_payload(uint16_t code, std::string_view reason) {
  if (code == 0) return {};
  std::string out;
  out.push_back(static_cast<char>(code >> 8));
  out.push_back(static_cast<char>(code & 0xFF));
  out.append(reason.substr(0, 123));
  return out;
}

bool ws_close_code_valid(uint16_t code) {
  if (code >= 3000 && code <= 4999) return true;
  switch (code) {
    case 1000:
    case 1001:
    case 1002:
    case 1003:
    case 1007:
    case 1008:
    case 1009:
    case 1010:
    case 1011:
    case 1012:
    case 1013:
    case 1014:
      return true;
    default:
      return false;
  }
}

WsReader::Step WsReader::fail(uint16_t code, std::string why) {
  breach_ = code;
  error_ = std::move(why);
  return Step::kBreach;
}

WsReader::Step WsReader::next(WsEvent *ev) {
  if (breach_ != 0) return Step::kBreach;
  // A loop, not recursion, over fragments: a peer may send a message as a
  // million one-byte frames.
  for (;;) {
    const auto *p = reinterpret_cast<const uint8_t *>(buf_.data() + pos_);
    const size_t avail = buf_.size() - pos_;
    if (avail < 2) return Step::kNeedMore;
    const bool fin = (p[0] & 0x80u) != 0;
    const uint8_t rsv = p[0] & 0x70u;
    const uint8_t opcode = p[0] & 0x0Fu;
    const bool masked = (p[1] & 0x80u) != 0;
    uint64_t len = p[1] & 0x7Fu;
    size_t head = 2;
    // Judge what the first two bytes already tell before waiting for more.
    if (rsv != 0)
      return fail(kWsProtocolError, "frame with RSV bits set (no extension was agreed)");
    if (masked) return fail(kWsProtocolError, "masked frame from the server");
    const bool control = (opcode & 0x8u) != 0;
    if (opcode > kWsBinary && !control) return fail(kWsProtocolError, "unknown data opcode");
    if (control && opcode > kWsPong) return fail(kWsProtocolError, "unknown control opcode");
    if (control && (!fin || len > 125)) {
      return fail(kWsProtocolError, "fragmented or oversized control frame");
    }
    if (len == 126) {
      if (avail < 4) return Step::kNeedMore;
      len = (uint64_t{p[2]} << 8) | p[3];
      head = 4;
    } else if (len == 127) {
      if (avail < 10) return Step::kNeedMore;
      len = 0;
      for (int i = 0; i < 8; ++i) len = (len << 8) | p[2 + i];
      head = 10;
      if ((len >> 63) != 0) return fail(kWsProtocolError, "frame length with the top bit set");
    }
    if (!control) {
      if (opcode == kWsContinuation && msg_opcode_ == 0) {
        return fail(kWsProtocolError, "continuation frame without a message to continue");
      }
      if (opcode != kWsContinuation && msg_opcode_ != 0) {
        return fail(kWsProtocolError, "new message before the previous one ended");
      }
      const uint64_t so_far = opcode == kWsContinuation ? msg_.size() : 0;
      if (len > max_message_ || so_far + len > max_message_) {
        return fail(kWsTooBig, "message larger than " + std::to_string(max_message_) + " bytes");
      }
    }
    if (avail - head < len) return Step::kNeedMore;
    const std::string_view payload(buf_.data() + pos_ + head, static_cast<size_t>(len));
    pos_ += head + static_cast<size_t>(len);

    if (control) {
      ev->opcode = opcode;
      ev->close_code = 0;
      ev->payload = payload;
      if (opcode == kWsClose) {
        if (payload.size() == 1) return fail(kWsProtocolError, "close frame with a 1-byte payload");
        ev->close_code = kWsNoStatus;
        if (payload.size() >= 2) {
          const auto *c = reinterpret_cast<const uint8_t *>(payload.data());
          ev->close_code = static_cast<uint16_t>((c[0] << 8) | c[1]);
          if (!ws_close_code_valid(ev->close_code)) {
            return fail(kWsProtocolError, "invalid close code " + std::to_string(ev->close_code));
          }
          ev->payload = payload.substr(2);
          if (!simdjson::validate_utf8(ev->payload.data(), ev->payload.size())) {
            return fail(kWsInvalidData, "close reason is not UTF-8");
          }
        }
      }
      return Step::kEvent;
    }

    if (opcode != kWsContinuation) {
      msg_.clear();
      msg_opcode_ = opcode;
      if (fin) {
        // The common case, one frame per message: hand out the view, no copy.
        msg_opcode_ = 0;
        if (opcode == kWsText && !simdjson::validate_utf8(payload.data(), payload.size())) {
          return fail(kWsInvalidData, "text message is not UTF-8");
        }
        *ev = WsEvent{opcode, payload, 0};
        return Step::kEvent;
      }
      msg_.assign(payload);
      continue;
    }
    msg_.append(payload);
    if (!fin) continue;
    const uint8_t whole = msg_opcode_;
    msg_opcode_ = 0;
    if (whole == kWsText && !simdjson::validate_utf8(msg_.data(), msg_.size())) {
      return fail(kWsInvalidData, "text message is not UTF-8");
    }
    *ev = WsEvent{whole, msg_, 0};
    return Step::kEvent;
  }
}

}  // namespace cg
