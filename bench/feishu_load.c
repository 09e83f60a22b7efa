/* A load generator for bench/channels.sh: Feishu webhook callbacks
 * (schema 2.0 im.message.receive_v1, AES-256-CBC encrypted and signed with
 * X-Lark-Signature) over keep-alive connections, in C on libuv and OpenSSL.
 * Written for the benchmark from the protocol notes (shared/protocols.md);
 * it shares no code with chatgate, so a mistake in chatgate's crypto cannot
 * hide behind the same mistake here (`selftest` checks the notes' vectors).
 *
 *   cc -O2 -o feishu_load bench/feishu_load.c -luv -lcrypto -lpthread -lm
 *   ./feishu_load selftest
 *   ./feishu_load closed [options]   CONNS connections, each sends its next
 *                                    callback when the answer is in (like wrk)
 *   ./feishu_load flood  [options]   STEADY chats, one connection each, one
 *                                    callback per chat every INTERVAL ms (open
 *                                    loop: latency from the intended send
 *                                    time), plus FLOOD connections sending one
 *                                    chat at full speed (-f 0: steady alone)
 * options:
 *   -p PORT  -u PATH  -c CONNS  -w WARMUP_S  -d DURATION_S
 *   -p PORT,PORT,...  several servers on 127.0.0.1 (bench/fleet.sh): the
 *                 connections (closed and flood ones, and the steady chats
 *                 separately) are spread over them in turn; all counted together
 *   -n POOL       callbacks precomputed (closed mode, and the flood's pool);
 *                 every one has its own event_id, message_id and nonce
 *   -r            reuse the pool cyclically (for a server that does not
 *                 dedupe, nginx); without -r the run stops when it runs out
 *   -C CHATS      distinct chat ids, cycled (closed mode; default 5000)
 *   -s STEADY -i INTERVAL_MS -f FLOOD   (flood mode; default 100, 100, 4)
 *   -k ENCRYPT_KEY  -t VERIFICATION_TOKEN
 *   -S STATUS_PORT  an nginx stub_status on 127.0.0.1 (GET /nginx_status):
 *                   its request count is read at the window's start and end,
 *                   so the fake open platform's requests in the window are
 *                   reported (the replies chatgate sent)
 *   -L FILE       flood mode: write "message_id send_time_ms" (wall clock)
 *                 of the steady chats' recorded callbacks, for reply latency
 *
 * All precomputation (encryption, signatures, whole HTTP requests) is done
 * before the first connection opens, on two threads, so the load generator
 * spends its run time on sockets only. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

/* ---- crypto, from the protocol notes ---- */

static unsigned char aes_key[32];
static const char *encrypt_key = "bench-encrypt-key";
static const char *verification_token = "bench-verification-token";

static void hex(const unsigned char *in, size_t n, char *out) {
  static const char d[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = d[in[i] >> 4];
    out[2 * i + 1] = d[in[i] & 15];
  }
  out[2 * n] = 0;
}

/* {"encrypt":"<b64(iv || AES-256-CBC(pkcs7(plain)))>"} into out; its length. */
static size_t encrypt_body(const char *plain, size_t plain_len, char *out, size_t cap) {
  unsigned char *buf = malloc(16 + plain_len + 32);
  if (RAND_bytes(buf, 16) != 1) abort();
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  int n1 = 0, n2 = 0;
  if (EVP_EncryptInit_ex(ctx, EVP_aes_256_cbc(), NULL, aes_key, buf) != 1 ||
      EVP_EncryptUpdate(ctx, buf + 16, &n1, (const unsigned char *)plain, (int)plain_len) != 1 ||
      EVP_EncryptFinal_ex(ctx, buf + 16 + n1, &n2) != 1)
    abort();
  EVP_CIPHER_CTX_free(ctx);
  size_t raw = 16 + (size_t)n1 + (size_t)n2;
  size_t need = 12 + 4 * ((raw + 2) / 3) + 2 + 1;
  if (need > cap) abort();
  memcpy(out, "{\"encrypt\":\"", 12);
  int b = EVP_EncodeBlock((unsigned char *)out + 12, buf, (int)raw); /* no newlines */
  memcpy(out + 12 + b, "\"}", 3);
  free(buf);
  return 12 + (size_t)b + 2;
}

