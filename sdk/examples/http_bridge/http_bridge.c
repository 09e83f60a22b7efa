/* http_bridge: an example channel plugin, built out of tree against the
 * installed SDK (chatgate-dev). It bridges any system that can make and
 * take plain HTTP requests:
 *
 *   in:  POST /webhook/<instance>?conversation=C&user=U&id=M   body: the text
 *        (header X-Bridge-Token must equal the `token` config key when set)
 *        -> 202, and the message goes to the router
 *   out: POST <callbackUrl>   body: the answer text, headers
 *        X-Conversation-Id: C, X-In-Reply-To: M
 *
 * Plain C and the SDK only: the host does HTTP in both directions (routes,
 * http_request from ABI 1.1). Read docs/plugin-guide.md alongside. */
#include <chatgate/chatgate.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct {
  const cg_host_api_t *api;
  cg_host_t *host;
  cg_str_t callback_url; /* the host's, valid until destroy */
  cg_str_t token;
  char route[160];
  int in_flight;         /* replies on their way to the callback URL */
  cg_done_cb stop_done;  /* set once stop began */
  void *stop_arg;
} bridge_t;

/* One reply on its way to the callback URL. */
typedef struct {
  bridge_t *b;
  cg_done_cb done;
  void *arg;
} pending_t;

