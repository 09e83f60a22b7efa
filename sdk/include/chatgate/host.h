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

typedef struct cg_host_s cg_host_t;                   /* one per plugin instance, host-owned */
typedef struct cg_config_s cg_config_t;               /* an instance's validated config section */
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
  cg_str_t method;                 /* "POST" */
  cg_str_t path;                   /* "/webhook/feishu", percent-encoding untouched */
  cg_str_t query;                  /* after '?', or empty */
  const cg_http_header_t *headers; /* header_count entries */
  cg_str_t body;
  cg_str_t remote_addr; /* the client: "192.0.2.7" or "2001:db8::7"; behind a
                           listener's trustedProxies, the address their
                           X-Forwarded-For names (docs/security.md) */
} cg_http_request_t;

/* Called for each request on a registered route. The plugin must
 * eventually call `http_respond` on `ex` exactly once, now or later; `ex`
 * stays valid until then, even if the client goes away (the answer is then
 * dropped). THREAD: loop thread. OWNERSHIP: `req` and every view in it are
 * borrowed until the handler returns; `ex` is the host's, lent until
 * http_respond; `arg` is the one given to http_route_add. */
typedef void (*cg_http_handler_cb)(void *arg, cg_http_exchange_t *ex, const cg_http_request_t *req);

/* --- outbound HTTP (since 1.1) ------------------------------------------ */

/* A request for http_request. Borrowed for the call: the host copies every
 * view before it returns. */
typedef struct cg_http_client_request_s {
  uint32_t struct_size;
  uint32_t header_count;
  cg_str_t method;                 /* "GET", "POST", ... */
  cg_str_t url;                    /* http:// or https:// */
  const cg_http_header_t *headers; /* header_count entries, sent as given */
  cg_str_t body;                   /* sent as is; empty for none */
  uint64_t timeout_ms;             /* the whole exchange; 0: the host's default */
  uint64_t connect_timeout_ms;     /* DNS + TCP + TLS; 0: the host's default */
} cg_http_client_request_t;

/* What came back. Borrowed until the callback returns. */
typedef struct cg_http_client_response_s {
  uint32_t struct_size;
  uint32_t header_count;
  int32_t status;                  /* HTTP status, or 0 when none arrived */
  const cg_http_header_t *headers; /* of the final response (names as sent) */
  cg_str_t body;                   /* empty when the body went to on_data */
  cg_str_t error;                  /* why the exchange failed, or empty; never
                                      holds request headers (no secrets) */
} cg_http_client_response_t;

/* Streaming body: called for each piece as it arrives, after the headers
 * (so `status` is known). Return 0 to go on, anything else to abort (the
 * completion then gets CG_ECANCELED). THREAD: loop thread. OWNERSHIP:
 * `chunk` is borrowed until the callback returns; `arg` is the caller's. */
typedef int (*cg_http_data_cb)(void *arg, int32_t status, cg_str_t chunk);

/* The end of an outbound request, exactly once. result: 0 when a response
 * arrived (whatever its status), CG_ETIMEDOUT, CG_ECANCELED (http_cancel,
 * an aborting on_data, or shutdown), CG_ETOOBIG (the body passed the host's
 * limit), CG_EIO (DNS, connect, TLS or the peer went away; resp->error
 * says which). THREAD: loop thread, never inside http_request or
 * http_cancel. OWNERSHIP: `resp` and its views are borrowed until the
 * callback returns; `arg` is the caller's, the host's last use of it. */
typedef void (*cg_http_done_cb)(void *arg, int result, const cg_http_client_response_t *resp);

/* --- file descriptor readiness (since 1.1) ------------------------------- */

#define CG_FD_READABLE 0x1u
#define CG_FD_WRITABLE 0x2u

/* A watched descriptor is ready. `events`: CG_FD_* that are ready; `status`
 * 0, or CG_EIO when polling failed (the plugin should close the fd and stop
 * the watch). THREAD: loop thread. OWNERSHIP: `arg` is the plugin's. */
typedef void (*cg_fd_cb)(void *arg, int status, uint32_t events);

/* --- WebSocket client (since 1.2) ---------------------------------------- */

/* Message opcodes for ws_send and CG_WS_MESSAGE events. */
#define CG_WS_TEXT 0x1u   /* UTF-8 text (the host checks incoming text) */
#define CG_WS_BINARY 0x2u /* bytes */

/* A connection to open with ws_connect. Borrowed for the call: the host
 * copies every view before it returns. */
