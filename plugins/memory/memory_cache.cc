// memory.so: the built-in cache. A hash map with TTLs, bounded by a byte
// budget with least-recently-used eviction. One process only: for several
// instances behind a load balancer use redis.so.
//
// Completions never run inside the call (the SDK's rule), so every result
// is handed to the host's defer; completion records are pooled so the hot
// path (router context get/set) does not allocate for them.
#include <chatgate/chatgate.h>
#include <chatgate/cpp.hpp>

#include <cstring>
#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace {

constexpr auto sv = chatgate::view;

// Accounted per entry on top of key and value: map node, list node, strings.
constexpr size_t kEntryOverhead = 96;

struct Entry {
  std::string value;
  uint64_t expires_ms;  // 0 = never
  std::list<std::string>::iterator lru;
};

struct MemoryCache;

struct Completion {
  MemoryCache *cache;
  cg_cache_cb cb;
  void *arg;
  int status;
  std::string value;
};

struct MemoryCache {
  const cg_host_api_t *api;
  cg_host_t *host;
  size_t max_bytes;
  size_t used_bytes = 0;
  std::unordered_map<std::string, Entry> map;
  std::list<std::string> lru;  // front = most recently used
  std::vector<std::unique_ptr<Completion>> pool;
  size_t pending = 0;
  cg_done_cb stop_done = nullptr;
  void *stop_arg = nullptr;

  static size_t cost(std::string_view key, std::string_view value) {
    return key.size() + value.size() + kEntryOverhead;
  }

  void erase(std::unordered_map<std::string, Entry>::iterator it) {
    used_bytes -= cost(it->first, it->second.value);
    lru.erase(it->second.lru);
    map.erase(it);
  }

  // The live entry for key, or end(); expired entries are dropped here.
  std::unordered_map<std::string, Entry>::iterator find(std::string_view key) {
    auto it = map.find(std::string(key));
    if (it == map.end()) return it;
    const uint64_t exp = it->second.expires_ms;
    if (exp != 0 && api->now_ms(host) >= exp) {
      erase(it);
      return map.end();
    }
    return it;
  }

  void touch(Entry &e) { lru.splice(lru.begin(), lru, e.lru); }

  // Stores key=value; false when it cannot fit even in an empty cache.
  bool store(std::string_view key, std::string_view value, uint64_t ttl_ms) {
    const size_t need = cost(key, value);
    if (need > max_bytes) return false;
    if (auto it = map.find(std::string(key)); it != map.end()) erase(it);
    while (used_bytes + need > max_bytes && !lru.empty()) erase(map.find(lru.back()));
    lru.emplace_front(key);
    const uint64_t exp = ttl_ms ? api->now_ms(host) + ttl_ms : 0;
    map.emplace(std::string(key), Entry{std::string(value), exp, lru.begin()});
    used_bytes += need;
    return true;
  }

  int complete(cg_cache_cb cb, void *arg, int status, std::string_view value = {}) {
    if (cb == nullptr) return CG_EINVAL;
    std::unique_ptr<Completion> c;
    if (!pool.empty()) {
      c = std::move(pool.back());
      pool.pop_back();
    } else {
      c = std::make_unique<Completion>();
    }
    c->cache = this;
    c->cb = cb;
    c->arg = arg;
    c->status = status;
    c->value.assign(value);
    const int rc = api->defer(host, &MemoryCache::deliver, c.get());
    if (rc != 0) {
      pool.push_back(std::move(c));
      return rc;
    }
    c.release();
    pending++;
    return 0;
  }

  static void deliver(void *p) {
    std::unique_ptr<Completion> c(static_cast<Completion *>(p));
    MemoryCache *self = c->cache;
    c->cb(c->arg, c->status, cg_str_t{c->value.data(), c->value.size()});
    self->pending--;
    if (self->pool.size() < 256) {
      c->value.clear();
      self->pool.push_back(std::move(c));
    }
    if (self->stop_done != nullptr && self->pending == 0) {
      auto done = self->stop_done;
      self->stop_done = nullptr;
      done(self->stop_arg, 0);
    }
  }
};


