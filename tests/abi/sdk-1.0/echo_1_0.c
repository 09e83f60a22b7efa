/* echo.so: the built-in model backend. It answers deterministically from the
 * user's text and the number of earlier turns in the context, so tests and a
 * fresh install can see the router, the context and the cache work without a
 * real model:
 *
 *   "hello" as the 3rd turn of a conversation -> "echo: hello (turn 3)"
 *
 * Written in plain C against the SDK only, as an out-of-tree plugin would be.
 * Config: prefix (the word before ':'), delayMs (answer after a delay, to
 * stand in for a slow model), fail (none|busy|error: answer every call with
 * that failure, to exercise the router's error replies).
 */
#include <chatgate/chatgate.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct echo_call_s echo_call_t;
typedef struct echo_state_s echo_state_t;

struct echo_call_s {
  echo_call_t *next;
  echo_state_t *st;
  uint64_t id;
  uint64_t timer_id; /* 0 when the answer is deferred rather than timed */
  int status;        /* what on_done will say */
  int stream;
  cg_model_sink_t sink;
  char *text; /* the answer, owned */
  size_t text_len;
};

struct echo_state_s {
  const cg_host_api_t *api;
  cg_host_t *host;
  char prefix[64];
  size_t prefix_len; /* the prefix may hold NUL bytes: never strlen it */
  int64_t delay_ms;
  int fail; /* 0 none, CG_EBUSY or CG_EIO */
  uint64_t next_id;
  echo_call_t *calls; /* in flight, newest first */
  cg_done_cb stop_done;
  void *stop_arg;
};

static void echo_unlink(echo_state_t *st, echo_call_t *call) {
  echo_call_t **p = &st->calls;
  while (*p != NULL && *p != call) p = &(*p)->next;
  if (*p == call) *p = call->next;
}

/* Delivers a call's result and frees it. */
static void echo_complete(echo_call_t *call) {
  echo_state_t *st = call->st;
  cg_str_t text = {call->text, call->text_len};
  echo_unlink(st, call);
  if (call->status == 0 && call->stream) call->sink.on_delta(call->sink.arg, text);
  if (call->status == CG_ECANCELED) text = cg_str("canceled");
  if (call->status == CG_EBUSY) text = cg_str("echo configured to answer busy");
  if (call->status == CG_EIO) text = cg_str("echo configured to fail");
  call->sink.on_done(call->sink.arg, call->status, text);
  free(call->text);
  free(call);
}

static void echo_deferred(void *arg) { echo_complete((echo_call_t *)arg); }

static void echo_timer(void *arg, uint64_t timer_id) {
  echo_call_t *call = (echo_call_t *)arg;
  (void)timer_id;
  call->timer_id = 0;
  echo_complete(call);
}

/* Builds "<prefix>: <text> (turn N)" with memcpy rather than printf's %.*s,
 * which would stop at the first NUL byte and takes an int length: any bytes
 * the user sent come back whole. */
static int echo_answer(const echo_state_t *st, cg_str_t text, uint32_t turn, echo_call_t *call) {
  char tail[32];
  const int tail_len = snprintf(tail, sizeof tail, " (turn %u)", (unsigned)turn);
  size_t fixed, total;
  char *p;

  if (tail_len < 0 || (size_t)tail_len >= sizeof tail) return CG_EINVAL;
  fixed = st->prefix_len + 2 + (size_t)tail_len;
  if (text.len > SIZE_MAX - fixed) return CG_ETOOBIG;
  total = fixed + text.len;
  call->text = (char *)malloc(total);
  if (call->text == NULL) return CG_ENOMEM;
  p = call->text;
  memcpy(p, st->prefix, st->prefix_len);
  p += st->prefix_len;
  /* A sized view, not a C string: */
  /* NOLINTNEXTLINE(bugprone-not-null-terminated-result) */
  memcpy(p, ": ", 2);
  p += 2;
  /* memcpy's pointers must be valid even for 0 bytes; an empty view's may
   * be NULL. */
  if (text.len > 0) memcpy(p, text.ptr, text.len);
  p += text.len;
  memcpy(p, tail, (size_t)tail_len);
  call->text_len = total;
  return 0;
}

static int echo_generate(void *state, const cg_model_request_t *req, const cg_model_sink_t *sink,
                         uint64_t *call_id) {
  echo_state_t *st = (echo_state_t *)state;
  const cg_model_turn_t *last;
  uint32_t i, user_turns = 0;
  echo_call_t *call;
  int rc;

  if (req == NULL || sink == NULL || req->turn_count == 0 || req->turns == NULL) return CG_EINVAL;
  if (st->stop_done != NULL) return CG_ECLOSED;
  for (i = 0; i < req->turn_count; i++) {
    if (req->turns[i].role == CG_ROLE_USER) user_turns++;
  }
  last = &req->turns[req->turn_count - 1];

  if (last->content.len > 0 && last->content.ptr == NULL) return CG_EINVAL;

  call = (echo_call_t *)calloc(1, sizeof *call);
  if (call == NULL) return CG_ENOMEM;
  rc = echo_answer(st, last->content, user_turns, call);
  if (rc != 0) {
    free(call);
    return rc;
  }
  call->st = st;
  call->id = ++st->next_id;
  call->status = st->fail;
  call->stream = req->stream != 0;
  memcpy(&call->sink, sink, sizeof call->sink);

  /* Never complete inside generate: defer, or wait for the configured delay. */
  if (st->delay_ms > 0) {
    rc = st->api->timer_start(st->host, (uint64_t)st->delay_ms, 0, echo_timer, call,
                              &call->timer_id);
  } else {
    rc = st->api->defer(st->host, echo_deferred, call);
  }
  if (rc != 0) {
    free(call->text);
    free(call);
    return rc;
  }
  call->next = st->calls;
  st->calls = call;
  *call_id = call->id;
  return 0;
}