typedef struct cg_ws_connect_s {
  uint32_t struct_size;
  uint32_t header_count;
  cg_str_t url;                    /* ws:// or wss:// (host, port, path, query) */
  const cg_http_header_t *headers; /* extra upgrade request headers, sent as given */
  uint64_t connect_timeout_ms;     /* DNS + TCP + TLS + upgrade; 0: 10000 */
  uint64_t ping_interval_ms;       /* 0: none; else the host pings at this
                                      interval and closes the connection with
                                      CG_ETIMEDOUT after two intervals without
                                      a frame from the server */
  uint64_t max_message_bytes;      /* a larger incoming message closes the
                                      connection (1009, CG_ETOOBIG); 0: 16 MiB */
} cg_ws_connect_t;

/* What happened on a connection. */
typedef enum cg_ws_event_type_e {
  CG_WS_OPEN = 1,    /* the upgrade succeeded; ws_send may be called */
  CG_WS_MESSAGE = 2, /* a whole message (fragments are joined) */
  CG_WS_CLOSED = 3   /* the last event: the id is invalid after it */
} cg_ws_event_type_t;

typedef struct cg_ws_event_s {
  uint32_t struct_size;
  uint32_t type; /* cg_ws_event_type_t */
  uint64_t ws_id;
  uint32_t opcode;     /* CG_WS_MESSAGE: CG_WS_TEXT or CG_WS_BINARY */
  int32_t result;      /* CG_WS_CLOSED: 0 after a close handshake (either
                          side began it); CG_ETIMEDOUT (connect or pings),
                          CG_EIO (DNS, connect, TLS, or the peer vanished),
                          CG_EPROTO (upgrade refused or a protocol breach),
                          CG_ETOOBIG, CG_ECANCELED (shutdown) */
  int32_t close_code;  /* CG_WS_CLOSED: the close code the peer sent (or we
                          sent, for our breach); 1005 for none, 1006 when
                          the connection ended without a close frame */
  int32_t http_status; /* CG_WS_CLOSED before CG_WS_OPEN: the upgrade
                          answer's HTTP status, 0 when none arrived */
  cg_str_t data;       /* CG_WS_MESSAGE: the payload; CG_WS_CLOSED: the
                          peer's close reason or why it failed (no secrets) */
} cg_ws_event_t;

/* Every event of a connection. THREAD: loop thread, never inside a ws_*
 * call. OWNERSHIP: `ev` and its views are borrowed until the callback
 * returns; `arg` is the caller's, and the CG_WS_CLOSED event is the host's
 * last use of it. */
