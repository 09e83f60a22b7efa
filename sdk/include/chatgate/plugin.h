/* chatgate plugin SDK: the plugin descriptor, config schema and the ops
 * tables of the three plugin kinds.
 *
 * A plugin is a shared object that exports exactly one symbol:
 *
 *   CG_EXPORT const cg_plugin_t *cg_plugin_entry(uint32_t host_major,
 *                                                uint32_t host_minor);
 *
 * The host offers its ABI version; the plugin returns its descriptor, or NULL
 * to decline (for instance when the host is older than it needs). The host
 * loads a descriptor when abi_major == CG_ABI_MAJOR and abi_minor <= the
 * host's minor. Lifecycle, all on the loop thread:
 *
 *   init     validate config, allocate state; no I/O, no timers
 *   start    the loop is running: open connections, register timers
 *   stop     finish or cancel in-flight work, then call done exactly once
 *            (like uv_close: the host waits for it)
 *   destroy  free everything; no host call may follow
 *
 * If init fails, neither start, stop nor destroy is called: init must free
 * what it allocated. If start fails, stop is not called but destroy is.
 */
#ifndef CHATGATE_PLUGIN_H
#define CHATGATE_PLUGIN_H

#include "common.h"
#include "host.h"
#include "message.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CG_PLUGIN_ENTRY_SYMBOL "cg_plugin_entry"

typedef enum cg_plugin_kind_e {
  CG_KIND_CHANNEL = 1,
  CG_KIND_MODEL = 2,
  CG_KIND_CACHE = 3
} cg_plugin_kind_t;

/* Capability bits, per kind. */
#define CG_CHANNEL_CAP_STREAMING 0x1u /* can show partial updates of one answer */
#define CG_CHANNEL_CAP_MARKDOWN 0x2u  /* renders CG_REPLY_MARKDOWN */
#define CG_CHANNEL_CAP_BUTTONS 0x4u   /* renders cg_reply_t.buttons */
#define CG_MODEL_CAP_STREAMING 0x1u   /* calls on_delta before on_done */
#define CG_CACHE_CAP_SHARED 0x1u      /* shared between processes (e.g. Redis) */

/* ---- declarative config schema ---------------------------------------- */

typedef enum cg_config_type_e {
  CG_CFG_STRING = 1,
  CG_CFG_INT = 2,        /* int64; bounded by min/max when min < max */
  CG_CFG_BOOL = 3,
  CG_CFG_DOUBLE = 4,
  CG_CFG_STRING_LIST = 5,
  CG_CFG_ENUM = 6        /* a string, one of `choices` ("a|b|c") */
} cg_config_type_t;

#define CG_CFG_REQUIRED 0x1u /* must be present (a default makes no sense then) */
#define CG_CFG_SECRET 0x2u   /* never logged, masked on the admin page */

/* One key of a plugin's config section. The host validates the operator's
 * YAML against these before init: unknown keys, wrong types, out-of-range
 * numbers and missing required keys are start-up errors naming file and
 * line, and `chatgate --list-plugins` prints them as help. */
typedef struct cg_config_field_s {
  uint32_t struct_size;      /* sizeof(cg_config_field_t) */
  uint32_t type;             /* cg_config_type_t */
  uint32_t flags;            /* CG_CFG_* */
  const char *key;           /* "appId" */
  const char *default_value; /* as YAML text ("30000", "true", "a"), or NULL */
  const char *description;   /* one line of help */
  const char *choices;       /* CG_CFG_ENUM only: "text|markdown" */
  int64_t min;               /* CG_CFG_INT only */
  int64_t max;
} cg_config_field_t;

/* ---- ops per kind ------------------------------------------------------- */

/* A channel: the host calls send to deliver a reply (or one update of a
 * streamed reply) to the platform. */
