// memory.so loaded through the real loader and driven against a fake host:
// the way a plugin author tests a plugin without running chatgate.
#include <catch2/catch.hpp>
#include <cstdint>
#include <cstring>
#include <deque>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "host/plugin_loader.h"

namespace {

struct FakeHost {
  uint64_t now = 1000;
  int64_t max_bytes = 4096;
  // Make the host's functions throw, to check that memory.so's C entries
  // never let an exception out (a real host's never throw).
  bool throw_in_now = false;
  bool throw_in_config = false;
  std::deque<std::pair<cg_fn, void *>> deferred;
  void run() {
    while (!deferred.empty()) {
      auto [fn, arg] = deferred.front();
      deferred.pop_front();
      fn(arg);
    }
  }
};

FakeHost *g_host = nullptr;

uint64_t fake_now(cg_host_t *) {
  if (g_host->throw_in_now) throw std::bad_alloc();
  return g_host->now;
}
int fake_defer(cg_host_t *, cg_fn fn, void *arg) {
  g_host->deferred.emplace_back(fn, arg);
  return 0;
}
int fake_config_int(const cg_config_t *, const char *key, int64_t *out) {
  if (std::strcmp(key, "maxBytes") != 0) return CG_EINVAL;
  if (g_host->throw_in_config) throw std::bad_alloc();
  *out = g_host->max_bytes;
  return 0;
}
void fake_set_error(cg_host_t *, cg_str_t) {}

cg_host_api_t make_api() {
  cg_host_api_t api{};
  api.struct_size = sizeof api;
  api.abi_major = CG_ABI_MAJOR;
  api.abi_minor = CG_ABI_MINOR;
  api.now_ms = fake_now;
  api.defer = fake_defer;
  api.config_int = fake_config_int;
  api.set_error = fake_set_error;
  return api;
}

struct Result {
  int calls = 0;
  int status = 1;
  std::string value;
};

void on_result(void *arg, int status, cg_str_t value) {
  auto *r = static_cast<Result *>(arg);
  r->calls++;
  r->status = status;
  r->value.assign(value.ptr ? value.ptr : "", value.len);
}

cg_str_t s(const std::string &v) { return {v.data(), v.size()}; }

struct Cache {
  FakeHost host;
  cg_host_api_t api = make_api();
  cg::LoadedPlugin plugin;
  const cg_cache_ops_t *ops = nullptr;
  void *state = nullptr;

  explicit Cache(int64_t max_bytes) {
    g_host = &host;
    host.max_bytes = max_bytes;
    std::string error;
    REQUIRE(cg::plugin_load(std::string(CG_TEST_PLUGIN_DIR) + "/memory.so", &plugin, &error) == 0);
    REQUIRE(plugin.desc->kind == CG_KIND_CACHE);
    ops = static_cast<const cg_cache_ops_t *>(plugin.desc->ops);
    REQUIRE(plugin.desc->init(&api, nullptr, nullptr, &state) == 0);
  }
  ~Cache() {
    plugin.desc->destroy(state);
    g_host = nullptr;
  }
  Result get(const std::string &k) {
    Result r;
    REQUIRE(ops->get(state, s(k), on_result, &r) == 0);
    CHECK(r.calls == 0);  // never inside the call
    host.run();
    CHECK(r.calls == 1);
    return r;
  }
  int set(const std::string &k, const std::string &v, uint64_t ttl = 0, bool nx = false) {
    Result r;
    const int rc = (nx ? ops->set_nx : ops->set)(state, s(k), s(v), ttl, on_result, &r);
    if (rc != 0) return rc;
    CHECK(r.calls == 0);
    host.run();
    CHECK(r.calls == 1);
    return r.status;
  }
  int del(const std::string &k) {
    Result r;
    REQUIRE(ops->del(state, s(k), on_result, &r) == 0);
    host.run();
    return r.status;
  }
};

}  // namespace

