#include "net/token_bucket.h"

#include <algorithm>
#include <cmath>

namespace cg {
namespace {

// Sweeps run at most this often, and only once the map has grown.
constexpr uint64_t kSweepEveryMs = 10000;
constexpr size_t kSweepAbove = 1024;

double burst_of(const RateLimit &l) {
  return l.burst > 0 ? static_cast<double>(l.burst) : std::max(1.0, std::floor(l.per_second));
}

}  // namespace

TokenBuckets::TokenBuckets(RateLimit limit) : limit_(limit), burst_(burst_of(limit)) {}

uint64_t TokenBuckets::take(std::string_view key, uint64_t now_ms) {
  if (!enabled()) return 0;
  if (now_ms >= next_sweep_ms_) sweep(now_ms);
  auto it = buckets_.find(key);
  if (it == buckets_.end()) {
    it = buckets_.emplace(std::string(key), Bucket{burst_, now_ms}).first;
  }
  Bucket &b = it->second;
  if (now_ms > b.at_ms) {
    b.tokens = std::min(
        burst_, b.tokens + static_cast<double>(now_ms - b.at_ms) / 1000.0 * limit_.per_second);
    b.at_ms = now_ms;
  }
  if (b.tokens >= 1.0) {
    b.tokens -= 1.0;
    return 0;
  }
  const double wait_ms = std::ceil((1.0 - b.tokens) / limit_.per_second * 1000.0);
  return std::max<uint64_t>(1, static_cast<uint64_t>(wait_ms));
}

void TokenBuckets::sweep(uint64_t now_ms) {
  next_sweep_ms_ = now_ms + kSweepEveryMs;
  if (buckets_.size() < kSweepAbove) return;
  std::erase_if(buckets_, [&](const auto &entry) {
    const Bucket &b = entry.second;
    const double refilled = b.tokens + static_cast<double>(now_ms - std::min(now_ms, b.at_ms)) /
                                           1000.0 * limit_.per_second;
    return refilled >= burst_;
  });
}

}  // namespace cg