/* lowercase hex SHA256(timestamp + nonce + encrypt_key + body) */
static void sign(const char *ts, const char *nonce, const char *key, const char *body,
                 size_t body_len, char out[65]) {
  unsigned char md[32];
  EVP_MD_CTX *s = EVP_MD_CTX_new();
  if (EVP_DigestInit_ex(s, EVP_sha256(), NULL) != 1 || EVP_DigestUpdate(s, ts, strlen(ts)) != 1 ||
      EVP_DigestUpdate(s, nonce, strlen(nonce)) != 1 || EVP_DigestUpdate(s, key, strlen(key)) != 1 ||
      EVP_DigestUpdate(s, body, body_len) != 1 || EVP_DigestFinal_ex(s, md, NULL) != 1)
    abort();
  EVP_MD_CTX_free(s);
  hex(md, 32, out);
}

static int selftest(void) {
  int bad = 0;
  /* Signature vector. */
  char sig[65];
  const char *body = "{\"encrypt\":\"P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk=\"}";
  sign("1700000000", "abc", "test key", body, strlen(body), sig);
  if (strcmp(sig, "0c09d96c2aef2ad08179b3967ea410bbc91dab24ce3aec05af962cf1935844af") != 0) {
    fprintf(stderr, "selftest: signature vector mismatch: %s\n", sig);
    bad = 1;
  }
  /* Decryption vectors: our key derivation and layout, decrypted here. */
  struct { const char *key, *b64, *plain; } v[] = {
      {"test key", "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk=", "hello world"},
      {"mazhe.nerd",
       "tT1xP+ovuc0T3b/rnZX3ax76exqAn0ANQ6/U45GcciC0mgNBc8JtvqOJGNAPMKpgRs2dVU1NYk9VDeqS8T4SYtU0hzN"
       "U54aS84WnxvZ3VFfDcy/RyABlNqlUiGyLDzFI0yxdCMT4KR/YEQXlt6nZi50KwRlZ+A75r645KesZuLMljezYyY8"
       "VeeXEVjPw35+e",
       "{\"challenge\":\"5634b122-c042-4634-bc7f-b07a3c3e77ad\",\"token\":"
       "\"iRdCP2WwXNBXRM3mGLqhrgch3cn0gbT6\",\"type\":\"url_verification\"}"},
  };
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
    unsigned char key[32], raw[1024], out[1024];
    SHA256((const unsigned char *)v[i].key, strlen(v[i].key), key);
    int n = EVP_DecodeBlock(raw, (const unsigned char *)v[i].b64, (int)strlen(v[i].b64));
    size_t l = strlen(v[i].b64);
    while (l > 0 && v[i].b64[l - 1] == '=') n--, l--; /* DecodeBlock counts padding */
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n1 = 0, n2 = 0;
    int ok = EVP_DecryptInit_ex(ctx, EVP_aes_256_cbc(), NULL, key, raw) == 1 &&
             EVP_DecryptUpdate(ctx, out, &n1, raw + 16, n - 16) == 1 &&
             EVP_DecryptFinal_ex(ctx, out + n1, &n2) == 1;
    EVP_CIPHER_CTX_free(ctx);
    if (!ok || (size_t)(n1 + n2) != strlen(v[i].plain) || memcmp(out, v[i].plain, (size_t)(n1 + n2))) {
      fprintf(stderr, "selftest: decryption vector %zu mismatch\n", i);
      bad = 1;
    }
  }
  /* Round trip of our own encryption. */
  SHA256((const unsigned char *)"test key", 8, aes_key);
  char enc[256];
  size_t el = encrypt_body("hello world", 11, enc, sizeof enc);
  unsigned char raw[256], out[256];
  enc[el - 2] = 0;
  int n = EVP_DecodeBlock(raw, (unsigned char *)enc + 12, (int)strlen(enc + 12));
  if (n < 32) bad = 1;
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  int n1 = 0, n2 = 0;
  int ok = EVP_DecryptInit_ex(ctx, EVP_aes_256_cbc(), NULL, aes_key, raw) == 1 &&
           EVP_DecryptUpdate(ctx, out, &n1, raw + 16, 16) == 1 &&
           EVP_DecryptFinal_ex(ctx, out + n1, &n2) == 1;
  EVP_CIPHER_CTX_free(ctx);
  if (!ok || n1 + n2 != 11 || memcmp(out, "hello world", 11) != 0) {
    fprintf(stderr, "selftest: round trip failed\n");
    bad = 1;
  }
  printf("selftest: %s\n", bad ? "FAILED" : "ok (signature vector, 2 decryption vectors, round trip)");
  return bad;
}

