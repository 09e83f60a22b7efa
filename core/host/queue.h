// The core's handle on a cache plugin's durable queue (ABI 1.6,
// cg_queue_ops_t): the one way the router reaches it. Calls and their
// completions are as in the SDK (see plugin.h): a completion fires once,
// never inside the call, on the loop thread; here it is called directly
// (the router is host code). Every call is counted by op and result in
// chatgate_queue_calls_total.
//
// THREAD: not thread-safe; loop thread only.
#pragma once

#include <chatgate/plugin.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace cg {

class Metrics;
class PluginInstance;

class Queue {
 public:
  // OWNERSHIP: `instance` is borrowed and must outlive the Queue; its
  // queue_ops() must not be null.
  Queue(PluginInstance &instance, Metrics &metrics);
  Queue(const Queue &) = delete;
  Queue &operator=(const Queue &) = delete;

  std::string_view name() const;
  // Started and not degraded (its Redis reachable).
  bool healthy() const;

  // As cg_queue_ops_t. OWNERSHIP: strings and spans are borrowed for the
  // call; what a completion gets is borrowed until it returns.
  int enqueue(uint32_t partition, std::string_view dedupe_key, uint64_t dedupe_ttl_ms,
              std::string_view payload, cg_cache_cb cb, void *arg);
  int lease(uint32_t partition, std::string_view owner, uint64_t ttl_ms, cg_cache_cb cb, void *arg);
  int release(uint32_t partition, std::string_view owner, cg_cache_cb cb, void *arg);
  int read(std::span<const uint32_t> partitions, std::string_view consumer, uint32_t max,
           uint64_t block_ms, cg_queue_entries_cb cb, void *arg);
  int claim(uint32_t partition, std::string_view consumer, uint64_t min_idle_ms, uint32_t max,
            cg_queue_entries_cb cb, void *arg);
  int retry(uint32_t partition, std::string_view id, std::string_view consumer, cg_cache_cb cb,
            void *arg);
  // ids[i] with record_keys[i] (empty: none); record_keys is empty or as
  // long as ids.
  int ack(uint32_t partition, std::span<const std::string> ids,
          std::span<const std::string> record_keys, uint64_t record_ttl_ms, cg_cache_cb cb,
          void *arg);
  int dead_letter(uint32_t partition, std::string_view id, std::string_view payload,
                  std::string_view reason, cg_cache_cb cb, void *arg);
  int members(std::string_view member, uint64_t ttl_ms, cg_cache_cb cb, void *arg);
  int stats(uint32_t partition_count, cg_queue_stats_cb cb, void *arg);

 private:
  // Counts a call the plugin refused at once; passes rc through.
  int counted(std::string_view op, int rc);

  PluginInstance &instance_;
  Metrics &metrics_;
  // The plugin's table (static). Its state is read per call: it exists
  // only once the instance was initialized, after this adapter is made.
  const cg_queue_ops_t *ops_;
};

}  // namespace cg
