/* A closed-loop HTTP load generator for bench/backend.sh's steady-state
 * figures, in C on libuv. wrk opens all its connections at once and counts
 * that opening burst (1,000 first requests in one instant) in its
 * percentiles; this one opens CONNECTIONS keep-alive connections, lets them
 * run WARMUP seconds unrecorded, then records every request's latency for
 * DURATION seconds and prints the percentiles. Each connection sends its
 * next request as soon as the answer arrived, like wrk. Written for the
 * benchmark alone; it shares no code with chatgate.
 *
 *   cc -O2 -o loadgen bench/loadgen.c -luv -lm
 *   ./loadgen PORT PATH CONNECTIONS WARMUP_S DURATION_S [USERS]
 *
 * POSTs {"userId":"user-<i>","query":"hello from the benchmark"}, user i
 * cycling over USERS (default CONNECTIONS) per connection, so that one
 * conversation rarely has two requests in flight. */
#define _GNU_SOURCE /* memmem */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

typedef struct conn {
  uv_tcp_t tcp;
  uv_connect_t connect;
  uv_write_t write;
  char req[512];
  size_t req_len;
  char buf[8192];
  size_t len;
  uint64_t sent_ns;
  unsigned users_seen;
  int id;
} conn_t;

static uv_loop_t *loop;
static struct sockaddr_in addr;
static const char *path;
static int connections, users;
static uint64_t record_from_ns, record_until_ns;
static double *lat;
static size_t lat_len, lat_cap;
static size_t errors, non_2xx;
static int stopping;

static void send_request(conn_t *c);

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
  conn_t *c = h->data;
  (void)suggested;
  b->base = c->buf + c->len;
  b->len = sizeof c->buf - c->len;
}

static void record(uint64_t start, uint64_t end) {
  if (start < record_from_ns || end > record_until_ns) return;
  if (lat_len == lat_cap) {
    lat_cap = lat_cap ? lat_cap * 2 : 65536;
    lat = realloc(lat, lat_cap * sizeof *lat);
    if (lat == NULL) abort();
  }
  lat[lat_len++] = (double)(end - start) / 1e6;
}

/* The answer is complete when the head and Content-Length bytes are in. */
static int answer_done(conn_t *c) {
  char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
  if (end == NULL) return 0;
  size_t head = (size_t)(end - c->buf) + 4;
  size_t body = 0;
  for (char *p = c->buf; p < end; p++) {
    if ((p == c->buf || p[-1] == '\n') && strncasecmp(p, "Content-Length:", 15) == 0) {
      body = strtoul(p + 15, NULL, 10);
    }
  }
  if (c->len < head + body) return 0;
  if (strncmp(c->buf + 9, "2", 1) != 0) non_2xx++;
  memmove(c->buf, c->buf + head + body, c->len - head - body);
  c->len -= head + body;
  return 1;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  conn_t *c = s->data;
  (void)b;
  if (n < 0) {
    errors++;
    if (!uv_is_closing((uv_handle_t *)s)) uv_close((uv_handle_t *)s, NULL);
    return;
  }
  c->len += (size_t)n;
  if (answer_done(c)) {
    record(c->sent_ns, uv_hrtime());
    if (!stopping) send_request(c);
  }
}

static void on_written(uv_write_t *w, int status) {
  if (status < 0) errors++;
  (void)w;
}

static void send_request(conn_t *c) {
  char body[128];
  int n = snprintf(body, sizeof body, "{\"userId\":\"user-%d-%u\",\"query\":\"hello from the benchmark\"}",
                   c->id, c->users_seen++ % (unsigned)users);
  c->req_len = (size_t)snprintf(c->req, sizeof c->req,
                                "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                                "application/json\r\nContent-Length: %d\r\n\r\n%s",
                                path, n, body);
  uv_buf_t buf = uv_buf_init(c->req, (unsigned)c->req_len);
  c->sent_ns = uv_hrtime();
  if (uv_write(&c->write, (uv_stream_t *)&c->tcp, &buf, 1, on_written) != 0) errors++;
}

static void on_connect(uv_connect_t *req, int status) {
  conn_t *c = req->data;
  if (status < 0) {
    fprintf(stderr, "loadgen: connect: %s\n", uv_strerror(status));
    errors++;
    return;
  }
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  send_request(c);
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void on_end(uv_timer_t *t) {
  stopping = 1;
  uv_stop(t->loop);
}

int main(int argc, char **argv) {
  if (argc < 6) {
    fprintf(stderr, "usage: loadgen PORT PATH CONNECTIONS WARMUP_S DURATION_S [USERS]\n");
    return 2;
  }
  loop = uv_default_loop();
  uv_ip4_addr("127.0.0.1", atoi(argv[1]), &addr);
  path = argv[2];
  connections = atoi(argv[3]);
  double warmup = atof(argv[4]), duration = atof(argv[5]);
  users = argc > 6 ? atoi(argv[6]) : connections;
  if (users < 1) users = 1;
  uint64_t now = uv_hrtime();
  record_from_ns = now + (uint64_t)(warmup * 1e9);
  record_until_ns = record_from_ns + (uint64_t)(duration * 1e9);
  conn_t *conns = calloc((size_t)connections, sizeof *conns);
  for (int i = 0; i < connections; i++) {
    conn_t *c = &conns[i];
    c->id = i;
    uv_tcp_init(loop, &c->tcp);
    c->tcp.data = c;
    c->connect.data = c;
    uv_tcp_nodelay(&c->tcp, 1);
    uv_tcp_connect(&c->connect, &c->tcp, (const struct sockaddr *)&addr, on_connect);
  }
  uv_timer_t end;
  uv_timer_init(loop, &end);
  uv_timer_start(&end, on_end, (uint64_t)((warmup + duration) * 1000) + 50, 0);
  uv_run(loop, UV_RUN_DEFAULT);
  qsort(lat, lat_len, sizeof *lat, cmp);
#define PCT(p) (lat_len ? lat[(size_t)((double)(lat_len - 1) * (p))] : 0.0)
  printf("requests %zu in %.1f s: %.0f req/s; errors %zu, non-2xx %zu\n", lat_len, duration,
         (double)lat_len / duration, errors, non_2xx);
  printf("latency ms: p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f\n", PCT(0.50),
         PCT(0.90), PCT(0.99), PCT(0.999), lat_len ? lat[lat_len - 1] : 0.0);
  free(lat);
  free(conns);
  return 0;
}