/* ---- precomputed requests ---- */

enum { STRIDE = 1536 }; /* the largest request is about 1,250 bytes */

typedef struct pool {
  char *arena;      /* n * STRIDE bytes */
  uint16_t *len;
  size_t n, next;
  int cycle;
  const char *tag;  /* part of the ids: "c" closed, "s" steady, "f" flood */
  int kind;         /* 0: chat i % chats; 1: steady chat i % steady; 2: one flood chat */
  unsigned chats;
} pool_t;

static const char *path = "/webhook/feishu";
static char run_id[17];
static time_t gen_ts;

static void chat_of(const pool_t *p, size_t i, char *out, size_t cap) {
  if (p->kind == 0) snprintf(out, cap, "oc_bench_%05u", (unsigned)(i % p->chats));
  else if (p->kind == 1) snprintf(out, cap, "oc_steady_%03u", (unsigned)(i % p->chats));
  else snprintf(out, cap, "oc_flood");
}

static void message_id_of(const pool_t *p, size_t i, char *out, size_t cap) {
  snprintf(out, cap, "om_%s%s_%zu", p->tag, run_id, i);
}

static void build(pool_t *p, size_t i) {
  char chat[32], mid[64], plain[1400], body[2048], nonce[48], ts[24], sig[65];
  chat_of(p, i, chat, sizeof chat);
  message_id_of(p, i, mid, sizeof mid);
  long long ms = (long long)gen_ts * 1000 + (long long)(i % 1000);
  int pl = snprintf(
      plain, sizeof plain,
      "{\"schema\":\"2.0\",\"header\":{\"event_id\":\"ev_%s%s_%zu\",\"event_type\":"
      "\"im.message.receive_v1\",\"create_time\":\"%lld\",\"token\":\"%s\",\"app_id\":"
      "\"cli_bench\",\"tenant_key\":\"tk_bench\"},\"event\":{\"sender\":{\"sender_id\":{"
      "\"open_id\":\"ou_%s\",\"union_id\":\"on_%s\",\"user_id\":\"u_%s\"},\"sender_type\":"
      "\"user\",\"tenant_key\":\"tk_bench\"},\"message\":{\"message_id\":\"%s\",\"root_id\":"
      "\"\",\"parent_id\":\"\",\"create_time\":\"%lld\",\"update_time\":\"%lld\",\"chat_id\":"
      "\"%s\",\"thread_id\":\"\",\"chat_type\":\"p2p\",\"message_type\":\"text\",\"content\":"
      "\"{\\\"text\\\":\\\"hello from the benchmark\\\"}\",\"mentions\":[],\"user_agent\":"
      "\"bench\"}}}",
      p->tag, run_id, i, ms, verification_token, chat + 3, chat + 3, chat + 3, mid, ms, ms, chat);
  if (pl <= 0 || (size_t)pl >= sizeof plain) abort();
  size_t bl = encrypt_body(plain, (size_t)pl, body, sizeof body);
  snprintf(ts, sizeof ts, "%lld", (long long)gen_ts);
  snprintf(nonce, sizeof nonce, "n%s%s%zu", p->tag, run_id, i);
  sign(ts, nonce, encrypt_key, body, bl, sig);
  char *out = p->arena + i * STRIDE;
  int hl = snprintf(out, STRIDE,
                    "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json; "
                    "charset=utf-8\r\nX-Lark-Request-Timestamp: %s\r\nX-Lark-Request-Nonce: "
                    "%s\r\nX-Lark-Signature: %s\r\nContent-Length: %zu\r\n\r\n",
                    path, ts, nonce, sig, bl);
  if (hl <= 0 || (size_t)hl + bl > STRIDE) abort();
  memcpy(out + hl, body, bl);
  p->len[i] = (uint16_t)(hl + bl);
}

