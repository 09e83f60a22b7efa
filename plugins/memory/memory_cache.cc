// memory.so: the built-in cache. A hash map with TTLs, bounded by a byte
// budget with least-recently-used eviction. One process only: for several
// instances behind a load balancer use redis.so.
//
// Completions never run inside the call (the SDK's rule), so every result
// is handed to the host's defer; completion records are pooled so the hot
// path (router context get/set) does not allocate for them.
#include <chatgate/chatgate.h>

#include <chatgate/cpp.hpp>
#include <cstdint>
#include <list>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace {

constexpr auto sv = chatgate::view;

// Accounted per entry on top of key and value: map node, list node, strings.
constexpr size_t kEntryOverhead = 96;

// Completion records kept for reuse. The pool's capacity is reserved at init
// so that returning a record never allocates, and so never throws, on the
// delivery path.
constexpr size_t kPoolMax = 256;

// A pooled record keeps its value buffer for the next result up to this
// size; bigger ones are released so that a burst of large values does not
// stay pinned in the pool, outside the byte budget.
constexpr size_t kPooledValueMax = 4096;

struct Entry {
  std::string key;
  std::string value;
  uint64_t expires_ms;  // 0 = never
};

// Entries live in the LRU list (front = most recently used) and the index
// maps views of their keys to them: each key is stored once, and a lookup
// by the borrowed cg_str_t allocates nothing. List nodes never move (splice
// relinks them), so a view stays valid until its entry is erased.
using Lru = std::list<Entry>;
using Index = std::unordered_map<std::string_view, Lru::iterator>;

// now + ttl, saturated: a TTL beyond the clock's range means "never expires"
// in practice, not a wrapped expiry in the past.
uint64_t expiry(uint64_t now, uint64_t ttl_ms) {
  if (ttl_ms == 0) return 0;
  return ttl_ms > UINT64_MAX - now ? UINT64_MAX : now + ttl_ms;
}

// Runs the body of a C entry point: no exception may unwind into the host's
// frames. Only allocation failures can be thrown here; CG_EIO stands in for
// anything else, as a generic internal failure.
template <typename Fn>
int guarded(Fn &&fn) noexcept {
  try {
    return fn();
  } catch (const std::bad_alloc &) {
    return CG_ENOMEM;
  } catch (const std::length_error &) {
    return CG_ETOOBIG;
  } catch (...) {
    return CG_EIO;
  }
}

struct MemoryCache;

struct Completion {
  MemoryCache *cache;
  cg_cache_cb cb;
  void *arg;
  int status;
  std::string value;
};

// Operations acquire everything that can throw (a completion record, copies
// of key and value) before they change the cache, so a failed call leaves it
// as it was.
struct MemoryCache {
  const cg_host_api_t *api = nullptr;
  cg_host_t *host = nullptr;
  size_t max_bytes = 0;
  size_t used_bytes = 0;
  Lru lru;
  Index index;
  std::vector<std::unique_ptr<Completion>> pool;
  size_t pending = 0;  // deferred completions, the stop check included
  cg_done_cb stop_done = nullptr;
  void *stop_arg = nullptr;

  static size_t cost(std::string_view key, std::string_view value) {
    return key.size() + value.size() + kEntryOverhead;
  }

  void erase(Index::iterator it) noexcept {
    const Lru::iterator e = it->second;
    used_bytes -= cost(e->key, e->value);
    index.erase(it);  // first: its key is a view into the list node
    lru.erase(e);
  }

  // The live entry for key, or end(); expired entries are dropped here.
  Index::iterator find(std::string_view key) {
    auto it = index.find(key);
    if (it == index.end()) return it;
    const uint64_t exp = it->second->expires_ms;
    if (exp != 0 && api->now_ms(host) >= exp) {
      erase(it);
      return index.end();
    }
    return it;
  }

  void touch(Lru::iterator e) noexcept { lru.splice(lru.begin(), lru, e); }

  // The entry at the front stays: it alone never exceeds the budget.
  void evict() noexcept {
    while (used_bytes > max_bytes && lru.size() > 1) erase(index.find(lru.back().key));
  }

  // Stores key=value; false when it cannot fit even in an empty cache.
  bool store(std::string_view key, std::string_view value, uint64_t ttl_ms) {
    const size_t need = cost(key, value);
    if (need > max_bytes) return false;
    const uint64_t exp = expiry(api->now_ms(host), ttl_ms);
    if (auto it = index.find(key); it != index.end()) {
      std::string fresh(value);
      Entry &e = *it->second;
      used_bytes -= cost(e.key, e.value);
      e.value.swap(fresh);
      e.expires_ms = exp;
      touch(it->second);
    } else {
      Lru fresh;
      fresh.push_back(Entry{std::string(key), std::string(value), exp});
      index.emplace(std::string_view(fresh.front().key), fresh.begin());
      lru.splice(lru.begin(), fresh);
    }
    used_bytes += need;
    evict();
    return true;
  }

  std::unique_ptr<Completion> take() {
    if (pool.empty()) return std::make_unique<Completion>();
    std::unique_ptr<Completion> c = std::move(pool.back());
    pool.pop_back();
    return c;
  }

  void give_back(std::unique_ptr<Completion> c) noexcept {
    if (pool.size() >= kPoolMax) return;
    if (c->value.capacity() > kPooledValueMax) {
      std::string().swap(c->value);
    } else {
      c->value.clear();
    }
    pool.push_back(std::move(c));
  }