typedef struct cg_channel_ops_s {
  uint32_t struct_size;
  /* Unless it returns an error, done(arg, status) fires exactly once, never
   * inside send, with 0 when the platform accepted the reply. THREAD: called
   * on the loop thread; call done there. OWNERSHIP: `reply` and its views
   * and buttons are borrowed until send returns (copy what a later request
   * needs); `arg` is the host's, hand it back untouched. */
  int (*send)(void *state, const cg_reply_t *reply, cg_done_cb done, void *arg);
  /* since 1.7: stop taking messages from the platform; keep sending
   * replies. Called at most once, before stop, when shutdown or a handover
   * to a new process begins. Answer the platform for what was already
   * taken, then close long connections and do not reconnect: the platform
   * delivers to the app's other clients (the process taking over, or
   * another instance), and what it pushes meanwhile without an answer it
   * pushes again. send keeps working until stop. NULL: the host refuses
   * what the channel submits once the router's intake closes (after the
   * listeners, a second or so later: CG_ECLOSED), which the channel
   * answers as any refusal. THREAD: loop thread. */
  void (*quiesce)(void *state);
} cg_channel_ops_t;

typedef enum cg_model_role_e {
  CG_ROLE_SYSTEM = 0,
  CG_ROLE_USER = 1,
  CG_ROLE_ASSISTANT = 2
} cg_model_role_t;

typedef struct cg_model_turn_s {
  uint32_t struct_size;
  uint32_t role; /* cg_model_role_t */
  cg_str_t content;
} cg_model_turn_t;

typedef struct cg_model_request_s {
  uint32_t struct_size;
  uint32_t turn_count;
  const cg_model_turn_t *turns; /* oldest first; the last is the new user turn */
  cg_str_t channel;             /* channel instance the message came from */
  cg_str_t conversation_id;
  cg_str_t user_id;
  uint32_t stream;              /* non-zero: deltas are wanted */
  uint32_t reserved;
  uint64_t timeout_ms;          /* the router's deadline; 0 = the backend's own */
} cg_model_request_t;

/* Where a model delivers its answer. The host fills it; the model copies
 * it in generate. */
typedef struct cg_model_sink_s {
  uint32_t struct_size;
  void *arg; /* the host's; passed back to both callbacks untouched */
  /* Optional to call: gives text appended to the answer so far, never after
   * on_done. THREAD: call on the loop thread, never inside generate.
   * OWNERSHIP: `text` is the model's, borrowed until on_delta returns. */
  void (*on_delta)(void *arg, cg_str_t text);
  /* Fires exactly once per accepted call with status 0 and the whole
   * answer, or a CG_E* code and a short cause for the log (never a
   * secret). THREAD: call on the loop thread, never inside generate or
   * cancel. OWNERSHIP: `text` is the model's, borrowed until on_done
   * returns; `arg` and the sink are not used by the model afterwards. */
  void (*on_done)(void *arg, int status, cg_str_t text);
} cg_model_sink_t;

/* A model backend. */
typedef struct cg_model_ops_s {
  uint32_t struct_size;
  /* Starts a call and stores its id in *call_id before returning; the sink
   * then gets its callbacks, unless generate returned an error. THREAD:
   * called on the loop thread. OWNERSHIP: `req` (turns and views included)
   * and `sink` are borrowed until generate returns: copy them; `sink->arg`
   * stays the host's and valid until on_done ran. */
  int (*generate)(void *state, const cg_model_request_t *req,
                  const cg_model_sink_t *sink, uint64_t *call_id);
  /* Ends a call early: its on_done then fires with CG_ECANCELED, exactly
   * once and never inside cancel itself. Returns CG_ENOENT for an unknown
   * call or one whose on_done already ran. THREAD: called on the loop
   * thread. OWNERSHIP: nothing is borrowed or kept. */
  int (*cancel)(void *state, uint64_t call_id);
} cg_model_ops_t;

/* A cache. Semantics as in cg_host_api_t.cache_*; keys arrive namespaced by
 * the host. ttl_ms 0 = no expiry. For all four: unless the call returns an
 * error, cb fires exactly once, never inside the call. THREAD: called on the
 * loop thread; call cb there. OWNERSHIP: key and value are borrowed until
 * the call returns (copy them); the value given to cb is the cache's,
 * borrowed until cb returns; `arg` is the host's, hand it back untouched. */