TEST_CASE("memory cache: get, set, set-if-absent, delete", "[memory]") {
  Cache c(1 << 20);
  CHECK(c.get("k").status == CG_ENOENT);
  CHECK(c.set("k", "v1") == 0);
  Result r = c.get("k");
  CHECK(r.status == 0);
  CHECK(r.value == "v1");
  CHECK(c.set("k", "v2", 0, true) == CG_EEXIST);
  CHECK(c.get("k").value == "v1");
  CHECK(c.set("k", "v3") == 0);
  CHECK(c.get("k").value == "v3");
  CHECK(c.del("k") == 0);
  CHECK(c.del("k") == CG_ENOENT);
  CHECK(c.set("k", "v4", 0, true) == 0);
  CHECK(c.get("k").value == "v4");
}

TEST_CASE("memory cache: entries expire after their TTL", "[memory]") {
  Cache c(1 << 20);
  CHECK(c.set("short", "x", 500) == 0);
  CHECK(c.set("forever", "y") == 0);
  c.host.now += 499;
  CHECK(c.get("short").status == 0);
  c.host.now += 1;
  CHECK(c.get("short").status == CG_ENOENT);
  // An expired key counts as absent for set-if-absent.
  CHECK(c.set("short", "again", 500, true) == 0);
  c.host.now += 1000000;
  CHECK(c.get("forever").value == "y");
}

TEST_CASE("memory cache: the byte budget evicts least recently used first", "[memory]") {
  // Each entry costs key + value + 96 bytes of accounting: 4096 holds 10 of
  // these (4 + 300 + 96 = 400 bytes).
  Cache c(4096);
  const std::string v(300, 'x');
  for (int i = 0; i < 10; i++) CHECK(c.set("k" + std::to_string(i) + "..", v) == 0);
  CHECK(c.get("k0..").status == 0);  // touch k0 so k1 is now the oldest
  CHECK(c.set("new.", v) == 0);
  CHECK(c.get("k1..").status == CG_ENOENT);
  CHECK(c.get("k0..").status == 0);
  CHECK(c.get("k2..").status == 0);
  CHECK(c.get("new.").status == 0);
}

TEST_CASE("memory cache: a value larger than the budget is refused", "[memory]") {
  Cache c(4096);
  Result r;
  const std::string big(5000, 'x');
  CHECK(c.ops->set(c.state, s("big"), s(big), 0, on_result, &r) == CG_ETOOBIG);
  c.host.run();
  CHECK(r.calls == 0);  // an error return means no callback
}

TEST_CASE("memory cache: stop completes after pending completions", "[memory]") {
  Cache c(1 << 20);
  Result r;
  REQUIRE(c.ops->set(c.state, s("a"), s("b"), 0, on_result, &r) == 0);
  int stopped = 0;
  c.plugin.desc->stop(
      c.state, [](void *arg, int status) { *static_cast<int *>(arg) += status == 0 ? 1 : 100; },
      &stopped);
  CHECK(stopped == 0);
  c.host.run();
  CHECK(r.calls == 1);
  CHECK(stopped == 1);
}

TEST_CASE("memory cache: stop with nothing pending completes later, not inline", "[memory]") {
  Cache c(1 << 20);
  int stopped = 0;
  c.plugin.desc->stop(
      c.state, [](void *arg, int status) { *static_cast<int *>(arg) += status == 0 ? 1 : 100; },
      &stopped);
  CHECK(stopped == 0);
  c.host.run();
  CHECK(stopped == 1);
}

TEST_CASE("memory cache: a TTL beyond the clock's range never expires", "[memory]") {
  Cache c(1 << 20);
  // now + ttl would wrap to 999, an expiry in the past.
  CHECK(c.set("huge", "x", UINT64_MAX) == 0);
  CHECK(c.get("huge").value == "x");
  CHECK(c.set("nearly", "y", UINT64_MAX - 500) == 0);
  c.host.now += uint64_t{1} << 50;
  CHECK(c.get("huge").value == "x");
  CHECK(c.get("nearly").value == "y");
  // A late clock saturates too.
  c.host.now = UINT64_MAX - 100;
  CHECK(c.set("late", "z", 200) == 0);
  CHECK(c.get("late").value == "z");
  // Ordinary TTLs still expire.
  c.host.now = 1000;
  CHECK(c.set("short", "s", 10) == 0);
  c.host.now += 10;
  CHECK(c.get("short").status == CG_ENOENT);
}

