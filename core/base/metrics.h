// An in-process Prometheus registry: counters, gauges and histograms keyed
// by name and label text, rendered in the text exposition format. Core code
// keeps the returned pointers (stable for the registry's life) so the hot
// path does no lookup.
//
// THREAD: not thread-safe; loop thread only.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

namespace cg {

struct Histogram {
  // Seconds; suits reply and model latencies from 1 ms to a minute.
  static constexpr std::array<double, 12> kBounds = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                     0.25,  0.5,   1,    2.5,   10,   60};
  std::array<uint64_t, kBounds.size()> buckets{};
  uint64_t count = 0;
  double sum = 0;
  void observe(double v);
};

class Metrics {
 public:
  enum class Type { kCounter, kGauge, kHistogram };

  // Returns the series for name{labels}, creating it. `labels` is label
  // text without braces (`channel="api"`). Returns nullptr when the name is
  // not a valid Prometheus name or is registered with another type.
  double *counter(std::string_view name, std::string_view labels, std::string_view help = {});
  double *gauge(std::string_view name, std::string_view labels, std::string_view help = {});
  Histogram *histogram(std::string_view name, std::string_view labels, std::string_view help = {});

  // The whole registry in Prometheus text format 0.0.4.
  std::string render() const;

  // Every series of a counter or gauge family / of a histogram family (none
  // when the family does not exist), for the admin page's sampler.
  void each_value(std::string_view name,
                  const std::function<void(std::string_view labels, double value)> &fn) const;
  void each_histogram(
      std::string_view name,
      const std::function<void(std::string_view labels, const Histogram &h)> &fn) const;

  static bool valid_name(std::string_view name);
  static bool valid_labels(std::string_view labels);

 private:
  struct Family {
    Type type;
    std::string help;
    std::map<std::string, std::unique_ptr<double>, std::less<>> values;
    std::map<std::string, std::unique_ptr<Histogram>, std::less<>> histograms;
  };
  Family *family(std::string_view name, Type type, std::string_view help);
  std::map<std::string, Family, std::less<>> families_;
};

}  // namespace cg