typedef struct cg_cache_ops_s {
  uint32_t struct_size;
  /* cb gets the value, or CG_ENOENT. THREAD, OWNERSHIP: as above. */
  int (*get)(void *state, cg_str_t key, cg_cache_cb cb, void *arg);
  /* Stores unconditionally. THREAD, OWNERSHIP: as above. */
  int (*set)(void *state, cg_str_t key, cg_str_t value, uint64_t ttl_ms, cg_cache_cb cb,
             void *arg);
  /* Stores only when absent, else cb gets CG_EEXIST. THREAD, OWNERSHIP: as
   * above. */
  int (*set_nx)(void *state, cg_str_t key, cg_str_t value, uint64_t ttl_ms, cg_cache_cb cb,
                void *arg);
  /* Removes, or cb gets CG_ENOENT. THREAD, OWNERSHIP: as above. */
  int (*del)(void *state, cg_str_t key, cg_cache_cb cb, void *arg);
  /* since 1.6: the cache's durable queue, or NULL when it has none. Read it
   * only when struct_size covers it. OWNERSHIP: the plugin's, static. */
  const struct cg_queue_ops_s *queue;
} cg_cache_ops_t;

/* ---- a durable inbound queue (since 1.6) --------------------------------
 * A cache plugin may offer one (cg_cache_ops_t.queue): the host keeps the
 * messages channels acknowledged in it, so a crash of the process loses
 * none. The host owns the logic (which partition a message goes to, which
 * instance reads which partition, order, retries); the plugin owns only
 * the storage. Partitions are numbered 0..n-1 and each keeps its entries in
 * order. A consumer reads an entry, and it stays pending (redelivered to a
 * claimer if the consumer dies) until acknowledged.
 *
 * For every op below: unless the call returns an error, cb fires exactly
 * once, never inside the call. THREAD: loop thread only. OWNERSHIP: what is
 * passed in is borrowed until the call returns (copy it); what cb gets is
 * the plugin's, borrowed until cb returns; `arg` is the host's. */

/* One entry handed to a consumer. */
typedef struct cg_queue_entry_s {
  uint32_t struct_size;
  uint32_t partition;
  cg_str_t id;          /* the entry's id in its partition (opaque) */
  cg_str_t payload;     /* what enqueue stored */
  uint32_t deliveries;  /* how often it was handed out, this time included */
} cg_queue_entry_t;

typedef void (*cg_queue_entries_cb)(void *arg, int status, const cg_queue_entry_t *entries,
                                    size_t count);

/* The whole queue's state, for metrics and the admin page. */
typedef struct cg_queue_stats_s {
  uint32_t struct_size;
  uint64_t length;             /* entries not yet acknowledged, all partitions */
  uint64_t pending;            /* of those, handed to a consumer */
  uint64_t oldest_pending_ms;  /* age of the oldest pending entry; 0: none */
  uint64_t dead_letters;       /* entries in the dead-letter store */
} cg_queue_stats_t;

typedef void (*cg_queue_stats_cb)(void *arg, int status, const cg_queue_stats_t *stats);

typedef struct cg_queue_ops_s {
  uint32_t struct_size;
  /* Stores `payload` at the end of `partition`, unless `dedupe_key` (when
   * not empty) was seen in the last dedupe_ttl_ms: cb gets 0 and the entry's
   * id, CG_EEXIST (a duplicate; nothing stored), CG_EBUSY (the partition is
   * at its configured length) or CG_EUNAVAIL. Key and entry are stored
   * together or not at all. */
  int (*enqueue)(void *state, uint32_t partition, cg_str_t dedupe_key, uint64_t dedupe_ttl_ms,
                 cg_str_t payload, cg_cache_cb cb, void *arg);
  /* Takes or renews `owner`'s lease on `partition` for ttl_ms: cb gets 0
   * (held by owner now; the partition is ready to read) or CG_EBUSY (held
   * by another). */
  int (*lease)(void *state, uint32_t partition, cg_str_t owner, uint64_t ttl_ms, cg_cache_cb cb,
               void *arg);
  /* Gives the lease up if `owner` holds it: 0, or CG_ENOENT. */
  int (*release)(void *state, uint32_t partition, cg_str_t owner, cg_cache_cb cb, void *arg);
  /* Hands `consumer` up to `max` entries no consumer had yet, from the
   * given partitions, waiting up to block_ms for one (0: no wait). */
  int (*read)(void *state, const uint32_t *partitions, size_t partition_count,
              cg_str_t consumer, uint32_t max, uint64_t block_ms, cg_queue_entries_cb cb,
              void *arg);
  /* Hands `consumer` up to `max` of the partition's pending entries idle
   * for min_idle_ms or longer (another consumer's that died), oldest
   * first, each counted as one more delivery. Fewer than max: no more. */
  int (*claim)(void *state, uint32_t partition, cg_str_t consumer, uint64_t min_idle_ms,
               uint32_t max, cg_queue_entries_cb cb, void *arg);
  /* Counts one more delivery of a pending entry to `consumer` (the host
   * tries it again): cb gets 0 and the new count in decimal. */
  int (*retry)(void *state, uint32_t partition, cg_str_t id, cg_str_t consumer, cg_cache_cb cb,
               void *arg);
  /* Acknowledges and removes `count` entries of `partition` (ids[i]). For
   * each record_keys[i] that is not empty (record_keys may be NULL), that
   * key is stored (value "1", record_ttl_ms) in the same step, as a cache
   * key the host can read with get: that the entry's work was done. */
  int (*ack)(void *state, uint32_t partition, const cg_str_t *ids, const cg_str_t *record_keys,
             size_t count, uint64_t record_ttl_ms, cg_cache_cb cb, void *arg);
  /* Moves an entry to the dead-letter store with `reason`, acknowledged and
   * removed from its partition in the same step. */
  int (*dead_letter)(void *state, uint32_t partition, cg_str_t id, cg_str_t payload,
                     cg_str_t reason, cg_cache_cb cb, void *arg);
  /* Heartbeat: `member` is alive for ttl_ms; cb gets 0 and the number of
   * live members (itself included) in decimal. */
  int (*members)(void *state, cg_str_t member, uint64_t ttl_ms, cg_cache_cb cb, void *arg);
  /* The state of partitions 0..partition_count-1 and the dead letters. */
  int (*stats)(void *state, uint32_t partition_count, cg_queue_stats_cb cb, void *arg);
} cg_queue_ops_t;