typedef struct { pool_t *p; size_t from, to; } gen_job_t;
static void *gen_thread(void *arg) {
  gen_job_t *j = arg;
  for (size_t i = j->from; i < j->to; i++) build(j->p, i);
  return NULL;
}

static void pool_make(pool_t *p, size_t n, int kind, unsigned chats, const char *tag, int cycle) {
  p->n = n;
  p->kind = kind;
  p->chats = chats ? chats : 1;
  p->tag = tag;
  p->cycle = cycle;
  p->arena = malloc(n * STRIDE);
  p->len = malloc(n * sizeof *p->len);
  if (!p->arena || !p->len) { fprintf(stderr, "feishu_load: out of memory for %zu\n", n); exit(1); }
  pthread_t t[2];
  gen_job_t j[2] = {{p, 0, n / 2}, {p, n / 2, n}};
  for (int k = 0; k < 2; k++) pthread_create(&t[k], NULL, gen_thread, &j[k]);
  for (int k = 0; k < 2; k++) pthread_join(t[k], NULL);
}

/* ---- connections ---- */

typedef struct conn {
  uv_tcp_t tcp;
  uv_connect_t connect;
  uv_write_t write;
  uv_timer_t timer;     /* steady: the chat's tick */
  char buf[16384];
  size_t len;
  int steady;           /* 1: a steady chat's connection */
  int busy;             /* a request is in flight */
  size_t cur;           /* pool index in flight */
  uint64_t sent_ns;     /* closed: actual send; steady: intended send */
  uint64_t due[256];    /* steady: intended times not yet sent (ring) */
  unsigned due_head, due_len;
  unsigned ticks;       /* steady: callbacks sent by this chat */
  unsigned idx;         /* steady: the chat's number */
  unsigned server;      /* index into addrs */
} conn_t;

static uv_loop_t *loop;
enum { MAX_PORTS = 16 };
static struct sockaddr_in addrs[MAX_PORTS];
static unsigned n_addrs;
static pool_t main_pool, steady_pool;
static unsigned steady_n = 100, interval_ms = 100;
static uint64_t record_from_ns, record_until_ns, started_ns, exhausted_ns;
static int stopping;
static FILE *sendlog;

typedef struct stats {
  double *lat;
  size_t len, cap;
  size_t ok, non2xx, errors; /* in the window */
  size_t all_ok, all_non2xx; /* whole run */
} stats_t;
static stats_t closed_st, steady_st, flood_st;

static void lat_push(stats_t *s, double ms) {
  if (s->len == s->cap) {
    s->cap = s->cap ? s->cap * 2 : 65536;
    s->lat = realloc(s->lat, s->cap * sizeof *s->lat);
    if (!s->lat) abort();
  }
  s->lat[s->len++] = ms;
}

static void send_next(conn_t *c);

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
  conn_t *c = h->data;
  (void)suggested;
  b->base = c->buf + c->len;
  b->len = sizeof c->buf - c->len;
}

static stats_t *stats_of(conn_t *c) {
  return c->steady ? &steady_st : (main_pool.kind == 2 ? &flood_st : &closed_st);
}

