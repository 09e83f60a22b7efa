/* A fake OpenAI-compatible model server for bench/backend.sh, in C on libuv
 * so that it costs little CPU: on a two-core machine shared by wrk, the fake
 * and chatgate, a fake that needs a core of its own (the Node one,
 * bench/fake_model.js, tops out near 4,750 req/s) measures itself more than
 * chatgate. It answers every POST with a small Chat Completions JSON after
 * DELAY_MS (default 200) milliseconds, keeps connections alive, and parses
 * only what it needs (the head's end and Content-Length). Written for the
 * benchmark alone; it shares no code with chatgate.
 *
 *   cc -O2 -o fake_model bench/fake_model.c -luv && ./fake_model PORT */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

static uint64_t delay_ms = 200;
static uv_loop_t *loop;

static const char answer_body[] =
    "{\"id\":\"bench\",\"object\":\"chat.completion\",\"choices\":[{\"index\":0,"
    "\"finish_reason\":\"stop\",\"message\":{\"role\":\"assistant\",\"content\":"
    "\"a fixed answer from the benchmark model\"}}]}";
static char answer[512];
static size_t answer_len;

typedef struct conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  char *buf;
  size_t len, cap;
  int pending; /* answers waiting on the timer */
  int closing;
} conn_t;

static void on_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  if (--c->closing == 0) {
    free(c->buf);
    free(c);
  }
}

static void conn_close(conn_t *c) {
  if (c->closing) return;
  c->closing = 2;
  uv_close((uv_handle_t *)&c->tcp, on_closed);
  uv_close((uv_handle_t *)&c->timer, on_closed);
}

static void on_written(uv_write_t *w, int status) {
  (void)status;
  free(w);
}

static void on_timer(uv_timer_t *t) {
  conn_t *c = t->data;
  for (; c->pending > 0; --c->pending) {
    uv_write_t *w = malloc(sizeof *w);
    uv_buf_t b = uv_buf_init(answer, (unsigned)answer_len);
    if (uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) free(w);
  }
}

/* Consumes complete requests from the buffer; each schedules one answer. */
static void parse(conn_t *c) {
  for (;;) {
    char *end = NULL;
    for (size_t i = 3; i < c->len; ++i) {
      if (memcmp(c->buf + i - 3, "\r\n\r\n", 4) == 0) {
        end = c->buf + i + 1;
        break;
      }
    }
    if (end == NULL) return;
    size_t body = 0;
    for (char *p = c->buf; p < end; ++p) {
      if ((p == c->buf || p[-1] == '\n') && strncasecmp(p, "content-length:", 15) == 0) {
        body = strtoul(p + 15, NULL, 10);
      }
    }
    size_t total = (size_t)(end - c->buf) + body;
    if (c->len < total) return;
    memmove(c->buf, c->buf + total, c->len - total);
    c->len -= total;
    /* One timer per connection is enough: a client sends its next request
     * only after the answer (no pipelining from chatgate or wrk). */
    ++c->pending;
    uv_timer_start(&c->timer, on_timer, delay_ms, 0);
  }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  (void)hint;
  conn_t *c = h->data;
  if (c->cap - c->len < 16384) {
    c->cap = c->cap * 2 + 16384;
    c->buf = realloc(c->buf, c->cap);
  }
  *b = uv_buf_init(c->buf + c->len, (unsigned)(c->cap - c->len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  (void)b;
  conn_t *c = s->data;
  if (n < 0) {
    conn_close(c);
    return;
  }
  c->len += (size_t)n;
  parse(c);
}

static void on_connection(uv_stream_t *server, int status) {
  if (status != 0) return;
  conn_t *c = calloc(1, sizeof *c);
  uv_tcp_init(loop, &c->tcp);
  uv_timer_init(loop, &c->timer);
  c->tcp.data = c->timer.data = c;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: fake_model PORT\n");
    return 2;
  }
  const char *d = getenv("DELAY_MS");
  if (d != NULL) delay_ms = strtoull(d, NULL, 10);
  answer_len = (size_t)snprintf(answer, sizeof answer,
                                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                "Content-Length: %zu\r\n\r\n%s",
                                sizeof answer_body - 1, answer_body);
  loop = uv_default_loop();
  uv_tcp_t server;
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", atoi(argv[1]), &addr);
  uv_tcp_init(loop, &server);
  if (uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0) != 0 ||
      uv_listen((uv_stream_t *)&server, 4096, on_connection) != 0) {
    fprintf(stderr, "fake_model: cannot listen on %s\n", argv[1]);
    return 1;
  }
  return uv_run(loop, UV_RUN_DEFAULT);
}
