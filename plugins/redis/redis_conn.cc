#include "redis_conn.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>

namespace redis_plugin {
namespace {

constexpr uint64_t kBackoffFirstMs = 200;
constexpr uint64_t kBackoffCapMs = 5000;

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
  redis_connect(r);
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
  if (r->parent == nullptr) r->api->metric_gauge_set(r->host, cs("connected"), cs(""), 0);
  if (!r->outage_logged && !r->stopping) {
    // One line per outage, not one per attempt.
    if (r->parent == nullptr) {
      r->log(CG_LOG_WARN, "redis at " + r->where() + " unavailable (" + why +
                              "); answering without it and reconnecting with backoff");
      r->api->set_state(r->host, CG_STATE_DEGRADED, cs("redis unavailable: " + why));
    } else {
      r->log(CG_LOG_WARN, "redis at " + r->where() + ": the queue's read connection is down (" +
                              why + "); reconnecting with backoff");
    }
    r->outage_logged = true;
  }
  schedule_reconnect(r);
}

void became_ready(Redis *r) {
  r->state = State::kReady;
  r->backoff_ms = kBackoffFirstMs;
  if (r->parent == nullptr) {
    r->api->metric_gauge_set(r->host, cs("connected"), cs(""), 1);
    r->api->set_state(r->host, CG_STATE_RUNNING, cs(""));
    r->log(CG_LOG_INFO, std::string(r->outage_logged ? "reconnected to" : "connected to") +
                            " redis at " + r->where());
  } else if (r->outage_logged) {
    r->log(CG_LOG_INFO, "redis at " + r->where() + ": the queue's read connection is back");
  }
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
    if (r->parent == nullptr) {
      r->api->set_state(r->host, CG_STATE_DEGRADED, cs("redis refused: " + why));
    }
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
    if (!r->in_stop) redis_maybe_stopped(r->parent != nullptr ? r->parent : r);
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
    redis_maybe_stopped(r->parent != nullptr ? r->parent : r);
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

}  // namespace

void redis_connect(Redis *r) {
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

namespace {

// ---- commands --------------------------------------------------------------

// A Redis that accepts the connection but stops answering would otherwise
// hold a caller forever: answer CG_ETIMEDOUT, and drop the connection so
// the reconnect logic takes over. The Op lives on until hiredis hands it
// back (a reply or the disconnect), since hiredis still holds it.
void on_op_timeout(void *arg, uint64_t) {
  auto *op = static_cast<Op *>(arg);
  op->timer_active = false;
  op->answered = true;
  op->fail(CG_ETIMEDOUT);
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
    op->fail(CG_EUNAVAIL);  // the connection went away
    return;
  }
  if (op->kind <= Op::kDel) {
    cache_answer(*op, *rep);
  } else {
    queue_answer(*op, *rep);
  }
}

}  // namespace

void Op::fail(int status) const {
  if (cb != nullptr) {
    cb(arg, status, cg_str_t{nullptr, 0});
  } else if (entries_cb != nullptr) {
    entries_cb(arg, status, nullptr, 0);
  } else if (stats_cb != nullptr) {
    stats_cb(arg, status, nullptr);
  }
}

int redis_send(Redis *r, std::unique_ptr<Op> op, int argc, const char **argv, const size_t *lens,
               uint64_t extra_timeout_ms) {
  if (!r->ready()) return CG_EUNAVAIL;
  op->r = r;
  if (redisAsyncCommandArgv(r->ac, on_reply, op.get(), argc, argv, lens) != REDIS_OK) {
    return CG_EUNAVAIL;
  }
  if (r->command_timeout_ms > 0 &&
      r->api->timer_start(r->host, static_cast<uint64_t>(r->command_timeout_ms) + extra_timeout_ms,
                          0, on_op_timeout, op.get(), &op->timer_id) == 0) {
    op->timer_active = true;
  }
  (void)op.release();  // on_reply frees it
  return 0;
}

std::unique_ptr<Redis> Redis::make_reader() {
  auto rd = std::make_unique<Redis>();
  rd->api = api;
  rd->host = host;
  rd->host_name = host_name;
  rd->unix_socket = unix_socket;
  rd->username = username;
  rd->password = password;
  rd->prefix = prefix;
  rd->port = port;
  rd->database = database;
  rd->command_timeout_ms = command_timeout_ms;
  rd->parent = this;
  return rd;
}

}  // namespace redis_plugin
