/* chatgate plugin SDK: the host services table.
 *
 * The host hands every plugin instance a `const cg_host_api_t *` and a
 * `cg_host_t *` (the instance's handle) at init. A plugin gets all its I/O
 * from this table, so it can be loaded in tests against a fake host. The
 * table is append-only: before calling a function marked `since 1.N`, check
 * `api->abi_minor >= N` (or `api->struct_size` covers the field).
 *
 * THREAD: every function here must be called on the loop thread, except
 * `post`, which any thread may call.
 */
#ifndef CHATGATE_HOST_H
#define CHATGATE_HOST_H

#include "common.h"
#include "message.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cg_host_s cg_host_t;         /* one per plugin instance, host-owned */
typedef struct cg_config_s cg_config_t;     /* an instance's validated config section */
typedef struct cg_http_exchange_s cg_http_exchange_t; /* one HTTP request awaiting its answer */

/* Completion of an operation without a value. status: 0 or CG_E*.
 * THREAD: called on the loop thread. OWNERSHIP: `arg` belongs to whoever
 * passed the callback and comes back untouched. */
typedef void (*cg_done_cb)(void *arg, int status);

/* Completion of a cache operation. THREAD: runs on the loop thread, never
 * inside the call that started it. OWNERSHIP: `value` is borrowed until the
 * callback returns (copy what you keep) and is empty unless a get
 * succeeded; `arg` is the caller's. */
typedef void (*cg_cache_cb)(void *arg, int status, cg_str_t value);

/* A task for post, defer or queue_work. THREAD: as the function that takes
 * it says. OWNERSHIP: `arg` is the plugin's; the host only passes it on. */
typedef void (*cg_fn)(void *arg);

/* A timer firing. THREAD: loop thread. OWNERSHIP: `arg` as given to
 * timer_start; `timer_id` tells several timers sharing one callback apart. */
typedef void (*cg_timer_cb)(void *arg, uint64_t timer_id);

/* The end of queue_work. THREAD: loop thread. OWNERSHIP: `arg` as given to
 * queue_work, the host's last use of it. status: 0 or CG_ECANCELED. */
typedef void (*cg_work_done_cb)(void *arg, int status);

typedef struct cg_http_header_s {
  cg_str_t name;
  cg_str_t value;
} cg_http_header_t;

/* An HTTP request routed to a plugin. Borrowed until the handler returns:
 * copy what you keep. Header names are as the client sent them; compare
 * them case-insensitively. `body` is the decoded (de-chunked) body. */
typedef struct cg_http_request_s {
  uint32_t struct_size;
  uint32_t header_count;
  cg_str_t method;      /* "POST" */
  cg_str_t path;        /* "/webhook/feishu", percent-encoding untouched */
  cg_str_t query;       /* after '?', or empty */
  const cg_http_header_t *headers; /* header_count entries */
  cg_str_t body;
  cg_str_t remote_addr; /* "127.0.0.1" or "::1" */
} cg_http_request_t;

/* Called for each request on a registered route. The plugin must
 * eventually call `http_respond` on `ex` exactly once, now or later; `ex`
 * stays valid until then, even if the client goes away (the answer is then
 * dropped). THREAD: loop thread. OWNERSHIP: `req` and every view in it are
 * borrowed until the handler returns; `ex` is the host's, lent until
 * http_respond; `arg` is the one given to http_route_add. */
typedef void (*cg_http_handler_cb)(void *arg, cg_http_exchange_t *ex,
                                   const cg_http_request_t *req);

/* Route flags. */
#define CG_ROUTE_PREFIX 0x1u /* match every path that starts with `path` */

/* Instance states shown on probes and the admin page. */
typedef enum cg_instance_state_e {
  CG_STATE_STARTING = 0,
  CG_STATE_RUNNING = 1,
  CG_STATE_DEGRADED = 2, /* working with reduced function; reason says why */
  CG_STATE_FAILED = 3    /* not working; reason says why */
} cg_instance_state_t;

