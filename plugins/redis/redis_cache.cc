// redis.so: the router's cache in Redis, so several chatgate instances share
// conversation context and message dedupe. hiredis's async API driven by the
// host's fd watches (ABI 1.1): no thread, nothing blocks the loop. Host
// names are resolved on the host's thread pool (getaddrinfo blocks).
//
// While Redis is unreachable every call fails at once with CG_EUNAVAIL (the
// router answers without history and warns), and the plugin reconnects with
// backoff and jitter until Redis is back.
//
// THREAD: every entry point runs on the host's loop thread.
#include <arpa/inet.h>
#include <chatgate/chatgate.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <chatgate/cpp.hpp>
#include <cstddef>
#include <memory>
#include <random>
#include <string>
#include <string_view>

namespace {

constexpr auto sv = chatgate::view;
constexpr auto cs = chatgate::str;

constexpr uint64_t kBackoffFirstMs = 200;
constexpr uint64_t kBackoffCapMs = 5000;

enum class State { kDown, kResolving, kConnecting, kHandshake, kReady, kStopped };

struct Redis {
  const cg_host_api_t *api = nullptr;
  cg_host_t *host = nullptr;
  std::string host_name, unix_socket, username, password, prefix;
  int64_t port = 6379, database = 0, command_timeout_ms = 2000;

  State state = State::kDown;
  redisAsyncContext *ac = nullptr;
  uint64_t watch_id = 0;
  bool watching = false;
  uint32_t events = 0;
  uint64_t reconnect_timer = 0;
  bool timer_active = false;
  uint64_t backoff_ms = kBackoffFirstMs;
  bool outage_logged = false;
  bool stopping = false;
  bool in_stop = false;    // inside rc_stop: done must wait for a later turn
  bool resolving = false;  // a getaddrinfo is on the pool
  cg_done_cb stop_done = nullptr;
  void *stop_arg = nullptr;
  std::mt19937_64 rng{std::random_device{}()};
  // Filled by the resolver on the pool thread, read after its done.
  std::string resolved_ip, resolve_error;