  // Hands the result to the host's defer (never inline, the SDK's rule).
  int post(std::unique_ptr<Completion> c, cg_cache_cb cb, void *arg, int status) noexcept {
    c->cache = this;
    c->cb = cb;
    c->arg = arg;
    c->status = status;
    const int rc = api->defer(host, &MemoryCache::deliver, c.get());
    if (rc != 0) {
      give_back(std::move(c));
      return rc;
    }
    (void)c.release();  // owned by the deferred deliver now
    pending++;
    return 0;
  }

  void maybe_stopped() noexcept {
    if (stop_done != nullptr && pending == 0) {
      const cg_done_cb done = stop_done;
      stop_done = nullptr;
      done(stop_arg, 0);
    }
  }

  static void deliver(void *p) noexcept {
    std::unique_ptr<Completion> c(static_cast<Completion *>(p));
    MemoryCache *self = c->cache;
    c->cb(c->arg, c->status, cg_str_t{c->value.data(), c->value.size()});
    self->pending--;
    self->give_back(std::move(c));
    self->maybe_stopped();
  }

  static void stop_check(void *p) noexcept {
    auto *self = static_cast<MemoryCache *>(p);
    self->pending--;
    self->maybe_stopped();
  }
};

int mc_get(void *state, cg_str_t key, cg_cache_cb cb, void *arg) noexcept {
  return guarded([&]() -> int {
    auto *mc = static_cast<MemoryCache *>(state);
    if (cb == nullptr) return CG_EINVAL;
    std::unique_ptr<Completion> c = mc->take();
    auto it = mc->find(sv(key));
    if (it == mc->index.end()) return mc->post(std::move(c), cb, arg, CG_ENOENT);
    c->value.assign(it->second->value);
    mc->touch(it->second);
    return mc->post(std::move(c), cb, arg, 0);
  });
}

int mc_set(void *state, cg_str_t key, cg_str_t value, uint64_t ttl_ms, cg_cache_cb cb,
           void *arg) noexcept {
  return guarded([&]() -> int {
    auto *mc = static_cast<MemoryCache *>(state);
    if (cb == nullptr) return CG_EINVAL;
    std::unique_ptr<Completion> c = mc->take();
    if (!mc->store(sv(key), sv(value), ttl_ms)) {
      mc->give_back(std::move(c));
      return CG_ETOOBIG;
    }
    return mc->post(std::move(c), cb, arg, 0);
  });
}

int mc_set_nx(void *state, cg_str_t key, cg_str_t value, uint64_t ttl_ms, cg_cache_cb cb,
              void *arg) noexcept {
  return guarded([&]() -> int {
    auto *mc = static_cast<MemoryCache *>(state);
    if (cb == nullptr) return CG_EINVAL;
    std::unique_ptr<Completion> c = mc->take();
    if (mc->find(sv(key)) != mc->index.end()) return mc->post(std::move(c), cb, arg, CG_EEXIST);
    if (!mc->store(sv(key), sv(value), ttl_ms)) {
      mc->give_back(std::move(c));
      return CG_ETOOBIG;
    }
    return mc->post(std::move(c), cb, arg, 0);
  });
}

int mc_del(void *state, cg_str_t key, cg_cache_cb cb, void *arg) noexcept {
  return guarded([&]() -> int {
    auto *mc = static_cast<MemoryCache *>(state);
    if (cb == nullptr) return CG_EINVAL;
    std::unique_ptr<Completion> c = mc->take();
    auto it = mc->find(sv(key));
    if (it == mc->index.end()) return mc->post(std::move(c), cb, arg, CG_ENOENT);
    mc->erase(it);
    return mc->post(std::move(c), cb, arg, 0);
  });
}

int mc_init(const cg_host_api_t *api, cg_host_t *host, const cg_config_t *config,
            void **state) noexcept {
  return guarded([&]() -> int {
    int64_t max_bytes = 0;
    if (api->config_int(config, "maxBytes", &max_bytes) != 0) {
      api->set_error(host, cg_str("maxBytes missing"));
      return CG_ECONFIG;
    }
    auto mc = std::make_unique<MemoryCache>();
    mc->api = api;
    mc->host = host;
    mc->max_bytes = static_cast<size_t>(max_bytes);
    mc->pool.reserve(kPoolMax);
    *state = mc.release();
    return 0;
  });
}

int mc_start(void *) noexcept { return 0; }

void mc_stop(void *state, cg_done_cb done, void *arg) noexcept {
  auto *mc = static_cast<MemoryCache *>(state);
  mc->stop_done = done;
  mc->stop_arg = arg;
  if (mc->pending > 0) return;  // the last delivery calls done
  // Still never inline. Counted as pending so that done cannot fire, and the
  // host destroy us, while this check is queued.
  if (mc->api->defer(mc->host, &MemoryCache::stop_check, mc) == 0) {
    mc->pending++;
    return;
  }
  // The host refuses to defer (shutting down): inline beats never.
  mc->maybe_stopped();
}

void mc_destroy(void *state) noexcept {
  std::unique_ptr<MemoryCache> owned(static_cast<MemoryCache *>(state));
}

const cg_cache_ops_t kOps = {sizeof(cg_cache_ops_t), mc_get, mc_set, mc_set_nx, mc_del, nullptr};

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