/* Ends a timed call early; a deferred call is about to complete anyway and
 * just reports canceled. */
static void echo_cancel_call(echo_state_t *st, echo_call_t *call) {
  call->status = CG_ECANCELED;
  if (call->timer_id != 0) {
    st->api->timer_stop(st->host, call->timer_id);
    call->timer_id = 0;
    st->api->defer(st->host, echo_deferred, call);
  }
}

static int echo_cancel(void *state, uint64_t call_id) {
  echo_state_t *st = (echo_state_t *)state;
  echo_call_t *call;
  for (call = st->calls; call != NULL; call = call->next) {
    if (call->id == call_id) {
      if (call->status == CG_ECANCELED) return 0;
      echo_cancel_call(st, call);
      return 0;
    }
  }
  return CG_ENOENT;
}

static int echo_init(const cg_host_api_t *api, cg_host_t *host, const cg_config_t *config,
                     void **state) {
  echo_state_t *st;
  cg_str_t prefix, fail;
  int64_t delay = 0;

  if (api->config_string(config, "prefix", &prefix) != 0 ||
      api->config_int(config, "delayMs", &delay) != 0 ||
      api->config_string(config, "fail", &fail) != 0) {
    api->set_error(host, cg_str("config values missing"));
    return CG_ECONFIG;
  }
  if (prefix.len >= 64) {
    api->set_error(host, cg_str("prefix must be shorter than 64 bytes"));
    return CG_ECONFIG;
  }
  st = (echo_state_t *)calloc(1, sizeof *st);
  if (st == NULL) return CG_ENOMEM;
  st->api = api;
  st->host = host;
  if (prefix.len > 0) memcpy(st->prefix, prefix.ptr, prefix.len);
  st->prefix_len = prefix.len;
  st->delay_ms = delay;
  if (fail.len == 4 && memcmp(fail.ptr, "busy", 4) == 0) st->fail = CG_EBUSY;
  if (fail.len == 5 && memcmp(fail.ptr, "error", 5) == 0) st->fail = CG_EIO;
  *state = st;
  return 0;
}

static int echo_start(void *state) {
  (void)state;
  return 0;
}

static void echo_stopped(void *arg) {
  echo_state_t *st = (echo_state_t *)arg;
  st->stop_done(st->stop_arg, 0);
}

/* Cancels what is in flight; done runs after those completions (defer is
 * first in, first out). */
static void echo_stop(void *state, cg_done_cb done, void *arg) {
  echo_state_t *st = (echo_state_t *)state;
  echo_call_t *call;
  st->stop_done = done;
  st->stop_arg = arg;
  for (call = st->calls; call != NULL; call = call->next) {
    if (call->status != CG_ECANCELED) echo_cancel_call(st, call);
  }
  st->api->defer(st->host, echo_stopped, st);
}

static void echo_destroy(void *state) { free(state); }

static const cg_model_ops_t echo_ops = {sizeof(cg_model_ops_t), echo_generate, echo_cancel};

static const cg_config_field_t echo_fields[] = {
    {sizeof(cg_config_field_t), CG_CFG_STRING, 0, "prefix", "echo",
     "the word before ':' in every answer", NULL, 0, 0},
    {sizeof(cg_config_field_t), CG_CFG_INT, 0, "delayMs", "0",
     "answer after this many milliseconds (stands in for a slow model)", NULL, 0, 600000},
    {sizeof(cg_config_field_t), CG_CFG_ENUM, 0, "fail", "none",
     "answer every call with this failure (for testing error replies)", "none|busy|error", 0, 0},
};

static const cg_plugin_t echo_plugin = {
    sizeof(cg_plugin_t),
    CG_ABI_MAJOR,
    0, /* needs nothing newer than 1.0 */
    CG_KIND_MODEL,
    "echo",
    "1.0.0",
    "deterministic echo model backend (the built-in default)",
    CG_MODEL_CAP_STREAMING,
    echo_fields,
    sizeof(echo_fields) / sizeof(echo_fields[0]),
    0,
    echo_init,
    echo_start,
    echo_stop,
    echo_destroy,
    &echo_ops,
};

CG_EXPORT const cg_plugin_t *cg_plugin_entry(uint32_t host_major, uint32_t host_minor) {
  (void)host_minor;
  return host_major == CG_ABI_MAJOR ? &echo_plugin : NULL;
}