typedef struct cg_host_api_s {
  uint32_t struct_size; /* sizeof(cg_host_api_t) as the host knows it */
  uint32_t abi_major;   /* the host's CG_ABI_MAJOR */
  uint32_t abi_minor;   /* the host's CG_ABI_MINOR */

  /* --- identity and logging (since 1.0) ----------------------------- */

  /* The instance name from the config ("feishu-main"). THREAD: loop
   * thread. OWNERSHIP: the view is the host's and lives until destroy
   * returns. */
  cg_str_t (*instance_name)(cg_host_t *h);

  /* Writes one log line, prefixed with the instance name. Never pass
   * secrets. THREAD: loop thread; a worker thread `post`s what it wants
   * logged. OWNERSHIP: `msg` is copied before the call returns. */
  void (*log)(cg_host_t *h, int level, cg_str_t msg);

  /* Attaches a message to the error the plugin is about to return from
   * init/start or an op, so the host's log line says why. THREAD: loop
   * thread, inside the call that fails. OWNERSHIP: `msg` is copied. */
  void (*set_error)(cg_host_t *h, cg_str_t msg);

  /* Reports the instance's health for probes and the admin page.
   * `state` is a cg_instance_state_t. THREAD: loop thread. OWNERSHIP:
   * `reason` is copied. */
  void (*set_state)(cg_host_t *h, int state, cg_str_t reason);

  /* Loop time in milliseconds (monotonic, cached once per loop turn).
   * THREAD: loop thread; elsewhere the cached value is meaningless.
   * OWNERSHIP: nothing is borrowed or kept. */
  uint64_t (*now_ms)(cg_host_t *h);

  /* --- config (since 1.0); valid from init until destroy ------------- */

  /* Each returns 0, CG_ENOENT when the key is unset and has no default,
   * or CG_EINVAL when the key is not in the schema or of another type.
   * THREAD: loop thread. OWNERSHIP: `cfg` and `key` are borrowed for the
   * call; string views written to `*out` are the host's and live as long
   * as `cfg` (until destroy returns). */
  int (*config_string)(const cg_config_t *cfg, const char *key, cg_str_t *out);
  int (*config_int)(const cg_config_t *cfg, const char *key, int64_t *out);
  int (*config_double)(const cg_config_t *cfg, const char *key, double *out);
  int (*config_bool)(const cg_config_t *cfg, const char *key, int *out);
  int (*config_list_size)(const cg_config_t *cfg, const char *key, size_t *out);
  int (*config_list_item)(const cg_config_t *cfg, const char *key, size_t index,
                          cg_str_t *out);

  /* --- scheduling (since 1.0) ---------------------------------------- */

  /* Runs fn(arg) on the loop thread soon. Returns CG_ECLOSED once the host
   * is shutting down. THREAD: any thread; the only thread-safe call, and
   * `h` must still be alive: join your threads before destroy returns.
   * OWNERSHIP: `arg` is the plugin's; the host holds it until fn(arg) ran.
   * After an error fn is never called: free `arg` yourself. */
  int (*post)(cg_host_t *h, cg_fn fn, void *arg);

  /* Runs fn(arg) on the next loop turn, without a syscall. For completions
   * that are ready at once (a completion must never run before the call
   * that started it returns). Once accepted, fn runs exactly once, in the
   * order deferred, also during shutdown. CG_ECLOSED once the host's loop is
   * closing, after every plugin has stopped (a queue_work completion that
   * arrives then must finish its work inline). THREAD: loop thread only.
   * OWNERSHIP: `arg` is the plugin's; the host holds it until fn(arg) ran. */
  int (*defer)(cg_host_t *h, cg_fn fn, void *arg);

  /* Starts a timer: cb fires after timeout_ms, then every repeat_ms if
   * repeat_ms > 0. `*timer_id` receives an id for timer_stop before the
   * call returns. A one-shot timer is gone once its callback has run.
   * Returns CG_ECLOSED once the host is shutting down. THREAD: loop thread
   * only; cb runs there. OWNERSHIP: `arg` is the plugin's; the host holds it
   * until timer_stop returned or a one-shot cb ran. Stop your timers in
   * `stop`: at shutdown the host drops leftovers without calling cb. */
  int (*timer_start)(cg_host_t *h, uint64_t timeout_ms, uint64_t repeat_ms,
                     cg_timer_cb cb, void *arg, uint64_t *timer_id);

  /* Stops a timer; its callback never runs again. Returns CG_ENOENT when the
   * timer already finished or was stopped (harmless). THREAD: loop thread
   * only, also from inside the timer's own callback. OWNERSHIP: once it
   * returns the host no longer holds the timer's `arg`. */
  int (*timer_stop)(cg_host_t *h, uint64_t timer_id);

  /* Runs work(arg) on the host's thread pool (blocking calls go here), then
   * done(arg, status) on the loop thread: status 0, or CG_ECANCELED when the
   * host shut down before the work started. Returns CG_ECLOSED once the host
   * is shutting down. THREAD: call on the loop thread; `work` runs on a pool
   * thread and may call only `post` there; `done` runs on the loop thread.
   * OWNERSHIP: `arg` is the plugin's; the host holds it until done ran.
   * Leave it alone on the loop thread while `work` may be running. */
  int (*queue_work)(cg_host_t *h, cg_fn work, cg_work_done_cb done, void *arg);

  /* --- messages (since 1.0) ------------------------------------------ */

  /* Hands an inbound message to the router. 0: accepted (the router will
   * dedupe, answer through this channel's send, or drop it with a log
   * line); CG_EBUSY: the inbound queue is full, tell the platform to retry;
   * CG_ECLOSED: shutting down; CG_EINVAL: a required field is missing.
   * Only channel plugins may call it (others get CG_EPERM). THREAD: loop
   * thread. OWNERSHIP: `msg` and every view and attachment in it are
   * borrowed for the call and copied. */
  int (*emit_message)(cg_host_t *h, const cg_message_t *msg);

  /* --- HTTP routes on the API listener (since 1.0) -------------------- */

  /* Registers `method path` (flags: CG_ROUTE_*). Call from init or start.
   * Returns CG_EEXIST when another route owns it. THREAD: loop thread; cb
   * runs there. OWNERSHIP: `method` and `path` are copied; `arg` is the
   * plugin's and the host holds it until the instance is destroyed. */
  int (*http_route_add)(cg_host_t *h, cg_str_t method, cg_str_t path, uint32_t flags,
                        cg_http_handler_cb cb, void *arg);

  /* Answers an exchange. Call exactly once per exchange. Content-Length and
   * connection headers are the host's; pass the others (Content-Type...).
   * THREAD: loop thread, from the handler or any later loop callback.
   * OWNERSHIP: headers and body are copied; `ex` is invalid afterwards. */
  int (*http_respond)(cg_host_t *h, cg_http_exchange_t *ex, int status,
                      const cg_http_header_t *headers, size_t header_count, cg_str_t body);

  /* --- cache (since 1.0): the router's configured cache -------------- */

  /* Keys are namespaced per instance by the host ("p:<instance>:<key>"), so
   * plugins never collide with each other or with the router. ttl_ms 0 means
   * no expiry. get: CG_ENOENT when absent. set_nx: 0 when stored, CG_EEXIST
   * when the key was present. CG_EUNAVAIL when the cache is down.
   * Each of the four: THREAD: loop thread; cb runs there, exactly once
   * unless the call returned an error, never inside the call. OWNERSHIP:
   * key and value are copied before the call returns; `arg` is the
   * plugin's and the host holds it until cb ran. */

  /* Reads `key`. THREAD, OWNERSHIP: as above; the value is lent to cb. */
  int (*cache_get)(cg_host_t *h, cg_str_t key, cg_cache_cb cb, void *arg);
  /* Stores `key` unconditionally. THREAD, OWNERSHIP: as above. */
  int (*cache_set)(cg_host_t *h, cg_str_t key, cg_str_t value, uint64_t ttl_ms,
                   cg_cache_cb cb, void *arg);
  /* Stores `key` only when absent. THREAD, OWNERSHIP: as above. */
  int (*cache_set_nx)(cg_host_t *h, cg_str_t key, cg_str_t value, uint64_t ttl_ms,
                      cg_cache_cb cb, void *arg);
  /* Removes `key` (CG_ENOENT when absent). THREAD, OWNERSHIP: as above. */
  int (*cache_del)(cg_host_t *h, cg_str_t key, cg_cache_cb cb, void *arg);

  /* --- metrics (since 1.0) ------------------------------------------- */

  /* `name` is a Prometheus metric name, prefixed by the host with
   * "chatgate_plugin_"; `labels` is Prometheus label text without braces
   * (`code="429",op="send"`), or empty. The instance label is added by the
   * host. Returns CG_EINVAL for a bad name. Each of the three: THREAD:
   * loop thread. OWNERSHIP: name and labels are copied; nothing is kept. */

  /* Adds `value` (>= 0) to a counter. THREAD, OWNERSHIP: as above. */
  int (*metric_counter_add)(cg_host_t *h, cg_str_t name, cg_str_t labels, double value);
  /* Sets a gauge. THREAD, OWNERSHIP: as above. */
  int (*metric_gauge_set)(cg_host_t *h, cg_str_t name, cg_str_t labels, double value);
  /* Records one histogram sample. THREAD, OWNERSHIP: as above. */
  int (*metric_observe)(cg_host_t *h, cg_str_t name, cg_str_t labels, double value);
} cg_host_api_t;

#ifdef __cplusplus
}
#endif

#endif /* CHATGATE_HOST_H */
