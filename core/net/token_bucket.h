// Token buckets by key (a client address, a sender, a conversation): the
// rate limits of the listeners and the router.
//
// THREAD: not thread-safe; loop thread only.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

#include "net/options.h"

namespace cg {

class TokenBuckets {
 public:
  explicit TokenBuckets(RateLimit limit = {});
  bool enabled() const { return limit_.per_second > 0; }
  // Takes a token for `key` at `now_ms`: 0 when admitted, else the
  // milliseconds until one is there (a Retry-After). Disabled: always 0.
  uint64_t take(std::string_view key, uint64_t now_ms);
  size_t tracked() const { return buckets_.size(); }

 private:
  struct Bucket {
    double tokens;
    uint64_t at_ms;
  };
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  // Forgets buckets that are full again, so keys seen once do not pile up.
  void sweep(uint64_t now_ms);

  RateLimit limit_;
  double burst_ = 1;
  std::unordered_map<std::string, Bucket, Hash, std::equal_to<>> buckets_;
  uint64_t next_sweep_ms_ = 0;
};

}  // namespace cg