/* ---- the descriptor --------------------------------------------------- */

typedef struct cg_plugin_s {
  uint32_t struct_size; /* sizeof(cg_plugin_t) */
  uint32_t abi_major;   /* CG_ABI_MAJOR the plugin was built with */
  uint32_t abi_minor;   /* the lowest host minor the plugin needs */
  uint32_t kind;        /* cg_plugin_kind_t */
  const char *name;     /* "feishu": lower case, [a-z0-9_-] */
  const char *version;  /* the plugin's own version, "1.2.0" */
  const char *description;
  uint64_t capabilities; /* CG_*_CAP_* for its kind */

  /* Config schema: config_field_count entries. The host steps through the
   * array by config_fields[0].struct_size, so it can grow. */
  const cg_config_field_t *config_fields;
  uint32_t config_field_count;
  uint32_t reserved;

  /* Validates config and allocates; no I/O, no timers. THREAD: loop
   * thread, perhaps before the loop runs. OWNERSHIP: `api`, `host` and
   * `config` are the host's and stay valid until destroy returns. *state
   * is the plugin's; the host hands it back to every call. On failure
   * free what init allocated: nothing else is called. */
  int (*init)(const cg_host_api_t *api, cg_host_t *host, const cg_config_t *config,
              void **state);
  /* The loop is running: connect, register timers. On failure destroy (not
   * stop) follows. THREAD: loop thread. OWNERSHIP: `state` is the plugin's. */
  int (*start)(void *state);
  /* Finishes or cancels in-flight work, then calls done(done_arg, status)
   * exactly once. THREAD: loop thread; call done there. OWNERSHIP: `state`
   * is the plugin's; `done_arg` is the host's, hand it back untouched. */
  void (*stop)(void *state, cg_done_cb done, void *done_arg);
  /* Frees everything; no host call and no callback may follow. THREAD: loop
   * thread. OWNERSHIP: `state` is the plugin's, to free here. */
  void (*destroy)(void *state);

  /* The kind's ops table: cg_channel_ops_t, cg_model_ops_t or cg_cache_ops_t.
   * Its struct_size is checked like the descriptor's. */
  const void *ops;
} cg_plugin_t;

/* The exported entry (see the top of this file). THREAD: the host's main
 * (loop) thread, before any other call into the plugin. OWNERSHIP: the
 * descriptor, its strings, schema and ops table are the plugin's and must
 * stay valid and unchanged while the shared object is loaded (static
 * const data). */
typedef const cg_plugin_t *(*cg_plugin_entry_fn)(uint32_t host_major, uint32_t host_minor);

#ifdef __cplusplus
}
#endif

#endif /* CHATGATE_PLUGIN_H */
