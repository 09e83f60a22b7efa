// redis.so's connection to Redis: hiredis's async API driven by the host's
// fd watches (ABI 1.1), reconnecting with backoff and jitter, and the
// commands sent over it with a timeout each. The cache (redis_cache.cc) and
// the durable queue (redis_queue.cc) are written on top.
//
// THREAD: not thread-safe; every function runs on the host's loop thread.
#pragma once

#include <chatgate/chatgate.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <chatgate/cpp.hpp>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <string_view>

namespace redis_plugin {

constexpr auto sv = chatgate::view;
constexpr auto cs = chatgate::str;

enum class State { kDown, kResolving, kConnecting, kHandshake, kReady, kStopped };

// One connection. The plugin's state is the main one (cache commands and
// queue writes, pipelined); the queue's blocking reads get a second one,
// `reader`, so an XREADGROUP ... BLOCK never holds the pipeline up.
struct Redis {
  const cg_host_api_t *api = nullptr;
  cg_host_t *host = nullptr;
  std::string host_name, unix_socket, username, password, prefix;
  int64_t port = 6379, database = 0, command_timeout_ms = 2000;
  int64_t queue_max_length = 100000;  // entries per partition

  // The reader: its own connection, the same settings; it reports no state
  // of its own to the host (the main connection's is the instance's).
  Redis *parent = nullptr;  // set on the reader only
  std::unique_ptr<Redis> reader;

  State state = State::kDown;
  redisAsyncContext *ac = nullptr;
  uint64_t watch_id = 0;
  bool watching = false;
  uint32_t events = 0;
  uint64_t reconnect_timer = 0;
  bool timer_active = false;
  uint64_t backoff_ms = 200;  // the next reconnect's delay (doubles to 5 s)
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
  bool ready() const { return state == State::kReady && ac != nullptr; }
  // A copy of the settings for the reader connection.
  std::unique_ptr<Redis> make_reader();
};

// Starts connecting (and keeps reconnecting until stop).
void redis_connect(Redis *r);
// The plugin's stop finished when both connections are gone.
void redis_maybe_stopped(Redis *r);

// One command in flight. Exactly one of the callbacks is set; the reply is
// read by the kind's parser (a cache op here, a queue op in redis_queue.cc).
struct Op {
  enum Kind {
    kGet,
    kSet,
    kSetNx,
    kDel,
    kEnqueue,
    kLease,
    kRelease,
    kEntries,  // read or claim
    kRetry,
    kAck,
    kMembers,
    kStats,
  };
  Kind kind = kGet;
  Redis *r = nullptr;
  void *arg = nullptr;
  cg_cache_cb cb = nullptr;
  cg_queue_entries_cb entries_cb = nullptr;
  cg_queue_stats_cb stats_cb = nullptr;
  uint32_t partition = 0;  // a claim's, for its entries
  bool read = false;       // kEntries: an XREADGROUP reply (else a claim script's)
  uint64_t timer_id = 0;
  bool timer_active = false;
  bool answered = false;  // the caller got its callback (the timeout came first)

  // The caller's callback with an error and no value.
  void fail(int status) const;
};

// Parses a queue op's reply and answers its caller (redis_queue.cc).
void queue_answer(const Op &op, const redisReply &rep);
// Parses a cache op's reply and answers its caller (redis_cache.cc).
void cache_answer(const Op &op, const redisReply &rep);

// Sends argv on `r` with op's callback; 0, or CG_EUNAVAIL at once while the
// connection is down. The command times out after the connection's
// command_timeout_ms plus extra_timeout_ms (a blocking read's wait).
// OWNERSHIP: op is taken (freed after its reply); argv is borrowed.
int redis_send(Redis *r, std::unique_ptr<Op> op, int argc, const char **argv, const size_t *lens,
               uint64_t extra_timeout_ms = 0);

}  // namespace redis_plugin

namespace redis_plugin {
// The queue's ops table (redis_queue.cc).
extern const cg_queue_ops_t kQueueOps;
}  // namespace redis_plugin