typedef void (*cg_ws_cb)(void *arg, const cg_ws_event_t *ev);

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
  int (*config_list_item)(const cg_config_t *cfg, const char *key, size_t index, cg_str_t *out);

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
  int (*timer_start)(cg_host_t *h, uint64_t timeout_ms, uint64_t repeat_ms, cg_timer_cb cb,
                     void *arg, uint64_t *timer_id);

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
  int (*cache_set)(cg_host_t *h, cg_str_t key, cg_str_t value, uint64_t ttl_ms, cg_cache_cb cb,
                   void *arg);
  /* Stores `key` only when absent. THREAD, OWNERSHIP: as above. */
  int (*cache_set_nx)(cg_host_t *h, cg_str_t key, cg_str_t value, uint64_t ttl_ms, cg_cache_cb cb,
                      void *arg);
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

  /* --- outbound HTTP (since 1.1) ------------------------------------- */

  /* Starts an HTTP(S) request on the loop (libcurl's multi interface: no
   * thread, no blocking DNS or connect). Connections are reused, HTTP/2 is
   * used where the server offers it, TLS peers are verified (the operator
   * may set a CA file), and https_proxy / no_proxy are honored. With
   * `on_data` the body streams to it and resp->body stays empty; without,
   * the body is collected. `*request_id` (may be NULL) receives an id for
   * http_cancel. Returns 0 and then calls `done` exactly once, or an error
   * (CG_EINVAL for a bad request or URL, CG_ECLOSED while shutting down,
   * CG_EUNAVAIL when the host has no HTTP client: libcurl missing, or
   * --check-config) and never calls either callback. THREAD: loop thread; callbacks run
   * there. OWNERSHIP: `req` and its views are copied; `arg` is the
   * plugin's and the host holds it until `done` ran. */
  int (*http_request)(cg_host_t *h, const cg_http_client_request_t *req, cg_http_data_cb on_data,
                      cg_http_done_cb done, void *arg, uint64_t *request_id);

  /* Cancels a request: its `done` gets CG_ECANCELED on a later loop turn,
   * unless it already ran (then CG_ENOENT, harmless). Safe from inside the
   * request's own on_data. THREAD: loop thread. OWNERSHIP: nothing. */
  int (*http_cancel)(cg_host_t *h, uint64_t request_id);

  /* --- file descriptor readiness (since 1.1) ------------------------- */

  /* For a client library that does its own non-blocking socket I/O (hiredis,
   * say): cb fires on the loop thread while `fd` is ready for `events`
   * (CG_FD_*; level-triggered). `*watch_id` receives an id. At most one
   * watch per fd. Returns CG_EINVAL for a bad fd or no events, CG_EEXIST
   * when the fd is watched already. THREAD: loop thread. OWNERSHIP: the fd
   * stays the plugin's (the host never closes it); `arg` is the plugin's and
   * the host holds it until fd_watch_stop returned. Stop the watch before
   * closing the fd. */
  int (*fd_watch_start)(cg_host_t *h, int fd, uint32_t events, cg_fd_cb cb, void *arg,
                        uint64_t *watch_id);
  /* Changes the events watched; 0 pauses the watch. THREAD: loop thread,
   * also from cb. OWNERSHIP: nothing. */
  int (*fd_watch_update)(cg_host_t *h, uint64_t watch_id, uint32_t events);
  /* Ends a watch; cb never runs again. CG_ENOENT for an unknown id. THREAD:
   * loop thread, also from cb. OWNERSHIP: the host drops `arg`. */
  int (*fd_watch_stop)(cg_host_t *h, uint64_t watch_id);

  /* --- WebSocket client (since 1.2) ---------------------------------- */

  /* Opens a WebSocket client connection (RFC 6455) on the loop: DNS on the
   * thread pool, TLS peers verified against the system CA store or the
   * operator's httpClient.caFile, host name checked. `*ws_id` receives the
   * connection's id. Returns 0 and then calls `cb` with CG_WS_OPEN, any
   * number of CG_WS_MESSAGE and exactly one CG_WS_CLOSED (also when the
   * connection never opened); or an error (CG_EINVAL for a bad URL or
   * header, CG_ECLOSED while shutting down, CG_EUNAVAIL under
   * --check-config) and never calls `cb`. https_proxy (wss://) and
   * http_proxy (ws://) from the environment are tunnelled through with
   * CONNECT unless no_proxy names the host. THREAD:
   * loop thread. OWNERSHIP: `opts` and its views are copied; `arg` is the
   * plugin's, held until CG_WS_CLOSED. */
  int (*ws_connect)(cg_host_t *h, const cg_ws_connect_t *opts, cg_ws_cb cb, void *arg,
                    uint64_t *ws_id);
  /* Sends one message (CG_WS_TEXT or CG_WS_BINARY). CG_ENOENT for an
   * unknown or closed id, CG_EAGAIN before CG_WS_OPEN, CG_EBUSY when more
   * than 64 MiB wait to be written. THREAD: loop thread, also from the
   * callback. OWNERSHIP: `data` is copied. */
  int (*ws_send)(cg_host_t *h, uint64_t ws_id, uint32_t opcode, cg_str_t data);
  /* Sends a ping (payload at most 125 bytes; the host answers server pings
   * itself). Errors as ws_send. THREAD, OWNERSHIP: as ws_send. */
  int (*ws_ping)(cg_host_t *h, uint64_t ws_id, cg_str_t data);
  /* Begins closing: sends a close frame with `code` (1000-4999, or 0 for
   * none) and `reason` (at most 123 bytes), waits briefly for the server's,
   * then ends the connection; CG_WS_CLOSED follows on a later turn. Before
   * CG_WS_OPEN it abandons the attempt (result CG_ECANCELED). CG_ENOENT
   * when already closing or closed. THREAD: loop thread, also from the
   * callback. OWNERSHIP: `reason` is copied. */
  int (*ws_close)(cg_host_t *h, uint64_t ws_id, int32_t code, cg_str_t reason);
  /* The delay before reconnect attempt `attempt` (0 for the first retry):
   * min(max_ms, base_ms * 2^attempt), less a random part of up to half of
   * it, so that many clients dropped at once do not return at once.
   * THREAD: any. OWNERSHIP: nothing. */
  uint64_t (*backoff_ms)(cg_host_t *h, uint32_t attempt, uint64_t base_ms, uint64_t max_ms);

  /* --- messages a channel drops (since 1.3) ---------------------------- */

  /* Counts a platform message the channel received and does not hand to
   * the router: its group policy ("policy": no @-mention), a message type
   * it does not take ("unsupported"), and the like. The host adds one to
   * chatgate_messages_received_total and chatgate_messages_dropped_total
   * {reason} of the instance's channel, so success rates stay honest.
   * `reason` is 1-32 characters of [a-z_]; CG_EINVAL otherwise, CG_EPERM
   * from an instance that is not a channel. THREAD: loop thread.
   * OWNERSHIP: `reason` is copied. */
  int (*message_dropped)(cg_host_t *h, cg_str_t reason);

  /* Sends a message from the bot through the channel instance named
   * `channel` (this plugin's own, or another's), not in answer to anyone:
   * a notification. `msg` gives conversation_id, conversation_type, format
   * and text (the rest is the host's: FINAL, a fresh answer_id). Returns 0
   * and then done(arg, status) fires exactly once, never inside the call,
   * with the channel's result; or an error and no done: CG_ENOENT (no such
   * channel instance), CG_EUNAVAIL (it is starting or failed), CG_ENOTSUP
   * (markdown to a channel that does not render it), CG_EINVAL (empty
   * conversation or text), or the channel's own refusal. THREAD: loop
   * thread. OWNERSHIP: `channel` and `msg` are borrowed for the call;
   * `arg` is the caller's, held until done ran. (since 1.3) */
  int (*send_message)(cg_host_t *h, cg_str_t channel, const cg_reply_t *msg, cg_done_cb done,
                      void *arg);

  /* --- per-instance capabilities (since 1.4) ---------------------------- */

  /* Narrows what this instance does to `capabilities` (CG_*_CAP_* of its
   * kind): the descriptor's bits say what the plugin can do, this says what
   * the instance configured does. A channel whose operator chose plain
   * text replies clears CG_CHANNEL_CAP_STREAMING, and the router then sends
   * it only the FINAL reply of each answer instead of partial updates it
   * would drop. Without a call the descriptor's bits hold. Returns
   * CG_EINVAL for a bit the descriptor does not have, CG_EPERM outside
   * init. THREAD: loop thread, inside init. OWNERSHIP: nothing is kept. */
  int (*set_capabilities)(cg_host_t *h, uint64_t capabilities);

  /* As `log`, for a line that can repeat per request or per message (a
   * refused callback, a full queue, a failed delivery): the host writes at
   * most one line per second per `cause` of this instance, and the line
   * that follows a held-back stretch says how many it stood for. `cause` is
   * a short stable key of what went wrong ("bad_signature", "queue_full"),
   * not of who: the host keeps one entry per cause. Never pass secrets.
   * THREAD: loop thread. OWNERSHIP: `cause` and `msg` are copied when the
   * line is written, and not kept. (since 1.4) */
  void (*log_throttled)(cg_host_t *h, int level, cg_str_t cause, cg_str_t msg);

  /* --- durable hand-over (since 1.5) ------------------------------------ */

  /* As emit_message, with the answer given once the message is safe, so a
   * channel acknowledges the platform (webhook answer, long-connection ack)
   * only for a message that survives this process: done(arg, status) fires
   * exactly once, never inside the call (save once the host's loop is
   * closing for good: then at once, with CG_ECLOSED), with
   *   0           the router holds the message: in the durable queue when
   *               one is configured (router.queue), so another instance
   *               answers it if this one dies; in memory otherwise, exactly
   *               as emit_message's 0;
   *   CG_EEXIST   a duplicate of a message the router holds or answered:
   *               acknowledge it, nothing is lost;
   *   CG_EBUSY, CG_EUNAVAIL, CG_ECLOSED
   *               not taken (queue full, queue unreachable, shutting
   *               down): do not acknowledge, let the platform deliver it
   *               again.
   * Returns an error and calls no done for what emit_message refuses at
   * once (CG_EINVAL, CG_EPERM). THREAD: loop thread; done runs there.
   * OWNERSHIP: `msg` as in emit_message (copied); `arg` is the plugin's,
   * held until done ran. */
  int (*emit_message_durable)(cg_host_t *h, const cg_message_t *msg, cg_done_cb done, void *arg);

  /* --- what end users read (since 1.8) ----------------------------------- */

  /* The text an end user reads for `key`, in this instance's language
   * (the channel instance's `locale:`, else router.locale) with the
   * operator's `messages:` override applied: what a plugin says on its
   * own rather than hard-code English. Keys (docs/operator-guide.md, "What
   * users read"): "unsupported" (the answer to a message type the channel
   * does not read), "received" (a card button's acknowledgement), and the
   * router's own ("busy", "failed", "restarting", ...). Returns 0, or
   * CG_ENOENT for a key the catalog does not have (use your own text), or
   * CG_EUNAVAIL under `--check-config`, which runs no router: ask when you
   * answer, not in init. A host older than 1.8 has no such entry: check
   * abi_minor first and fall back to your own text. THREAD: loop thread. OWNERSHIP: `key`
   * is borrowed for the call; the view written to `*out` is the host's and
   * valid until the plugin's current callback returns (a reload can change
   * the text): copy it to keep it. */
  int (*user_text)(cg_host_t *h, cg_str_t key, cg_str_t *out);
} cg_host_api_t;

#ifdef __cplusplus
}
#endif

#endif /* CHATGATE_HOST_H */
