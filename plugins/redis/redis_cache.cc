// redis.so: the router's cache and durable inbound queue in Redis, so
// several chatgate instances share conversation context, message dedupe
// and the messages channels acknowledged. hiredis's async API driven by the
// host's fd watches (ABI 1.1): no thread, nothing blocks the loop. Host
// names are resolved on the host's thread pool (getaddrinfo blocks).
//
// While Redis is unreachable every call fails at once with CG_EUNAVAIL (the
// router answers without history and warns; the queue's channels tell the
// platform to retry), and the plugin reconnects with backoff and jitter
// until Redis is back.
//
// Files: redis_conn.* the connection and commands, redis_queue.cc the
// queue's ops, this file the cache ops and the plugin's lifecycle.
//
// THREAD: every entry point runs on the host's loop thread.
#include <array>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "redis_conn.h"

namespace redis_plugin {
namespace {

// ---- cache ops -------------------------------------------------------------

// Sends one cache command; 0, or CG_EUNAVAIL at once while Redis is down.
template <size_t N>
int send(Redis *r, Op::Kind kind, cg_cache_cb cb, void *arg, const std::array<cg_str_t, N> &args) {
  if (cb == nullptr) return CG_EINVAL;
  auto op = std::unique_ptr<Op>(new (std::nothrow) Op);
  if (!op) return CG_ENOMEM;
  op->kind = kind;
  op->cb = cb;
  op->arg = arg;
  std::array<const char *, N> argv{};
  std::array<size_t, N> lens{};
  for (size_t i = 0; i < N; ++i) {
    argv[i] = args[i].ptr;
    lens[i] = args[i].len;
  }
  return redis_send(r, std::move(op), static_cast<int>(N), argv.data(), lens.data());
}

cg_str_t lit(std::string_view s) { return cg_str_t{s.data(), s.size()}; }

int rc_get(void *state, cg_str_t key, cg_cache_cb cb, void *arg) noexcept {
  auto *r = static_cast<Redis *>(state);
  const std::string k = r->prefix + std::string(sv(key));
  return send<2>(r, Op::kGet, cb, arg, {lit("GET"), cs(k)});
}

int rc_set(void *state, cg_str_t key, cg_str_t value, uint64_t ttl_ms, cg_cache_cb cb,
           void *arg) noexcept {
  auto *r = static_cast<Redis *>(state);
  const std::string k = r->prefix + std::string(sv(key));
  if (ttl_ms == 0) return send<3>(r, Op::kSet, cb, arg, {lit("SET"), cs(k), value});
  const std::string ttl = std::to_string(ttl_ms);
  return send<5>(r, Op::kSet, cb, arg, {lit("SET"), cs(k), value, lit("PX"), cs(ttl)});
}

int rc_set_nx(void *state, cg_str_t key, cg_str_t value, uint64_t ttl_ms, cg_cache_cb cb,
              void *arg) noexcept {
  auto *r = static_cast<Redis *>(state);
  const std::string k = r->prefix + std::string(sv(key));
  if (ttl_ms == 0) return send<4>(r, Op::kSetNx, cb, arg, {lit("SET"), cs(k), value, lit("NX")});
  const std::string ttl = std::to_string(ttl_ms);
  return send<6>(r, Op::kSetNx, cb, arg, {lit("SET"), cs(k), value, lit("NX"), lit("PX"), cs(ttl)});
}

int rc_del(void *state, cg_str_t key, cg_cache_cb cb, void *arg) noexcept {
  auto *r = static_cast<Redis *>(state);
  const std::string k = r->prefix + std::string(sv(key));
  return send<2>(r, Op::kDel, cb, arg, {lit("DEL"), cs(k)});
}

}  // namespace

void cache_answer(const Op &op, const redisReply &rep) {
  if (rep.type == REDIS_REPLY_ERROR) {
    op.cb(op.arg, CG_EIO, cg_str_t{nullptr, 0});
    return;
  }
  switch (op.kind) {
    case Op::kGet:
      if (rep.type == REDIS_REPLY_STRING) {
        op.cb(op.arg, 0, cg_str_t{rep.str, rep.len});
      } else {
        op.cb(op.arg, CG_ENOENT, cg_str_t{nullptr, 0});
      }
      return;
    case Op::kSetNx:
      op.cb(op.arg, rep.type == REDIS_REPLY_NIL ? CG_EEXIST : 0, cg_str_t{nullptr, 0});
      return;
    case Op::kDel:
      op.cb(op.arg, rep.type == REDIS_REPLY_INTEGER && rep.integer == 0 ? CG_ENOENT : 0,
            cg_str_t{nullptr, 0});
      return;
    default:
      op.cb(op.arg, 0, cg_str_t{nullptr, 0});
      return;
  }
}

// ---- lifecycle -------------------------------------------------------------

void redis_maybe_stopped(Redis *r) {
  if (!r->stopping || r->ac != nullptr || r->resolving || r->stop_done == nullptr) return;
  if (r->reader && (r->reader->ac != nullptr || r->reader->resolving)) return;
  cg_done_cb done = r->stop_done;
  r->stop_done = nullptr;
  done(r->stop_arg, 0);
}

namespace {

int rc_init(const cg_host_api_t *api, cg_host_t *host, const cg_config_t *config,
            void **state) noexcept {
  if (api->abi_minor < 1 || api->struct_size < offsetof(cg_host_api_t, fd_watch_stop) + 8) {
    api->set_error(host, cs("needs a host with ABI 1.1 (fd watches)"));
    return CG_ENOTSUP;
  }
  auto r = std::unique_ptr<Redis>(new (std::nothrow) Redis);
  if (!r) return CG_ENOMEM;
  r->api = api;
  r->host = host;
  cg_str_t s{};
  if (api->config_string(config, "host", &s) == 0) r->host_name.assign(sv(s));
  if (api->config_string(config, "unixSocket", &s) == 0) r->unix_socket.assign(sv(s));
  if (api->config_string(config, "username", &s) == 0) r->username.assign(sv(s));
  if (api->config_string(config, "password", &s) == 0) r->password.assign(sv(s));
  if (api->config_string(config, "keyPrefix", &s) == 0) r->prefix.assign(sv(s));
  api->config_int(config, "port", &r->port);
  api->config_int(config, "database", &r->database);
  api->config_int(config, "commandTimeoutMs", &r->command_timeout_ms);
  api->config_int(config, "queueMaxLength", &r->queue_max_length);
  if (r->unix_socket.empty() && r->host_name.empty()) {
    api->set_error(host, cs("set host (and port) or unixSocket"));
    return CG_ECONFIG;
  }
  if (!r->username.empty() && r->password.empty()) {
    api->set_error(host, cs("username needs a password"));
    return CG_ECONFIG;
  }
  r->reader = r->make_reader();
  *state = r.release();
  return 0;
}

int rc_start(void *state) noexcept {
  auto *r = static_cast<Redis *>(state);
  r->api->set_state(r->host, CG_STATE_STARTING, cs("connecting to redis"));
  // Connecting goes on in the background: chatgate serves (without
  // history) while Redis is still coming up. The reader connects too: a
  // queue's first read should not wait for a handshake.
  redis_connect(r);
  redis_connect(r->reader.get());
  return 0;
}

void stop_deferred(void *arg) { redis_maybe_stopped(static_cast<Redis *>(arg)); }

void rc_stop(void *state, cg_done_cb done, void *done_arg) noexcept {
  auto *r = static_cast<Redis *>(state);
  r->stopping = true;
  r->stop_done = done;
  r->stop_arg = done_arg;
  for (Redis *c : {r, r->reader.get()}) {
    c->stopping = true;
    if (c->timer_active) {
      c->api->timer_stop(c->host, c->reconnect_timer);
      c->timer_active = false;
    }
  }
  // Closed at once: by now the router has finished with the cache, and a
  // graceful disconnect could wait forever on a Redis that stopped
  // answering. Anything still pending gets CG_EUNAVAIL.
  r->in_stop = r->reader->in_stop = true;
  if (r->ac != nullptr) redisAsyncFree(r->ac);
  if (r->reader->ac != nullptr) redisAsyncFree(r->reader->ac);
  r->in_stop = r->reader->in_stop = false;
  // Never inside stop: the rest happens on a later turn.
  if (r->api->defer(r->host, stop_deferred, r) != 0 && r->ac == nullptr && !r->resolving &&
      !r->reader->resolving) {
    r->stop_done = nullptr;
    done(done_arg, 0);
  }
}

void rc_destroy(void *state) noexcept {
  std::unique_ptr<Redis> r(static_cast<Redis *>(state));
  // Calls pending callbacks with no reply.
  if (r->reader && r->reader->ac != nullptr) redisAsyncFree(r->reader->ac);
  if (r->ac != nullptr) redisAsyncFree(r->ac);
}

const cg_cache_ops_t kOps = {sizeof(cg_cache_ops_t), rc_get, rc_set, rc_set_nx, rc_del, &kQueueOps};

const cg_config_field_t kFields[] = {
    {sizeof(cg_config_field_t), CG_CFG_STRING, 0, "host", "127.0.0.1", "Redis host name or address",
     nullptr, 0, 0},
    {sizeof(cg_config_field_t), CG_CFG_INT, 0, "port", "6379", "Redis TCP port", nullptr, 1, 65535},
    {sizeof(cg_config_field_t), CG_CFG_STRING, 0, "unixSocket", "",
     "path of a Redis unix socket; when set, host and port are not used", nullptr, 0, 0},
    {sizeof(cg_config_field_t), CG_CFG_STRING, 0, "username", "",
     "ACL user (Redis 6+); empty: the default user", nullptr, 0, 0},
    {sizeof(cg_config_field_t), CG_CFG_STRING, CG_CFG_SECRET, "password", "",
     "AUTH password; empty: no AUTH", nullptr, 0, 0},
    {sizeof(cg_config_field_t), CG_CFG_INT, 0, "database", "0", "SELECTed database index", nullptr,
     0, 1000000},
    {sizeof(cg_config_field_t), CG_CFG_INT, 0, "commandTimeoutMs", "2000",
     "a command unanswered this long fails with a timeout and the connection is remade; 0: "
     "no limit",
     nullptr, 0, 3600000},
    {sizeof(cg_config_field_t), CG_CFG_INT, 0, "queueMaxLength", "100000",
     "the durable queue (router.queue): entries a partition holds unanswered; beyond, new "
     "messages are refused and the platform told to retry",
     nullptr, 1, 1000000000},
    {sizeof(cg_config_field_t), CG_CFG_STRING, 0, "keyPrefix", "chatgate:",
     "prepended to every key, so several deployments can share one Redis", nullptr, 0, 0},
};

const cg_plugin_t kPlugin = {
    sizeof(cg_plugin_t),
    CG_ABI_MAJOR,
    1,  // needs fd watches (1.1); the queue is read from 1.6 hosts only
    CG_KIND_CACHE,
    "redis",
    "1.0.0",
    "Redis cache and durable queue (hiredis on the host loop): shared context, dedupe and "
    "inbound messages for several instances",
    0,
    kFields,
    sizeof(kFields) / sizeof(kFields[0]),
    0,
    rc_init,
    rc_start,
    rc_stop,
    rc_destroy,
    &kOps,
};

}  // namespace
}  // namespace redis_plugin

extern "C" CG_EXPORT const cg_plugin_t *cg_plugin_entry(uint32_t host_major, uint32_t host_minor) {
  return host_major == CG_ABI_MAJOR && host_minor >= 1 ? &redis_plugin::kPlugin : nullptr;
}
