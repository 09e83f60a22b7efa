#include "host/queue.h"

#include <fmt/format.h>

#include <chatgate/cpp.hpp>
#include <vector>

#include "base/metrics.h"
#include "host/plugin_instance.h"

namespace cg {
namespace {
constexpr auto cs = chatgate::str;
}  // namespace

Queue::Queue(PluginInstance &instance, Metrics &metrics)
    : instance_(instance), metrics_(metrics), ops_(instance.queue_ops()) {}

std::string_view Queue::name() const { return instance_.name(); }

bool Queue::healthy() const {
  return instance_.phase() == PluginInstance::Phase::kStarted &&
         instance_.health() == CG_STATE_RUNNING;
}

int Queue::counted(std::string_view op, int rc) {
  if (rc != 0) {
    if (double *c = metrics_.counter("chatgate_queue_refused_calls_total",
                                     fmt::format("op=\"{}\",error=\"{}\"", op, cg_strerror(rc)),
                                     "Durable queue calls the queue refused at once")) {
      *c += 1;
    }
  }
  return rc;
}

int Queue::enqueue(uint32_t partition, std::string_view dedupe_key, uint64_t dedupe_ttl_ms,
                   std::string_view payload, cg_cache_cb cb, void *arg) {
  return counted("enqueue", ops_->enqueue(instance_.state(), partition, cs(dedupe_key),
                                          dedupe_ttl_ms, cs(payload), cb, arg));
}

int Queue::lease(uint32_t partition, std::string_view owner, uint64_t ttl_ms, cg_cache_cb cb,
                 void *arg) {
  return counted("lease", ops_->lease(instance_.state(), partition, cs(owner), ttl_ms, cb, arg));
}

int Queue::release(uint32_t partition, std::string_view owner, cg_cache_cb cb, void *arg) {
  return counted("release", ops_->release(instance_.state(), partition, cs(owner), cb, arg));
}

int Queue::read(std::span<const uint32_t> partitions, std::string_view consumer, uint32_t max,
                uint64_t block_ms, cg_queue_entries_cb cb, void *arg) {
  return counted("read", ops_->read(instance_.state(), partitions.data(), partitions.size(),
                                    cs(consumer), max, block_ms, cb, arg));
}

int Queue::claim(uint32_t partition, std::string_view consumer, uint64_t min_idle_ms, uint32_t max,
                 cg_queue_entries_cb cb, void *arg) {
  return counted(
      "claim", ops_->claim(instance_.state(), partition, cs(consumer), min_idle_ms, max, cb, arg));
}

int Queue::retry(uint32_t partition, std::string_view id, std::string_view consumer, cg_cache_cb cb,
                 void *arg) {
  return counted("retry", ops_->retry(instance_.state(), partition, cs(id), cs(consumer), cb, arg));
}

int Queue::ack(uint32_t partition, std::span<const std::string> ids,
               std::span<const std::string> record_keys, uint64_t record_ttl_ms, cg_cache_cb cb,
               void *arg) {
  std::vector<cg_str_t> id_views, record_views;
  id_views.reserve(ids.size());
  for (const std::string &id : ids) id_views.push_back(cs(id));
  for (const std::string &k : record_keys) record_views.push_back(cs(k));
  if (!record_views.empty() && record_views.size() != id_views.size()) return CG_EINVAL;
  return counted("ack", ops_->ack(instance_.state(), partition, id_views.data(),
                                  record_views.empty() ? nullptr : record_views.data(),
                                  id_views.size(), record_ttl_ms, cb, arg));
}

int Queue::dead_letter(uint32_t partition, std::string_view id, std::string_view payload,
                       std::string_view reason, cg_cache_cb cb, void *arg) {
  return counted("dead_letter", ops_->dead_letter(instance_.state(), partition, cs(id), cs(payload),
                                                  cs(reason), cb, arg));
}

int Queue::members(std::string_view member, uint64_t ttl_ms, cg_cache_cb cb, void *arg) {
  return counted("members", ops_->members(instance_.state(), cs(member), ttl_ms, cb, arg));
}

int Queue::stats(uint32_t partition_count, cg_queue_stats_cb cb, void *arg) {
  return counted("stats", ops_->stats(instance_.state(), partition_count, cb, arg));
}

}  // namespace cg
