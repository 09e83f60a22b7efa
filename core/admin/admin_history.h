// The last hour of the admin page's charts: every admin.chartIntervalSeconds
// (default 10 s) the sampler reads
// the metrics registry and keeps what changed in that interval (messages in,
// answered and failed per channel, success rate, reply and model latency
// percentiles, cache hit ratio, error log lines), an hour of samples in a
// ring. A
// page opened now shows the hour before it, not an empty chart.
//
// THREAD: not thread-safe; loop thread only.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <map>
#include <string>

#include "base/metrics.h"

namespace cg {

class Loop;

// The q-quantile (0..1) of the observations between two snapshots of one
// histogram family's buckets, interpolated within a bucket as Prometheus's
// histogram_quantile does. -1 when nothing was observed.
double histogram_quantile(double q, const std::array<uint64_t, Histogram::kBounds.size()> &buckets,
                          uint64_t count);

class AdminHistory {
 public:
  AdminHistory(Loop &loop, const Metrics &metrics, uint64_t interval_ms);
  ~AdminHistory();
  AdminHistory(const AdminHistory &) = delete;
  AdminHistory &operator=(const AdminHistory &) = delete;

  // Takes a sample now (the timer does every interval).
  void sample();
  // {"intervalSeconds":10,"samples":[{...}, ...]}, oldest first.
  std::string to_json() const;
  // One sample's fields over the whole run (since start): the admin API's
  // metrics summary.
  std::string summary_json() const;

 private:
  struct Totals {                                                // cumulative values at one sample
    std::map<std::string, double, std::less<>> in, out, failed;  // by channel
    std::array<uint64_t, Histogram::kBounds.size()> reply{}, model{};
    uint64_t reply_count = 0, model_count = 0;
    double hits = 0, misses = 0, errors = 0;
  };
  Totals read() const;
  // A sample: what changed from `before` to `now`, as JSON.
  static std::string between(const Totals &before, const Totals &now);

  Loop &loop_;
  const Metrics &metrics_;
  uint64_t interval_ms_;
  size_t max_samples_;  // an hour's worth
  uint64_t timer_id_ = 0;
  Totals last_;
  std::deque<std::string> samples_;  // each one JSON object
};

}  // namespace cg