/* One complete answer at the front of buf: 1 (2xx), 2 (other), 0 (not yet). */
static int answer_done(conn_t *c) {
  char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
  if (end == NULL) return 0;
  size_t head = (size_t)(end - c->buf) + 4, body = 0;
  for (char *p = c->buf; p < end; p++)
    if ((p == c->buf || p[-1] == '\n') && strncasecmp(p, "Content-Length:", 15) == 0)
      body = strtoul(p + 15, NULL, 10);
  if (c->len < head + body) return 0;
  int ok = c->len > 9 && c->buf[9] == '2';
  memmove(c->buf, c->buf + head + body, c->len - head - body);
  c->len -= head + body;
  return ok ? 1 : 2;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  conn_t *c = s->data;
  (void)b;
  if (n < 0) {
    stats_of(c)->errors++;
    if (!uv_is_closing((uv_handle_t *)s)) uv_close((uv_handle_t *)s, NULL);
    return;
  }
  c->len += (size_t)n;
  int r;
  while ((r = answer_done(c)) != 0) {
    uint64_t now = uv_hrtime();
    stats_t *st = stats_of(c);
    c->busy = 0;
    if (r == 1) st->all_ok++; else st->all_non2xx++;
    if (c->sent_ns >= record_from_ns && now <= record_until_ns) {
      lat_push(st, (double)(now - c->sent_ns) / 1e6);
      if (r == 1) st->ok++; else st->non2xx++;
    }
    if (stopping) continue;
    if (!c->steady) send_next(c);
    else if (c->due_len > 0) send_next(c);
  }
}

static void on_written(uv_write_t *w, int status) {
  conn_t *c = w->data;
  if (status < 0) stats_of(c)->errors++;
}

static void send_next(conn_t *c) {
  pool_t *p;
  size_t i;
  if (c->steady) {
    p = &steady_pool;
    i = (size_t)c->ticks * steady_n + c->idx;
    if (i >= p->n) { c->due_len = 0; return; }
    c->ticks++;
    c->sent_ns = c->due[c->due_head];
    c->due_head = (c->due_head + 1) % 256;
    c->due_len--;
    if (sendlog && c->sent_ns >= record_from_ns && c->sent_ns < record_until_ns) {
      char mid[64];
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      /* wall-clock intended time = now - (hrtime now - intended) */
      double lag_ms = (double)(uv_hrtime() - c->sent_ns) / 1e6;
      message_id_of(p, i, mid, sizeof mid);
      fprintf(sendlog, "%s %.3f\n", mid, (double)ts.tv_sec * 1e3 + ts.tv_nsec / 1e6 - lag_ms);
    }
  } else {
    p = &main_pool;
    if (p->next >= p->n) {
      if (!p->cycle) {
        if (!exhausted_ns) exhausted_ns = uv_hrtime();
        return;
      }
      p->next = 0;
    }
    i = p->next++;
    c->sent_ns = uv_hrtime();
  }
  c->cur = i;
  c->busy = 1;
  uv_buf_t buf = uv_buf_init(p->arena + i * STRIDE, p->len[i]);
  c->write.data = c;
  if (uv_write(&c->write, (uv_stream_t *)&c->tcp, &buf, 1, on_written) != 0) stats_of(c)->errors++;
}

static void on_tick(uv_timer_t *t) {
  conn_t *c = t->data;
  if (stopping) return;
  if (c->due_len == 256) { stats_of(c)->errors++; return; } /* hopelessly behind */
  c->due[(c->due_head + c->due_len) % 256] = uv_hrtime();
  c->due_len++;
  if (!c->busy) send_next(c);
}

static void on_connect(uv_connect_t *req, int status) {
  conn_t *c = req->data;
  if (status < 0) {
    fprintf(stderr, "feishu_load: connect: %s\n", uv_strerror(status));
    stats_of(c)->errors++;
    return;
  }
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  if (c->steady) {
    /* Spread the chats' ticks over the interval. */
    uv_timer_start(&c->timer, on_tick, 1 + (uint64_t)c->idx * interval_ms / steady_n, interval_ms);
  } else {
    send_next(c);
  }
}

static void conn_open(conn_t *c) {
  uv_tcp_init(loop, &c->tcp);
  c->tcp.data = c;
  c->connect.data = c;
  uv_timer_init(loop, &c->timer);
  c->timer.data = c;
  uv_tcp_nodelay(&c->tcp, 1);
  uv_tcp_connect(&c->connect, &c->tcp, (const struct sockaddr *)&addrs[c->server], on_connect);
}

/* ---- nginx stub_status ---- */

static int status_port;
static long long status_at_start = -1, status_at_end = -1;
static uint64_t status_start_ns, status_end_ns;