int mc_get(void *state, cg_str_t key, cg_cache_cb cb, void *arg) {
  auto *mc = static_cast<MemoryCache *>(state);
  auto it = mc->find(sv(key));
  if (it == mc->map.end()) return mc->complete(cb, arg, CG_ENOENT);
  mc->touch(it->second);
  return mc->complete(cb, arg, 0, it->second.value);
}

int mc_set(void *state, cg_str_t key, cg_str_t value, uint64_t ttl_ms, cg_cache_cb cb, void *arg) {
  auto *mc = static_cast<MemoryCache *>(state);
  if (cb == nullptr) return CG_EINVAL;
  if (!mc->store(sv(key), sv(value), ttl_ms)) return CG_ETOOBIG;
  return mc->complete(cb, arg, 0);
}

int mc_set_nx(void *state, cg_str_t key, cg_str_t value, uint64_t ttl_ms, cg_cache_cb cb,
              void *arg) {
  auto *mc = static_cast<MemoryCache *>(state);
  if (cb == nullptr) return CG_EINVAL;
  if (mc->find(sv(key)) != mc->map.end()) return mc->complete(cb, arg, CG_EEXIST);
  if (!mc->store(sv(key), sv(value), ttl_ms)) return CG_ETOOBIG;
  return mc->complete(cb, arg, 0);
}

int mc_del(void *state, cg_str_t key, cg_cache_cb cb, void *arg) {
  auto *mc = static_cast<MemoryCache *>(state);
  auto it = mc->find(sv(key));
  if (it == mc->map.end()) return mc->complete(cb, arg, CG_ENOENT);
  mc->erase(it);
  return mc->complete(cb, arg, 0);
}

int mc_init(const cg_host_api_t *api, cg_host_t *host, const cg_config_t *config, void **state) {
  int64_t max_bytes = 0;
  if (api->config_int(config, "maxBytes", &max_bytes) != 0) {
    api->set_error(host, cg_str("maxBytes missing"));
    return CG_ECONFIG;
  }
  auto mc = std::make_unique<MemoryCache>();
  mc->api = api;
  mc->host = host;
  mc->max_bytes = static_cast<size_t>(max_bytes);
  *state = mc.release();
  return 0;
}

int mc_start(void *) { return 0; }

void mc_stop(void *state, cg_done_cb done, void *arg) {
  auto *mc = static_cast<MemoryCache *>(state);
  if (mc->pending == 0) {
    // Still never inline: reuse the completion path with a no-op callback.
    mc->stop_done = done;
    mc->stop_arg = arg;
    mc->complete([](void *, int, cg_str_t) {}, nullptr, 0);
    return;
  }
  mc->stop_done = done;
  mc->stop_arg = arg;
}

void mc_destroy(void *state) { std::unique_ptr<MemoryCache> owned(static_cast<MemoryCache *>(state)); }

const cg_cache_ops_t kOps = {sizeof(cg_cache_ops_t), mc_get, mc_set, mc_set_nx, mc_del};

const cg_config_field_t kFields[] = {
    {sizeof(cg_config_field_t), CG_CFG_INT, 0, "maxBytes", "67108864",
     "byte budget; least recently used entries are evicted beyond it", nullptr, 4096,
     int64_t{1} << 40},
};

const cg_plugin_t kPlugin = {
    sizeof(cg_plugin_t),
    CG_ABI_MAJOR,
    0,
    CG_KIND_CACHE,
    "memory",
    "1.0.0",
    "in-process LRU cache with TTLs (the built-in default)",
    0,
    kFields,
    sizeof(kFields) / sizeof(kFields[0]),
    0,
    mc_init,
    mc_start,
    mc_stop,
    mc_destroy,
    &kOps,
};

}  // namespace

extern "C" CG_EXPORT const cg_plugin_t *cg_plugin_entry(uint32_t host_major, uint32_t) {
  return host_major == CG_ABI_MAJOR ? &kPlugin : nullptr;
}
