#include "host/cache.h"

#include <chatgate/cpp.hpp>

#include "base/loop.h"
#include "base/metrics.h"
#include "host/plugin_instance.h"

namespace cg {
namespace {

constexpr auto cs = chatgate::str;
// A spare call's value buffer above this size is freed rather than kept.
constexpr size_t kKeepValueBytes = size_t{16} * 1024;

}  // namespace

struct Cache::Call {
  Cache *cache = nullptr;
  cg_cache_cb cb = nullptr;
  void *arg = nullptr;
  Delivery delivery = Delivery::kDirect;
  int status = 0;
  std::string value;  // a deferred completion's copy
};

Cache::Cache(PluginInstance &instance, Loop &loop, Metrics &metrics)
    : instance_(instance), loop_(loop) {
  const std::string labels = "cache=\"" + instance.name() + "\"";
  in_flight_gauge_ = metrics.gauge("chatgate_cache_calls_in_flight", labels,
                                   "Cache calls waiting for the cache plugin's completion");
  const char *help = "Cache calls completed, by result";
  ok_ = metrics.counter("chatgate_cache_calls_total", labels + ",result=\"ok\"", help);
  missing_ = metrics.counter("chatgate_cache_calls_total", labels + ",result=\"absent\"", help);
  failed_ = metrics.counter("chatgate_cache_calls_total", labels + ",result=\"error\"", help);
}

// Calls still out when the core shuts down never complete (their cache has
// stopped): the pool frees them.
Cache::~Cache() = default;

std::string_view Cache::name() const { return instance_.name(); }

bool Cache::available() const { return instance_.phase() == PluginInstance::Phase::kStarted; }

Cache::Call *Cache::begin(cg_cache_cb cb, void *arg, Delivery d) {
  Call *call;
  if (spare_.empty()) {
    calls_.push_back(std::make_unique<Call>());
    call = calls_.back().get();
    call->cache = this;
  } else {
    call = spare_.back();
    spare_.pop_back();
  }
  call->cb = cb;
  call->arg = arg;
  call->delivery = d;
  in_flight_++;
  if (in_flight_gauge_ != nullptr) *in_flight_gauge_ = static_cast<double>(in_flight_);
  return call;
}

int Cache::refused(Call *call, int rc) {
  in_flight_--;
  if (in_flight_gauge_ != nullptr) *in_flight_gauge_ = static_cast<double>(in_flight_);
  spare_.push_back(call);
  return rc;
}

void Cache::finish(Call *call) {
  in_flight_--;
  if (in_flight_gauge_ != nullptr) *in_flight_gauge_ = static_cast<double>(in_flight_);
  if (call->value.capacity() > kKeepValueBytes) {
    std::string().swap(call->value);
  } else {
    call->value.clear();
  }
  call->cb = nullptr;
  call->arg = nullptr;
  spare_.push_back(call);
}

void Cache::on_done(void *arg, int status, cg_str_t value) {
  auto *call = static_cast<Call *>(arg);
  Cache *self = call->cache;
  double *c = status == 0                                  ? self->ok_
              : status == CG_ENOENT || status == CG_EEXIST ? self->missing_
                                                           : self->failed_;
  if (c != nullptr) *c += 1;
  if (call->delivery == Delivery::kDeferred) {
    call->status = status;
    if (value.len > 0) call->value.assign(value.ptr, value.len);
    // Once the loop is closing a deferral is refused: complete now.
    if (self->loop_.defer(&Cache::deliver, call) == 0) return;
    deliver(call);
    return;
  }
  const cg_cache_cb cb = call->cb;
  void *cb_arg = call->arg;
  self->finish(call);
  cb(cb_arg, status, value);
}

void Cache::deliver(void *arg) {
  auto *call = static_cast<Call *>(arg);
  const cg_cache_cb cb = call->cb;
  void *cb_arg = call->arg;
  const int status = call->status;
  // The value is handed over before the call goes back to the pool: cb may
  // start another cache call that reuses this very Call.
  std::string value;
  value.swap(call->value);
  call->cache->finish(call);
  cb(cb_arg, status, cs(value));
}

int Cache::get(std::string_view key, cg_cache_cb cb, void *arg, Delivery d) {
  if (!available()) return CG_EUNAVAIL;
  Call *call = begin(cb, arg, d);
  const int rc = instance_.cache_ops()->get(instance_.state(), cs(key), &Cache::on_done, call);
  return rc == 0 ? 0 : refused(call, rc);
}

int Cache::set(std::string_view key, std::string_view value, uint64_t ttl_ms, cg_cache_cb cb,
               void *arg, Delivery d) {
  if (!available()) return CG_EUNAVAIL;
  Call *call = begin(cb, arg, d);
  const int rc = instance_.cache_ops()->set(instance_.state(), cs(key), cs(value), ttl_ms,
                                            &Cache::on_done, call);
  return rc == 0 ? 0 : refused(call, rc);
}

int Cache::set_nx(std::string_view key, std::string_view value, uint64_t ttl_ms, cg_cache_cb cb,
                  void *arg, Delivery d) {
  if (!available()) return CG_EUNAVAIL;
  Call *call = begin(cb, arg, d);
  const int rc = instance_.cache_ops()->set_nx(instance_.state(), cs(key), cs(value), ttl_ms,
                                               &Cache::on_done, call);
  return rc == 0 ? 0 : refused(call, rc);
}

int Cache::del(std::string_view key, cg_cache_cb cb, void *arg, Delivery d) {
  if (!available()) return CG_EUNAVAIL;
  Call *call = begin(cb, arg, d);
  const int rc = instance_.cache_ops()->del(instance_.state(), cs(key), &Cache::on_done, call);
  return rc == 0 ? 0 : refused(call, rc);
}

}  // namespace cg