  void log(int level, const std::string &line) const { api->log(host, level, cs(line)); }
  std::string where() const {
    return unix_socket.empty() ? host_name + ":" + std::to_string(port) : unix_socket;
  }
};

void connect(Redis *r);
void maybe_stopped(Redis *r);

// ---- hiredis event adapter over the host's fd watches ----------------------

void on_fd(void *arg, int status, uint32_t ready) {
  auto *r = static_cast<Redis *>(arg);
  // A failed poll: let hiredis find the error by reading.
  const uint32_t ev = status != 0 ? r->events : ready;
  if (r->ac != nullptr && (ev & CG_FD_READABLE)) redisAsyncHandleRead(r->ac);
  // The read may have torn the context down (cleanup cleared r->ac).
  if (r->ac != nullptr && (ev & CG_FD_WRITABLE)) redisAsyncHandleWrite(r->ac);
}

void set_events(Redis *r, uint32_t events) {
  r->events = events;
  if (r->watching) {
    r->api->fd_watch_update(r->host, r->watch_id, events);
  } else if (events != 0 && r->ac != nullptr) {
    if (r->api->fd_watch_start(r->host, r->ac->c.fd, events, on_fd, r, &r->watch_id) == 0) {
      r->watching = true;
    }
  }
}

void ev_add_read(void *p) {
  auto *r = static_cast<Redis *>(p);
  set_events(r, r->events | CG_FD_READABLE);
}
void ev_del_read(void *p) {
  auto *r = static_cast<Redis *>(p);
  set_events(r, r->events & ~CG_FD_READABLE);
}
void ev_add_write(void *p) {
  auto *r = static_cast<Redis *>(p);
  set_events(r, r->events | CG_FD_WRITABLE);
}
void ev_del_write(void *p) {
  auto *r = static_cast<Redis *>(p);
  set_events(r, r->events & ~CG_FD_WRITABLE);
}
void ev_cleanup(void *p) {
  auto *r = static_cast<Redis *>(p);
  if (r->watching) r->api->fd_watch_stop(r->host, r->watch_id);
  r->watching = false;
  r->events = 0;
  r->ac = nullptr;  // hiredis frees the context after this returns
}

// ---- reconnecting ----------------------------------------------------------

void on_reconnect_timer(void *arg, uint64_t) {
  auto *r = static_cast<Redis *>(arg);
  r->timer_active = false;
  connect(r);
}

void schedule_reconnect(Redis *r) {
  r->state = State::kDown;
  if (r->stopping || r->timer_active) return;
  std::uniform_int_distribution<uint64_t> jitter(r->backoff_ms / 2, r->backoff_ms);
  const uint64_t delay = jitter(r->rng);
  r->backoff_ms = std::min(kBackoffCapMs, r->backoff_ms * 2);
  if (r->api->timer_start(r->host, delay, 0, on_reconnect_timer, r, &r->reconnect_timer) == 0) {
    r->timer_active = true;
  }
}

void went_down(Redis *r, const std::string &why) {
  r->api->metric_gauge_set(r->host, cs("connected"), cs(""), 0);
  if (!r->outage_logged && !r->stopping) {
    // One line per outage, not one per attempt.
    r->log(CG_LOG_WARN, "redis at " + r->where() + " unavailable (" + why +
                            "); answering without it and reconnecting with backoff");
    r->api->set_state(r->host, CG_STATE_DEGRADED, cs("redis unavailable: " + why));
    r->outage_logged = true;
  }
  schedule_reconnect(r);
}

void became_ready(Redis *r) {
  r->state = State::kReady;
  r->backoff_ms = kBackoffFirstMs;
  r->api->metric_gauge_set(r->host, cs("connected"), cs(""), 1);
  r->api->set_state(r->host, CG_STATE_RUNNING, cs(""));
  r->log(CG_LOG_INFO, std::string(r->outage_logged ? "reconnected to" : "connected to") +
                          " redis at " + r->where());
  r->outage_logged = false;
}

void on_handshake(redisAsyncContext *ac, void *reply, void *privdata) {
  auto *r = static_cast<Redis *>(ac->ev.data);
  const auto *rep = static_cast<redisReply *>(reply);
  const bool last = privdata != nullptr;  // the last handshake command carries a marker
  if (rep == nullptr) return;             // the disconnect callback handles it
  if (rep->type == REDIS_REPLY_ERROR) {
    // AUTH or SELECT refused: a config problem; say so, and keep trying
    // (the operator may be fixing Redis rather than chatgate).
    const std::string why(rep->str, rep->len);
    r->log(CG_LOG_ERROR, "redis at " + r->where() + " refused the handshake: " + why);
    r->outage_logged = true;
    r->api->set_state(r->host, CG_STATE_DEGRADED, cs("redis refused: " + why));
    redisAsyncDisconnect(ac);
    return;
  }
  if (last && r->state == State::kHandshake) became_ready(r);
}

void on_connected(const redisAsyncContext *ac, int status) {
  auto *r = static_cast<Redis *>(ac->ev.data);
  if (status != REDIS_OK) {
    // hiredis frees the context after this callback.
    went_down(r, ac->errstr);
    return;
  }
  auto *c = const_cast<redisAsyncContext *>(ac);
  r->state = State::kHandshake;
  static int marker;
  const bool auth = !r->password.empty();
  const bool select = r->database != 0;
  if (auth) {
    if (!r->username.empty()) {
      redisAsyncCommand(c, on_handshake, select ? nullptr : &marker, "AUTH %b %b",
                        r->username.data(), r->username.size(), r->password.data(),
                        r->password.size());
    } else {
      redisAsyncCommand(c, on_handshake, select ? nullptr : &marker, "AUTH %b", r->password.data(),
                        r->password.size());
    }
  }
  if (select) {
    redisAsyncCommand(c, on_handshake, &marker, "SELECT %lld", static_cast<long long>(r->database));
  }
  if (!auth && !select) became_ready(r);
}

void on_disconnected(const redisAsyncContext *ac, int status) {
  auto *r = static_cast<Redis *>(ac->ev.data);
  r->ac = nullptr;
  if (r->stopping) {
    r->state = State::kStopped;
    if (!r->in_stop) maybe_stopped(r);
    return;
  }
  went_down(r, status == REDIS_OK ? "closed" : ac->errstr);
}

void connect_to(Redis *r, const std::string &ip) {
  redisAsyncContext *ac = r->unix_socket.empty()
                              ? redisAsyncConnect(ip.c_str(), static_cast<int>(r->port))
                              : redisAsyncConnectUnix(r->unix_socket.c_str());
  if (ac == nullptr) {
    went_down(r, "out of memory");
    return;
  }
  if (ac->err) {
    const std::string why = ac->errstr;
    redisAsyncFree(ac);
    went_down(r, why);
    return;
  }
  r->ac = ac;
  ac->ev.data = r;
  ac->ev.addRead = ev_add_read;
  ac->ev.delRead = ev_del_read;
  ac->ev.addWrite = ev_add_write;
  ac->ev.delWrite = ev_del_write;
  ac->ev.cleanup = ev_cleanup;
  r->state = State::kConnecting;
  redisAsyncSetConnectCallback(ac, on_connected);
  redisAsyncSetDisconnectCallback(ac, on_disconnected);
  // hiredis waits for the socket to become writable to finish connecting.
  ev_add_write(r);
}

void resolve_work(void *arg) {
  auto *r = static_cast<Redis *>(arg);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo *res = nullptr;
  const int rc = getaddrinfo(r->host_name.c_str(), nullptr, &hints, &res);
  if (rc != 0 || res == nullptr) {
    r->resolve_error = rc != 0 ? gai_strerror(rc) : "no address";
    return;
  }
  char buf[INET6_ADDRSTRLEN] = {};
  const void *addr =
      res->ai_family == AF_INET6
          ? static_cast<const void *>(&reinterpret_cast<sockaddr_in6 *>(res->ai_addr)->sin6_addr)
          : static_cast<const void *>(&reinterpret_cast<sockaddr_in *>(res->ai_addr)->sin_addr);
  inet_ntop(res->ai_family, addr, buf, sizeof buf);
  r->resolved_ip = buf;
  freeaddrinfo(res);
}

void resolve_done(void *arg, int status) {
  auto *r = static_cast<Redis *>(arg);
  r->resolving = false;
  if (r->stopping) {
    maybe_stopped(r);
    return;
  }
  if (status != 0 || !r->resolve_error.empty()) {
    went_down(r, "cannot resolve " + r->host_name + ": " +
                     (r->resolve_error.empty() ? cg_strerror(status) : r->resolve_error));
    return;
  }
  connect_to(r, r->resolved_ip);
}

bool is_literal_ip(const std::string &h) {
  unsigned char buf[16];
  return inet_pton(AF_INET, h.c_str(), buf) == 1 || inet_pton(AF_INET6, h.c_str(), buf) == 1;
}

void connect(Redis *r) {
  if (r->stopping) return;
  if (!r->unix_socket.empty() || is_literal_ip(r->host_name)) {
    connect_to(r, r->host_name);
    return;
  }
  r->resolved_ip.clear();
  r->resolve_error.clear();
  r->state = State::kResolving;
  if (r->api->queue_work(r->host, resolve_work, resolve_done, r) == 0) {
    r->resolving = true;
  } else {
    went_down(r, "cannot queue the name lookup");
  }
}

// ---- cache ops -------------------------------------------------------------

struct Op {
  cg_cache_cb cb;
  void *arg;
  enum Kind { kGet, kSet, kSetNx, kDel } kind;
  Redis *r = nullptr;
  uint64_t timer_id = 0;
  bool timer_active = false;
  bool answered = false;  // the caller got its callback (the timeout came first)
};

// A Redis that accepts the connection but stops answering would otherwise
// hold a caller forever: answer CG_ETIMEDOUT, and drop the connection so
// the reconnect logic takes over. The Op lives on until hiredis hands it
// back (a reply or the disconnect), since hiredis still holds it.
void on_op_timeout(void *arg, uint64_t) {
  auto *op = static_cast<Op *>(arg);
  op->timer_active = false;
  op->answered = true;
  op->cb(op->arg, CG_ETIMEDOUT, cg_str_t{nullptr, 0});
  Redis *r = op->r;
  if (r->ac != nullptr && r->state == State::kReady) {
    r->log(CG_LOG_WARN, "redis at " + r->where() + " did not answer within " +
                            std::to_string(r->command_timeout_ms) + " ms; reconnecting");
    // A hard close: a graceful disconnect would wait for the replies that
    // are not coming. Pending commands (this one too, which frees `op`)
    // get their callbacks with no reply now.
    redisAsyncFree(r->ac);
    // Whether hiredis called the disconnect callback depends on its
    // version; make sure the reconnect is scheduled either way.
    if (r->state == State::kReady) went_down(r, "no answer in time");
  }
}

void on_reply(redisAsyncContext *, void *reply, void *privdata) {
  std::unique_ptr<Op> op(static_cast<Op *>(privdata));
  if (op->timer_active) op->r->api->timer_stop(op->r->host, op->timer_id);
  if (op->answered) return;
  const auto *rep = static_cast<redisReply *>(reply);
  if (rep == nullptr) {
    op->cb(op->arg, CG_EUNAVAIL, cg_str_t{nullptr, 0});  // the connection went away
    return;
  }
  if (rep->type == REDIS_REPLY_ERROR) {
    op->cb(op->arg, CG_EIO, cg_str_t{nullptr, 0});
    return;
  }
  switch (op->kind) {
    case Op::kGet:
      if (rep->type == REDIS_REPLY_STRING) {
        op->cb(op->arg, 0, cg_str_t{rep->str, rep->len});
      } else {
        op->cb(op->arg, CG_ENOENT, cg_str_t{nullptr, 0});
      }
      return;
    case Op::kSet:
      op->cb(op->arg, 0, cg_str_t{nullptr, 0});
      return;
    case Op::kSetNx:
      op->cb(op->arg, rep->type == REDIS_REPLY_NIL ? CG_EEXIST : 0, cg_str_t{nullptr, 0});
      return;
    case Op::kDel:
      op->cb(op->arg, rep->type == REDIS_REPLY_INTEGER && rep->integer == 0 ? CG_ENOENT : 0,
             cg_str_t{nullptr, 0});
      return;
  }
}

// Sends one command; 0, or CG_EUNAVAIL at once while Redis is down.
template <typename... Args>
int send(Redis *r, Op::Kind kind, cg_cache_cb cb, void *arg, const char *fmt, Args... args) {
  if (cb == nullptr) return CG_EINVAL;
  if (r->state != State::kReady || r->ac == nullptr) return CG_EUNAVAIL;
  auto op = std::unique_ptr<Op>(new (std::nothrow) Op{cb, arg, kind});
  if (!op) return CG_ENOMEM;
  op->r = r;
  if (redisAsyncCommand(r->ac, on_reply, op.get(), fmt, args...) != REDIS_OK) {
    return CG_EUNAVAIL;
  }
  if (r->command_timeout_ms > 0 &&
      r->api->timer_start(r->host, static_cast<uint64_t>(r->command_timeout_ms), 0, on_op_timeout,
                          op.get(), &op->timer_id) == 0) {
    op->timer_active = true;
  }
  (void)op.release();  // on_reply frees it
  return 0;
}

int rc_get(void *state, cg_str_t key, cg_cache_cb cb, void *arg) noexcept {
  auto *r = static_cast<Redis *>(state);
  return send(r, Op::kGet, cb, arg, "GET %b%b", r->prefix.data(), r->prefix.size(), key.ptr,
              key.len);
}

int rc_set(void *state, cg_str_t key, cg_str_t value, uint64_t ttl_ms, cg_cache_cb cb,
           void *arg) noexcept {
  auto *r = static_cast<Redis *>(state);
  if (ttl_ms == 0) {
    return send(r, Op::kSet, cb, arg, "SET %b%b %b", r->prefix.data(), r->prefix.size(), key.ptr,
                key.len, value.ptr, value.len);
  }
  return send(r, Op::kSet, cb, arg, "SET %b%b %b PX %llu", r->prefix.data(), r->prefix.size(),
              key.ptr, key.len, value.ptr, value.len, static_cast<unsigned long long>(ttl_ms));
}

int rc_set_nx(void *state, cg_str_t key, cg_str_t value, uint64_t ttl_ms, cg_cache_cb cb,
              void *arg) noexcept {
  auto *r = static_cast<Redis *>(state);
  if (ttl_ms == 0) {
    return send(r, Op::kSetNx, cb, arg, "SET %b%b %b NX", r->prefix.data(), r->prefix.size(),
                key.ptr, key.len, value.ptr, value.len);
  }
  return send(r, Op::kSetNx, cb, arg, "SET %b%b %b NX PX %llu", r->prefix.data(), r->prefix.size(),
              key.ptr, key.len, value.ptr, value.len, static_cast<unsigned long long>(ttl_ms));
}

int rc_del(void *state, cg_str_t key, cg_cache_cb cb, void *arg) noexcept {
  auto *r = static_cast<Redis *>(state);
  return send(r, Op::kDel, cb, arg, "DEL %b%b", r->prefix.data(), r->prefix.size(), key.ptr,
              key.len);
}

// ---- lifecycle -------------------------------------------------------------

void maybe_stopped(Redis *r) {
  if (!r->stopping || r->ac != nullptr || r->resolving || r->stop_done == nullptr) return;
  cg_done_cb done = r->stop_done;
  r->stop_done = nullptr;
  done(r->stop_arg, 0);
}

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
  if (r->unix_socket.empty() && r->host_name.empty()) {
    api->set_error(host, cs("set host (and port) or unixSocket"));
    return CG_ECONFIG;
  }
  if (!r->username.empty() && r->password.empty()) {
    api->set_error(host, cs("username needs a password"));
    return CG_ECONFIG;
  }
  *state = r.release();
  return 0;
}

