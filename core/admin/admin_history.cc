#include "admin/admin_history.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <chrono>

#include "base/json.h"
#include "base/log.h"
#include "base/loop.h"

namespace cg {
namespace {

// The value of label `name` in label text (channel="api" -> api).
std::string_view label_value(std::string_view labels, std::string_view name) {
  const std::string key = std::string(name) + "=\"";
  const size_t at = labels.find(key);
  if (at == std::string_view::npos) return {};
  const size_t start = at + key.size();
  const size_t end = labels.find('"', start);
  return end == std::string_view::npos ? std::string_view() : labels.substr(start, end - start);
}

std::string number(double v) {
  if (v < 0) return "null";
  return fmt::format("{:.4g}", v);
}

}  // namespace

double histogram_quantile(double q, const std::array<uint64_t, Histogram::kBounds.size()> &buckets,
                          uint64_t count) {
  if (count == 0) return -1;
  const double rank = q * static_cast<double>(count);
  double lower = 0;
  uint64_t below = 0;
  for (size_t i = 0; i < buckets.size(); ++i) {
    if (static_cast<double>(buckets[i]) >= rank) {
      const uint64_t in_bucket = buckets[i] - below;
      if (in_bucket == 0) return Histogram::kBounds[i];
      return lower + (Histogram::kBounds[i] - lower) * (rank - static_cast<double>(below)) /
                         static_cast<double>(in_bucket);
    }
    lower = Histogram::kBounds[i];
    below = buckets[i];
  }
  // In the +Inf bucket: the largest bound is all that can be said.
  return Histogram::kBounds.back();
}

AdminHistory::AdminHistory(Loop &loop, const Metrics &metrics, uint64_t interval_ms)
    : loop_(loop),
      metrics_(metrics),
      interval_ms_(interval_ms),
      max_samples_(static_cast<size_t>(3600000 / interval_ms)) {
  last_ = read();
  loop_.timer_start(
      interval_ms_, interval_ms_,
      [](void *arg, uint64_t) { static_cast<AdminHistory *>(arg)->sample(); }, this, &timer_id_);
}

AdminHistory::~AdminHistory() {
  if (timer_id_ != 0) loop_.timer_stop(timer_id_);
}

AdminHistory::Totals AdminHistory::read() const {
  Totals t;
  auto by_channel = [this](std::string_view family, auto &out) {
    metrics_.each_value(family, [&out](std::string_view labels, double v) {
      out[std::string(label_value(labels, "channel"))] += v;
    });
  };
  by_channel("chatgate_messages_received_total", t.in);
  by_channel("chatgate_messages_answered_total", t.out);
  by_channel("chatgate_messages_failed_total", t.failed);
  auto sum_histograms = [this](std::string_view family, auto &buckets, uint64_t &count) {
    metrics_.each_histogram(family, [&](std::string_view, const Histogram &h) {
      for (size_t i = 0; i < buckets.size(); ++i) buckets[i] += h.buckets[i];
      count += h.count;
    });
  };
  sum_histograms("chatgate_reply_latency_seconds", t.reply, t.reply_count);
  sum_histograms("chatgate_model_latency_seconds", t.model, t.model_count);
  metrics_.each_value("chatgate_cache_hits_total",
                      [&t](std::string_view, double v) { t.hits += v; });
  metrics_.each_value("chatgate_cache_misses_total",
                      [&t](std::string_view, double v) { t.misses += v; });
  t.errors = static_cast<double>(log_lines_written(spdlog::level::err));
  return t;
}

void AdminHistory::sample() {
  const Totals now = read();
  samples_.push_back(between(last_, now));
  if (samples_.size() > max_samples_) samples_.pop_front();
  last_ = now;
}

std::string AdminHistory::summary_json() const { return between(Totals{}, read()); }

std::string AdminHistory::between(const Totals &before, const Totals &now) {
  auto deltas = [](const auto &cur, const auto &prev) {
    std::string out = "{";
    for (const auto &[channel, v] : cur) {
      auto it = prev.find(channel);
      const double d = v - (it == prev.end() ? 0 : it->second);
      if (out.size() > 1) out += ",";
      out += json_quote(channel) + ":" + number(d);
    }
    return out + "}";
  };
  double answered = 0, failed = 0;
  for (const auto &[c, v] : now.out) {
    auto it = before.out.find(c);
    answered += v - (it == before.out.end() ? 0 : it->second);
  }
  for (const auto &[c, v] : now.failed) {
    auto it = before.failed.find(c);
    failed += v - (it == before.failed.end() ? 0 : it->second);
  }
  auto quantiles = [](const auto &cur, const auto &prev, uint64_t cur_count, uint64_t prev_count) {
    std::array<uint64_t, Histogram::kBounds.size()> d{};
    for (size_t i = 0; i < d.size(); ++i) d[i] = cur[i] - prev[i];
    const uint64_t n = cur_count - prev_count;
    return "[" + number(histogram_quantile(0.5, d, n)) + "," +
           number(histogram_quantile(0.95, d, n)) + "," + number(histogram_quantile(0.99, d, n)) +
           "]";
  };
  const double hits = now.hits - before.hits, misses = now.misses - before.misses;
  const auto unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count();
  std::string s = fmt::format("{{\"t\":{},\"in\":{},\"out\":{},\"failed\":{}", unix_ms,
                              deltas(now.in, before.in), deltas(now.out, before.out),
                              deltas(now.failed, before.failed));
  s += ",\"success\":" + number(answered + failed > 0 ? answered / (answered + failed) : -1);
  s += ",\"reply\":" + quantiles(now.reply, before.reply, now.reply_count, before.reply_count);
  s += ",\"model\":" + quantiles(now.model, before.model, now.model_count, before.model_count);
  s += ",\"cacheHit\":" + number(hits + misses > 0 ? hits / (hits + misses) : -1);
  s += ",\"errors\":" + number(now.errors - before.errors) + "}";
  return s;
}

std::string AdminHistory::to_json() const {
  std::string out =
      "{\"intervalSeconds\":" + std::to_string(interval_ms_ / 1000) + ",\"samples\":[";
  bool first = true;
  for (const std::string &s : samples_) {
    if (!first) out += ",";
    first = false;
    out += s;
  }
  return out + "]}";
}

}  // namespace cg
