// The WebSocket client's frame reader (server frames: unmasked), fed in
// chunks split where the first byte says.
#include <cstdint>
#include <string>

#include "net/ws_frame.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  const size_t step = 1 + data[0] % 32;
  std::string_view in(reinterpret_cast<const char *>(data) + 1, size - 1);
  cg::WsReader reader(65536);
  size_t events = 0;
  while (!in.empty()) {
    const std::string_view chunk = in.substr(0, step);
    in.remove_prefix(chunk.size());
    if (reader.feed(chunk, [&](const cg::WsEvent &ev) {
          events += ev.payload.size() + 1;
          return true;
        }) != 0) {
      break;  // a breach: the reader is done
    }
  }
  return 0;
}