int rc_start(void *state) noexcept {
  auto *r = static_cast<Redis *>(state);
  r->api->set_state(r->host, CG_STATE_STARTING, cs("connecting to redis"));
  // Connecting goes on in the background: chatgate serves (without
  // history) while Redis is still coming up.
  connect(r);
  return 0;
}

void stop_deferred(void *arg) { maybe_stopped(static_cast<Redis *>(arg)); }

void rc_stop(void *state, cg_done_cb done, void *done_arg) noexcept {
  auto *r = static_cast<Redis *>(state);
  r->stopping = true;
  r->stop_done = done;
  r->stop_arg = done_arg;
  if (r->timer_active) {
    r->api->timer_stop(r->host, r->reconnect_timer);
    r->timer_active = false;
  }
  // Closed at once: by now the router has finished with the cache, and a
  // graceful disconnect could wait forever on a Redis that stopped
  // answering. Anything still pending gets CG_EUNAVAIL.
  r->in_stop = true;
  if (r->ac != nullptr) redisAsyncFree(r->ac);
  r->in_stop = false;
  // Never inside stop: the rest happens on a later turn.
  if (r->api->defer(r->host, stop_deferred, r) != 0 && r->ac == nullptr && !r->resolving) {
    r->stop_done = nullptr;
    done(done_arg, 0);
  }
}

void rc_destroy(void *state) noexcept {
  std::unique_ptr<Redis> r(static_cast<Redis *>(state));
  if (r->ac != nullptr) redisAsyncFree(r->ac);  // calls pending callbacks with no reply
}

const cg_cache_ops_t kOps = {sizeof(cg_cache_ops_t), rc_get, rc_set, rc_set_nx, rc_del};

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
    {sizeof(cg_config_field_t), CG_CFG_STRING, 0, "keyPrefix", "chatgate:",
     "prepended to every key, so several deployments can share one Redis", nullptr, 0, 0},
};

const cg_plugin_t kPlugin = {
    sizeof(cg_plugin_t),
    CG_ABI_MAJOR,
    1,  // needs fd watches (1.1)
    CG_KIND_CACHE,
    "redis",
    "1.0.0",
    "Redis cache (hiredis on the host loop): shared context and dedupe for several instances",
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

extern "C" CG_EXPORT const cg_plugin_t *cg_plugin_entry(uint32_t host_major, uint32_t host_minor) {
  return host_major == CG_ABI_MAJOR && host_minor >= 1 ? &kPlugin : nullptr;
}