static void respond(bridge_t *b, cg_http_exchange_t *ex, int status, const char *text) {
  cg_http_header_t ct = {cg_str("Content-Type"), cg_str("text/plain; charset=utf-8")};
  b->api->http_respond(b->host, ex, status, &ct, 1, cg_str(text));
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* The percent-decoded value of `key` in a query string, into out[cap]. */
static size_t query_get(cg_str_t query, const char *key, char *out, size_t cap) {
  size_t klen = strlen(key), i = 0;
  while (i < query.len) {
    size_t end = i;
    while (end < query.len && query.ptr[end] != '&') end++;
    if (end - i > klen && memcmp(query.ptr + i, key, klen) == 0 && query.ptr[i + klen] == '=') {
      size_t n = 0;
      for (size_t j = i + klen + 1; j < end && n + 1 < cap; j++) {
        char c = query.ptr[j];
        if (c == '%' && j + 2 < end && hexval(query.ptr[j + 1]) >= 0 &&
            hexval(query.ptr[j + 2]) >= 0) {
          c = (char)(hexval(query.ptr[j + 1]) * 16 + hexval(query.ptr[j + 2]));
          j += 2;
        } else if (c == '+') {
          c = ' ';
        }
        out[n++] = c;
      }
      out[n] = '\0';
      return n;
    }
    i = end + 1;
  }
  out[0] = '\0';
  return 0;
}

static cg_str_t header(const cg_http_request_t *req, const char *name) {
  for (uint32_t i = 0; i < req->header_count; i++) {
    cg_str_t n = req->headers[i].name;
    if (n.len == strlen(name) && strncasecmp(n.ptr, name, n.len) == 0) return req->headers[i].value;
  }
  return cg_str("");
}

/* Compares in time that depends only on the lengths. */
static int same_secret(cg_str_t a, cg_str_t b) {
  unsigned char diff = a.len == b.len ? 0 : 1;
  for (size_t i = 0; i < a.len && i < b.len; i++) diff |= (unsigned char)(a.ptr[i] ^ b.ptr[i]);
  return diff == 0;
}

static void on_message(void *arg, cg_http_exchange_t *ex, const cg_http_request_t *req) {
  bridge_t *b = arg;
  if (b->token.len > 0 && !same_secret(header(req, "X-Bridge-Token"), b->token)) {
    b->api->log(b->host, CG_LOG_WARN, cg_str("refused a message: wrong or missing X-Bridge-Token"));
    respond(b, ex, 401, "wrong or missing X-Bridge-Token\n");
    return;
  }
  char conversation[256], user[256], id[256];
  query_get(req->query, "conversation", conversation, sizeof conversation);
  query_get(req->query, "user", user, sizeof user);
  query_get(req->query, "id", id, sizeof id);
  if (conversation[0] == '\0' || user[0] == '\0' || req->body.len == 0) {
    respond(b, ex, 400, "need ?conversation=..&user=.. and the text as the body\n");
    return;
  }
  cg_message_t m;
  memset(&m, 0, sizeof m);
  m.struct_size = sizeof m;
  m.conversation_type = CG_CONV_DIRECT;
  m.id = cg_str(id);
  m.conversation_id = cg_str(conversation);
  m.sender_id = cg_str(user);
  m.text = req->body;
  m.reply_token = cg_str(id);
  int rc = b->api->emit_message(b->host, &m);
  if (rc == CG_EBUSY) {
    respond(b, ex, 503, "busy, retry\n");
  } else if (rc != 0) {
    respond(b, ex, 400, cg_strerror(rc));
  } else {
    respond(b, ex, 202, "accepted\n");
  }
}

static void on_delivered(void *arg, int result, const cg_http_client_response_t *resp) {
  pending_t *p = arg;
  bridge_t *b = p->b;
  int ok = result == 0 && resp->status >= 200 && resp->status < 300;
  p->done(p->arg, ok ? 0 : (result != 0 ? result : CG_EIO));
  free(p);
  /* A stop waits for the last reply (the host cancels what is left). */
  if (--b->in_flight == 0 && b->stop_done != NULL) {
    cg_done_cb done = b->stop_done;
    b->stop_done = NULL;
    done(b->stop_arg, 0);
  }
}

static int bridge_send(void *state, const cg_reply_t *reply, cg_done_cb done, void *arg) {
  bridge_t *b = state;
  if (!(reply->flags & CG_REPLY_FINAL)) return CG_ENOTSUP; /* not a streaming channel */
  pending_t *p = malloc(sizeof *p);
  if (p == NULL) return CG_ENOMEM;
  p->b = b;
  p->done = done;
  p->arg = arg;
  cg_http_header_t headers[3] = {
      {cg_str("Content-Type"), cg_str("text/plain; charset=utf-8")},
      {cg_str("X-Conversation-Id"), reply->conversation_id},
      {cg_str("X-In-Reply-To"), reply->in_reply_to},
  };
  cg_http_client_request_t req;
  memset(&req, 0, sizeof req);
  req.struct_size = sizeof req;
  req.method = cg_str("POST");
  req.url = b->callback_url;
  req.headers = headers;
  req.header_count = 3;
  req.body = reply->text;
  /* The host copies the request; on_delivered fires later, never inside. */
  int rc = b->api->http_request(b->host, &req, NULL, on_delivered, p, NULL);
  if (rc != 0) {
    free(p);
    return rc;
  }
  b->in_flight++;
  return 0;
}

static int bridge_init(const cg_host_api_t *api, cg_host_t *host, const cg_config_t *config,
                       void **state) {
  if (api->abi_minor < 1) {
    api->set_error(host, cg_str("http_bridge needs a host with plugin ABI 1.1 (http_request)"));
    return CG_ENOTSUP;
  }
  bridge_t *b = calloc(1, sizeof *b);
  if (b == NULL) return CG_ENOMEM;
  b->api = api;
  b->host = host;
  api->config_string(config, "callbackUrl", &b->callback_url);
  if (api->config_string(config, "token", &b->token) != 0) b->token = cg_str("");
  cg_str_t name = api->instance_name(host);
  snprintf(b->route, sizeof b->route, "/webhook/%.*s", (int)name.len, name.ptr);
  *state = b;
  return 0;
}

static int bridge_start(void *state) {
  bridge_t *b = state;
  return b->api->http_route_add(b->host, cg_str("POST"), cg_str(b->route), 0, on_message, b);
}

static void bridge_stop(void *state, cg_done_cb done, void *arg) {
  bridge_t *b = state;
  if (b->in_flight == 0) {
    done(arg, 0);
    return;
  }
  /* The last reply in flight calls done (on_delivered). */
  b->stop_done = done;
  b->stop_arg = arg;
}

static void bridge_destroy(void *state) { free(state); }

/* Designated: a member a later SDK appends (quiesce, 1.7) starts as NULL
 * without a missing-initializer warning. */
static const cg_channel_ops_t bridge_ops = {.struct_size = sizeof(cg_channel_ops_t),
                                            .send = bridge_send};

static const cg_config_field_t bridge_fields[] = {
    {sizeof(cg_config_field_t), CG_CFG_STRING, CG_CFG_REQUIRED, "callbackUrl", NULL,
     "where answers are POSTed (http:// or https://)", NULL, 0, 0},
    {sizeof(cg_config_field_t), CG_CFG_STRING, CG_CFG_SECRET, "token", NULL,
     "a shared secret senders put in X-Bridge-Token; unset: no check", NULL, 0, 0},
};

static const cg_plugin_t bridge_plugin = {
    sizeof(cg_plugin_t),
    CG_ABI_MAJOR,
    1, /* needs http_request: a host of ABI 1.1 or newer */
    CG_KIND_CHANNEL,
    "http_bridge",
    "1.0.0",
    "example channel: plain HTTP in, answers POSTed to a callback URL",
    0,
    bridge_fields,
    sizeof(bridge_fields) / sizeof(bridge_fields[0]),
    0,
    bridge_init,
    bridge_start,
    bridge_stop,
    bridge_destroy,
    &bridge_ops,
};

CG_EXPORT const cg_plugin_t *cg_plugin_entry(uint32_t host_major, uint32_t host_minor) {
  if (host_major != CG_ABI_MAJOR || host_minor < 1) return NULL; /* decline cleanly */
  return &bridge_plugin;
}