static long long read_status(void) {
  if (!status_port) return -1;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)status_port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  struct timeval tv = {2, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) { close(fd); return -1; }
  const char *rq = "GET /nginx_status HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (write(fd, rq, strlen(rq)) < 0) { close(fd); return -1; }
  char buf[2048];
  size_t len = 0;
  ssize_t n;
  while (len < sizeof buf - 1 && (n = read(fd, buf + len, sizeof buf - 1 - len)) > 0) len += (size_t)n;
  close(fd);
  buf[len] = 0;
  /* "server accepts handled requests\n A B C" */
  char *p = strstr(buf, "requests\n");
  long long acc, han, req;
  if (!p || sscanf(p + 9, "%lld %lld %lld", &acc, &han, &req) != 3) return -1;
  return req;
}

static void on_window_start(uv_timer_t *t) {
  (void)t;
  status_start_ns = uv_hrtime();
  status_at_start = read_status();
}

static void on_end(uv_timer_t *t) {
  status_end_ns = uv_hrtime();
  status_at_end = read_status();
  stopping = 1;
  uv_stop(t->loop);
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void report(const char *name, stats_t *s, double window_s) {
  qsort(s->lat, s->len, sizeof *s->lat, cmp);
#define PCT(p) (s->len ? s->lat[(size_t)((double)(s->len - 1) * (p))] : 0.0)
  printf("%s: acks %zu in %.2f s: %.0f acks/s (2xx %zu, other %zu, socket errors %zu; whole run 2xx %zu, "
         "other %zu)\n",
         name, s->ok + s->non2xx, window_s, (double)s->ok / window_s, s->ok, s->non2xx, s->errors,
         s->all_ok, s->all_non2xx);
  printf("%s: latency ms p50 %.3f p90 %.3f p99 %.3f p99.9 %.3f max %.3f\n", name, PCT(0.50), PCT(0.90),
         PCT(0.99), PCT(0.999), s->len ? s->lat[s->len - 1] : 0.0);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: feishu_load selftest|closed|flood [options] (see the source)\n");
    return 2;
  }
  const char *mode = argv[1];
  if (strcmp(mode, "selftest") == 0) return selftest();
  int conns = 64, cycle = 0;
  const char *ports = NULL;
  unsigned chats = 5000, flood = 4;
  double warmup = 3, duration = 10;
  size_t pool_n = 200000;
  const char *sendlog_path = NULL;
  int opt;
  optind = 2;
  while ((opt = getopt(argc, argv, "p:u:c:w:d:n:rC:s:i:f:k:t:S:L:")) != -1) {
    switch (opt) {
      case 'p': ports = optarg; break;
      case 'u': path = optarg; break;
      case 'c': conns = atoi(optarg); break;
      case 'w': warmup = atof(optarg); break;
      case 'd': duration = atof(optarg); break;
      case 'n': pool_n = strtoull(optarg, NULL, 10); break;
      case 'r': cycle = 1; break;
      case 'C': chats = (unsigned)atoi(optarg); break;
      case 's': steady_n = (unsigned)atoi(optarg); break;
      case 'i': interval_ms = (unsigned)atoi(optarg); break;
      case 'f': flood = (unsigned)atoi(optarg); break;
      case 'k': encrypt_key = optarg; break;
      case 't': verification_token = optarg; break;
      case 'S': status_port = atoi(optarg); break;
      case 'L': sendlog_path = optarg; break;
      default: return 2;
    }
  }
  for (const char *q = ports; q && *q;) {
    int port = atoi(q);
    if (port <= 0 || port > 65535 || n_addrs == MAX_PORTS) {
      fprintf(stderr, "feishu_load: -p PORT[,PORT...] (at most %d)\n", MAX_PORTS);
      return 2;
    }
    uv_ip4_addr("127.0.0.1", port, &addrs[n_addrs++]);
    q = strchr(q, ',');
    if (q) q++;
  }
  if (n_addrs == 0) { fprintf(stderr, "feishu_load: -p PORT\n"); return 2; }
  int is_flood = strcmp(mode, "flood") == 0;
  if (!is_flood && strcmp(mode, "closed") != 0) { fprintf(stderr, "feishu_load: mode?\n"); return 2; }
  if (steady_n < 1 || steady_n > 10000 || interval_ms < 1 || duration <= 0 || duration > 600 ||
      warmup < 0 || warmup > 600 || conns < 1 || conns > 10000 || flood > 1000) {
    fprintf(stderr, "feishu_load: option out of range\n");
    return 2;
  }
  unsigned char rnd[8];
  RAND_bytes(rnd, sizeof rnd);
  hex(rnd, sizeof rnd, run_id);
  SHA256((const unsigned char *)encrypt_key, strlen(encrypt_key), aes_key);
  gen_ts = time(NULL);

  uint64_t t0 = uv_hrtime();
  if (is_flood) {
    size_t per_chat = (size_t)((warmup + duration) * 1000.0 / interval_ms) + 16;
    pool_make(&steady_pool, per_chat * steady_n, 1, steady_n, "s", 0);
    if (flood > 0) pool_make(&main_pool, pool_n, 2, 1, "f", cycle);
    else main_pool.kind = 2;
  } else {
    pool_make(&main_pool, pool_n, 0, chats, "c", cycle);
  }
  size_t maxlen = 0;
  for (size_t i = 0; i < main_pool.n; i++) maxlen = main_pool.len[i] > maxlen ? main_pool.len[i] : maxlen;
  for (size_t i = 0; i < steady_pool.n; i++) maxlen = steady_pool.len[i] > maxlen ? steady_pool.len[i] : maxlen;
  fprintf(stderr, "feishu_load: %zu + %zu callbacks precomputed in %.1f s (largest request %zu bytes)\n",
          main_pool.n, steady_pool.n, (double)(uv_hrtime() - t0) / 1e9, maxlen);
  if (sendlog_path && is_flood) sendlog = fopen(sendlog_path, "w");

  loop = uv_default_loop();
  started_ns = uv_hrtime();
  record_from_ns = started_ns + (uint64_t)(warmup * 1e9);
  record_until_ns = record_from_ns + (uint64_t)(duration * 1e9);
  unsigned n_closed = is_flood ? flood : (unsigned)conns;
  unsigned n_steady = is_flood ? steady_n : 0;
  conn_t *cs = calloc(n_closed + n_steady, sizeof *cs);
  for (unsigned i = 0; i < n_closed + n_steady; i++) {
    cs[i].steady = i >= n_closed;
    cs[i].idx = i - (cs[i].steady ? n_closed : 0);
    cs[i].server = cs[i].idx % n_addrs;
    conn_open(&cs[i]);
  }
  uv_timer_t start_t, end_t;
  uv_timer_init(loop, &start_t);
  uv_timer_init(loop, &end_t);
  uv_timer_start(&start_t, on_window_start, (uint64_t)(warmup * 1000), 0);
  uv_timer_start(&end_t, on_end, (uint64_t)((warmup + duration) * 1000) + 1, 0);
  uv_run(loop, UV_RUN_DEFAULT);

  double window_s = duration;
  if (exhausted_ns && exhausted_ns < record_until_ns) {
    if (exhausted_ns <= record_from_ns) {
      printf("POOL EXHAUSTED before the window: raise -n\n");
      window_s = 0.001;
    } else {
      window_s = (double)(exhausted_ns - record_from_ns) / 1e9;
      printf("pool exhausted %.2f s into the window: figures over that part (raise -n)\n", window_s);
    }
  }
  if (is_flood) {
    report("steady", &steady_st, duration);
    if (flood > 0) report("flood", &flood_st, window_s);
  } else {
    report("closed", &closed_st, window_s);
  }
  if (status_at_start >= 0 && status_at_end >= 0) {
    double s = (double)(status_end_ns - status_start_ns) / 1e9;
    long long n = status_at_end - status_at_start - 1; /* the first status request itself */
    printf("platform: %lld requests in %.2f s: %.0f replies/s\n", n, s, (double)n / s);
  }
  if (sendlog) fclose(sendlog);
  return 0;
}