TEST_CASE("memory cache: overwriting a key replaces value and TTL", "[memory]") {
  Cache c(1 << 20);
  CHECK(c.set("k", "old", 500) == 0);
  CHECK(c.set("k", "new") == 0);
  c.host.now += 1000;
  CHECK(c.get("k").value == "new");
  CHECK(c.set("k", "ttl", 500) == 0);
  c.host.now += 500;
  CHECK(c.get("k").status == CG_ENOENT);
}

TEST_CASE("memory cache: overwriting a key does not count it twice", "[memory]") {
  // 10 entries of 400 bytes fill the 4096 budget (see the eviction test).
  Cache c(4096);
  const std::string v(300, 'x');
  for (int i = 0; i < 10; i++) CHECK(c.set("k" + std::to_string(i) + "..", v) == 0);
  for (int i = 0; i < 50; i++) CHECK(c.set("k5..", v) == 0);
  for (int i = 0; i < 10; i++) CHECK(c.get("k" + std::to_string(i) + "..").status == 0);
  // 100 more bytes for the least recently used key (4100 > 4096) evict the
  // next one, not the key being written.
  const std::string bigger = v + std::string(100, 'y');
  CHECK(c.set("k0..", bigger) == 0);
  CHECK(c.get("k1..").status == CG_ENOENT);
  CHECK(c.get("k0..").value == bigger);
  CHECK(c.get("k2..").status == 0);
}

TEST_CASE("memory cache: keys and values are bytes, NULs included", "[memory]") {
  Cache c(1 << 20);
  const std::string k1("a\0b", 3), k2("a\0c", 3), v("\0\xff\0", 3);
  CHECK(c.set(k1, v) == 0);
  CHECK(c.get(k2).status == CG_ENOENT);
  CHECK(c.get("a").status == CG_ENOENT);
  CHECK(c.set(k2, "two") == 0);
  CHECK(c.get(k1).value == v);
  CHECK(c.get(k2).value == "two");
}

TEST_CASE("memory cache: a call without a callback is refused and changes nothing", "[memory]") {
  Cache c(1 << 20);
  CHECK(c.set("k", "v") == 0);
  CHECK(c.ops->del(c.state, s("k"), nullptr, nullptr) == CG_EINVAL);
  CHECK(c.ops->set(c.state, s("k"), s("w"), 0, nullptr, nullptr) == CG_EINVAL);
  CHECK(c.ops->set_nx(c.state, s("n"), s("w"), 0, nullptr, nullptr) == CG_EINVAL);
  CHECK(c.ops->get(c.state, s("k"), nullptr, nullptr) == CG_EINVAL);
  c.host.run();
  CHECK(c.get("k").value == "v");
  CHECK(c.get("n").status == CG_ENOENT);
}

TEST_CASE("memory cache: no exception crosses the C ABI", "[memory]") {
  Cache c(1 << 20);
  CHECK(c.set("k", "v") == 0);
  c.host.throw_in_now = true;
  Result r;
  CHECK(c.ops->set(c.state, s("n"), s("w"), 100, on_result, &r) == CG_ENOMEM);
  CHECK(c.ops->set_nx(c.state, s("n"), s("w"), 100, on_result, &r) == CG_ENOMEM);
  c.host.run();
  CHECK(r.calls == 0);  // an error return means no callback
  c.host.throw_in_now = false;
  // The failed calls left the cache as it was.
  CHECK(c.get("n").status == CG_ENOENT);
  CHECK(c.get("k").value == "v");

  c.host.throw_in_config = true;
  void *state = reinterpret_cast<void *>(1);
  CHECK(c.plugin.desc->init(&c.api, nullptr, nullptr, &state) == CG_ENOMEM);
  CHECK(state == reinterpret_cast<void *>(1));  // untouched on failure
}
