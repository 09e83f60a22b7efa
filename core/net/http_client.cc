#include "net/http_client.h"

#include <dlfcn.h>
#include <spdlog/spdlog.h>

#include <chatgate/cpp.hpp>
#include <cstdio>
#include <mutex>
#include <string_view>
#include <utility>
#include <vector>

#include "base/loop.h"

namespace cg {
namespace {

constexpr auto sv = chatgate::view;
constexpr auto cs = chatgate::str;

// libcurl is loaded with dlopen on first use rather than linked: its
// dependency chain (OpenSSL, GnuTLS through librtmp, LDAP, Kerberos, ...)
// costs every process start some 16 ms on this class of machine, and a
// gateway whose plugins never call out should not pay that.
constexpr const char *kLibcurl = "libcurl.so.4";

struct CurlApi {
  CURLcode (*global_init)(long flags);
  CURLM *(*multi_init)();
  CURLMcode (*multi_setopt)(CURLM *, CURLMoption, ...);
  CURLMcode (*multi_add_handle)(CURLM *, CURL *);
  CURLMcode (*multi_remove_handle)(CURLM *, CURL *);
  CURLMcode (*multi_socket_action)(CURLM *, curl_socket_t, int, int *);
  CURLMsg *(*multi_info_read)(CURLM *, int *);
  CURLMcode (*multi_assign)(CURLM *, curl_socket_t, void *);
  CURLMcode (*multi_cleanup)(CURLM *);
  CURL *(*easy_init)();
  CURLcode (*easy_setopt)(CURL *, CURLoption, ...);
  CURLcode (*easy_getinfo)(CURL *, CURLINFO, ...);
  void (*easy_cleanup)(CURL *);
  void (*easy_reset)(CURL *);
  const char *(*easy_strerror)(CURLcode);
  curl_slist *(*slist_append)(curl_slist *, const char *);
  void (*slist_free_all)(curl_slist *);
};
CurlApi g_curl{};
std::string g_curl_error;  // why libcurl could not be loaded, or empty

template <typename Fn>
bool bind(void *lib, const char *name, Fn *out) {
  *out = reinterpret_cast<Fn>(dlsym(lib, name));
  if (*out == nullptr) g_curl_error = std::string("libcurl lacks ") + name;
  return *out != nullptr;
}

bool load_curl() {
  void *lib = dlopen(kLibcurl, RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char *why = dlerror();
    g_curl_error = std::string("cannot load ") + kLibcurl + ": " + (why ? why : "unknown error");
    return false;
  }
  // Never dlclosed: curl keeps threads and OpenSSL state for the process.
  CurlApi &c = g_curl;
  const bool ok = bind(lib, "curl_global_init", &c.global_init) &&
                  bind(lib, "curl_multi_init", &c.multi_init) &&
                  bind(lib, "curl_multi_setopt", &c.multi_setopt) &&
                  bind(lib, "curl_multi_add_handle", &c.multi_add_handle) &&
                  bind(lib, "curl_multi_remove_handle", &c.multi_remove_handle) &&
                  bind(lib, "curl_multi_socket_action", &c.multi_socket_action) &&
                  bind(lib, "curl_multi_info_read", &c.multi_info_read) &&
                  bind(lib, "curl_multi_assign", &c.multi_assign) &&
                  bind(lib, "curl_multi_cleanup", &c.multi_cleanup) &&
                  bind(lib, "curl_easy_init", &c.easy_init) &&
                  bind(lib, "curl_easy_setopt", &c.easy_setopt) &&
                  bind(lib, "curl_easy_getinfo", &c.easy_getinfo) &&
                  bind(lib, "curl_easy_cleanup", &c.easy_cleanup) &&
                  bind(lib, "curl_easy_reset", &c.easy_reset) &&
                  bind(lib, "curl_easy_strerror", &c.easy_strerror) &&
                  bind(lib, "curl_slist_append", &c.slist_append) &&
                  bind(lib, "curl_slist_free_all", &c.slist_free_all);
  if (!ok) return false;
  if (c.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    g_curl_error = "curl_global_init failed";
    return false;
  }
  return true;
}

std::once_flag g_curl_once;
bool g_curl_loaded = false;
constexpr long kReceiveBufferBytes = 2048;

bool has_crlf(std::string_view s) { return s.find_first_of("\r\n") != std::string_view::npos; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) {
    s.remove_suffix(1);
  }
  return s;
}

}  // namespace

struct HttpClient::Shard {
  HttpClient *client = nullptr;
  CURLM *multi = nullptr;
  uv_timer_t timer{};
  size_t active = 0;  // transfers in this multi handle
};

struct HttpClient::Poll {
  uv_poll_t handle{};
  Shard *shard = nullptr;
  curl_socket_t fd = CURL_SOCKET_BAD;
};

struct HttpClient::Transfer {
  HttpClient *client = nullptr;
  Shard *shard = nullptr;  // set while added to its multi handle
  CURL *easy = nullptr;
  curl_slist *header_list = nullptr;
  uint64_t id = 0;
  std::string url, method, body;  // curl reads these while the transfer runs
  cg_http_data_cb on_data = nullptr;
  cg_http_done_cb done = nullptr;
  void *arg = nullptr;
  std::string resp_body;
  size_t received = 0;
  std::vector<std::pair<std::string, std::string>> resp_headers;
  char errbuf[CURL_ERROR_SIZE] = {};
  bool added = false;       // in the multi handle
  bool cancelled = false;   // http_cancel or shutdown: done gets CG_ECANCELED
  bool data_abort = false;  // on_data asked to stop
  bool too_big = false;

  ~Transfer() {
    if (easy != nullptr) client->recycle_easy(easy);
    g_curl.slist_free_all(header_list);
  }

  static size_t on_header(char *data, size_t size, size_t n, void *userp) {
    auto *t = static_cast<Transfer *>(userp);
    const std::string_view line(data, size * n);
    // A new status line (after a 100 Continue, say) starts a new header set.
    if (line.starts_with("HTTP/")) {
      t->resp_headers.clear();
      return line.size();
    }
    const size_t colon = line.find(':');
    if (colon != std::string_view::npos) {
      t->resp_headers.emplace_back(std::string(trim(line.substr(0, colon))),
                                   std::string(trim(line.substr(colon + 1))));
    }
    return line.size();
  }

  static size_t on_body(char *data, size_t size, size_t n, void *userp) {
    auto *t = static_cast<Transfer *>(userp);
    const size_t len = size * n;
    // Returning less than len makes curl end the transfer with an error.
    if (t->cancelled) return 0;
    t->received += len;
    if (t->received > t->client->config_.max_response_bytes) {
      t->too_big = true;
      return 0;
    }
    if (t->on_data == nullptr) {
      t->resp_body.append(data, len);
      return len;
    }
    long status = 0;
    g_curl.easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
    if (t->on_data(t->arg, static_cast<int32_t>(status), cg_str_t{data, len}) != 0) {
      t->data_abort = true;
      return 0;
    }
    return t->cancelled ? 0 : len;
  }
};

HttpClient::HttpClient(Loop &loop, HttpClientConfig config)
    : loop_(loop), config_(std::move(config)) {}

void HttpClient::ensure_started() {
  if (!shards_.empty() || closing_) return;
  // curl's global init loads and configures OpenSSL: some ten milliseconds
  // and megabytes that a gateway whose plugins never call out should not
  // pay. Not thread-safe in curl; the loop thread is the only caller.
  std::call_once(g_curl_once, [] { g_curl_loaded = load_curl(); });
  if (!g_curl_loaded) {
    if (!load_error_logged_) {
      spdlog::error("http client unavailable: {}; outbound requests fail", g_curl_error);
      load_error_logged_ = true;
    }
    return;
  }
  for (size_t i = 0; i < kShards; ++i) {
    auto shard = std::make_unique<Shard>();
    shard->client = this;
    shard->multi = g_curl.multi_init();
    if (shard->multi == nullptr) break;
    g_curl.multi_setopt(shard->multi, CURLMOPT_SOCKETFUNCTION, &HttpClient::on_socket);
    g_curl.multi_setopt(shard->multi, CURLMOPT_SOCKETDATA, shard.get());
    g_curl.multi_setopt(shard->multi, CURLMOPT_TIMERFUNCTION, &HttpClient::on_timer);
    g_curl.multi_setopt(shard->multi, CURLMOPT_TIMERDATA, shard.get());
    uv_timer_init(loop_.uv(), &shard->timer);
    shard->timer.data = shard.get();
    shards_.push_back(std::move(shard));
  }
}

// The least busy multi handle, the first on a tie: one request at a time
// always takes the first, so it keeps reusing one connection (one HTTP/2
// connection carries everything), while a thousand spread over all.
HttpClient::Shard *HttpClient::pick_shard() {
  Shard *best = shards_.front().get();
  for (const auto &s : shards_) {
    if (s->active < best->active) best = s.get();
  }
  return best;
}

HttpClient::~HttpClient() {
  if (shards_.empty()) return;
  // close() was skipped or its cleanup never ran: end everything here. The
  // handles' close callbacks need one more loop run to free their memory.
  spdlog::error("http client destroyed before close() completed; cleaning up now");
  closing_ = true;
  on_cleanup(this);
}

int HttpClient::request(const cg_http_client_request_t &req, cg_http_data_cb on_data,
                        cg_http_done_cb done, void *arg, uint64_t *request_id) {
  if (closing_) return CG_ECLOSED;
  if (done == nullptr || req.url.len == 0 || req.method.len == 0) return CG_EINVAL;
  ensure_started();
  if (shards_.empty()) return CG_EUNAVAIL;
  const std::string_view url = sv(req.url);
  if (!url.starts_with("http://") && !url.starts_with("https://")) return CG_EINVAL;
  if (has_crlf(url) || has_crlf(sv(req.method))) return CG_EINVAL;
  if (req.header_count > 0 && req.headers == nullptr) return CG_EINVAL;

  auto t = std::make_unique<Transfer>();
  t->client = this;
  t->id = next_id_++;
  t->url.assign(url);
  t->method.assign(sv(req.method));
  t->body.assign(sv(req.body));
  t->on_data = on_data;
  t->done = done;
  t->arg = arg;
  for (uint32_t i = 0; i < req.header_count; i++) {
    const std::string_view name = sv(req.headers[i].name);
    const std::string_view value = sv(req.headers[i].value);
    // A CR or LF would let a value smuggle in another header.
    if (name.empty() || has_crlf(name) || has_crlf(value) ||
        name.find(':') != std::string_view::npos) {
      return CG_EINVAL;
    }
    std::string line;
    line.reserve(name.size() + value.size() + 2);
    line.append(name).append(": ").append(value);
    curl_slist *next = g_curl.slist_append(t->header_list, line.c_str());
    if (next == nullptr) return CG_ENOMEM;
    t->header_list = next;
  }
  // curl sends "Expect: 100-continue" for large bodies and then waits for
  // an answer many servers never send: turn it off.
  if (curl_slist *next = g_curl.slist_append(t->header_list, "Expect:")) t->header_list = next;

  CURL *e = t->easy = take_easy();
  if (e == nullptr) return CG_ENOMEM;
  const uint64_t timeout = req.timeout_ms != 0 ? req.timeout_ms : config_.timeout_ms;
  const uint64_t connect_timeout =
      req.connect_timeout_ms != 0 ? req.connect_timeout_ms : config_.connect_timeout_ms;
  g_curl.easy_setopt(e, CURLOPT_URL, t->url.c_str());
  g_curl.easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  g_curl.easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  g_curl.easy_setopt(e, CURLOPT_PRIVATE, t.get());
  g_curl.easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
  g_curl.easy_setopt(e, CURLOPT_HTTPHEADER, t->header_list);
  g_curl.easy_setopt(e, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout));
  g_curl.easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(connect_timeout));
  g_curl.easy_setopt(e, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_2TLS));
  g_curl.easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  // curl's receive buffer is per transfer: 16 KiB by default. Model answers
  // and platform APIs send a few KiB at a time, and at a thousand requests
  // in flight the buffers are most of the memory.
  g_curl.easy_setopt(e, CURLOPT_BUFFERSIZE, kReceiveBufferBytes);
  g_curl.easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
  g_curl.easy_setopt(e, CURLOPT_HEADERFUNCTION, &Transfer::on_header);
  g_curl.easy_setopt(e, CURLOPT_HEADERDATA, t.get());
  g_curl.easy_setopt(e, CURLOPT_WRITEFUNCTION, &Transfer::on_body);
  g_curl.easy_setopt(e, CURLOPT_WRITEDATA, t.get());
  if (!config_.ca_file.empty()) g_curl.easy_setopt(e, CURLOPT_CAINFO, config_.ca_file.c_str());
  if (t->method == "GET" && t->body.empty()) {
    g_curl.easy_setopt(e, CURLOPT_HTTPGET, 1L);
  } else if (t->method == "HEAD") {
    g_curl.easy_setopt(e, CURLOPT_NOBODY, 1L);
  } else {
    g_curl.easy_setopt(e, CURLOPT_POSTFIELDS, t->body.data());
    g_curl.easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(t->body.size()));
    if (t->method != "POST") g_curl.easy_setopt(e, CURLOPT_CUSTOMREQUEST, t->method.c_str());
  }
  Shard *shard = pick_shard();
  if (g_curl.multi_add_handle(shard->multi, e) != CURLM_OK) return CG_EIO;
  t->added = true;
  t->shard = shard;
  ++shard->active;
  if (request_id != nullptr) *request_id = t->id;
  transfers_.emplace(t->id, std::move(t));
  // curl asked for a 0 ms timeout through on_timer: the transfer starts on
  // the next loop turn, so done never runs inside this call.
  return 0;
}

int HttpClient::cancel(uint64_t request_id) {
  auto it = transfers_.find(request_id);
  if (it == transfers_.end() || it->second->cancelled) return CG_ENOENT;
  Transfer *t = it->second.get();
  t->cancelled = true;
  // Deferred: curl forbids removing a handle from inside its callbacks, and
  // the caller may be in on_data. The transfer stays in the map until then.
  if (loop_.defer(&HttpClient::on_cancelled, t) != 0) finish(t, CG_ECANCELED);
  return 0;
}

void HttpClient::on_cancelled(void *arg) {
  auto *t = static_cast<Transfer *>(arg);
  t->client->finish(t, CG_ECANCELED);
}

void HttpClient::finish(Transfer *t, int result) {
  if (t->added) {
    g_curl.multi_remove_handle(t->shard->multi, t->easy);
    --t->shard->active;
    t->added = false;
  }
  long status = 0;
  g_curl.easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
  std::vector<cg_http_header_t> headers;
  headers.reserve(t->resp_headers.size());
  for (const auto &[name, value] : t->resp_headers) headers.push_back({cs(name), cs(value)});
  cg_http_client_response_t resp{};
  resp.struct_size = sizeof resp;
  resp.status = static_cast<int32_t>(status);
  resp.header_count = static_cast<uint32_t>(headers.size());
  resp.headers = headers.data();
  resp.body = cs(t->resp_body);
  std::string error;
  if (result == CG_ECANCELED) {
    error = t->data_abort ? "aborted by the data callback" : "cancelled";
  } else if (result == CG_ETOOBIG) {
    error = "response body over " + std::to_string(config_.max_response_bytes) + " bytes";
  } else if (result != 0) {
    error = t->errbuf[0] != '\0' ? t->errbuf : "transfer failed";
  }
  resp.error = cs(error);
  // Out of the map first: the callback may start or cancel requests.
  std::unique_ptr<Transfer> owned = std::move(transfers_.at(t->id));
  transfers_.erase(t->id);
  owned->done(owned->arg, result, &resp);
}

void HttpClient::collect_done(Shard *shard) {
  int left = 0;
  while (CURLMsg *m = g_curl.multi_info_read(shard->multi, &left)) {
    if (m->msg != CURLMSG_DONE) continue;
    Transfer *t = nullptr;
    g_curl.easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &t);
    if (t == nullptr || t->cancelled) continue;  // the deferred cancel finishes it
    const CURLcode code = m->data.result;
    int result = 0;
    if (code == CURLE_OK) {
      result = 0;
    } else if (t->too_big) {
      result = CG_ETOOBIG;
    } else if (t->data_abort) {
      result = CG_ECANCELED;
    } else if (code == CURLE_OPERATION_TIMEDOUT) {
      result = CG_ETIMEDOUT;
    } else {
      result = CG_EIO;
      if (t->errbuf[0] == '\0') {
        std::snprintf(t->errbuf, sizeof t->errbuf, "%s", g_curl.easy_strerror(code));
      }
    }
    finish(t, result);
  }
}

void HttpClient::drive(Shard *shard, curl_socket_t s, int flags) {
  int running = 0;
  g_curl.multi_socket_action(shard->multi, s, flags, &running);
  collect_done(shard);
}

int HttpClient::on_timer(CURLM *, long timeout_ms, void *userp) {
  auto *shard = static_cast<Shard *>(userp);
  if (shard->client->closing_) return 0;
  if (timeout_ms < 0) {
    uv_timer_stop(&shard->timer);
  } else {
    uv_timer_start(&shard->timer, &HttpClient::on_uv_timer, static_cast<uint64_t>(timeout_ms), 0);
  }
  return 0;
}

void HttpClient::on_uv_timer(uv_timer_t *timer) {
  auto *shard = static_cast<Shard *>(timer->data);
  shard->client->drive(shard, CURL_SOCKET_TIMEOUT, 0);
}

int HttpClient::on_socket(CURL *, curl_socket_t s, int what, void *userp, void *socketp) {
  auto *shard = static_cast<Shard *>(userp);
  HttpClient *self = shard->client;
  auto *p = static_cast<Poll *>(socketp);
  if (what == CURL_POLL_REMOVE) {
    if (p != nullptr) {
      g_curl.multi_assign(shard->multi, s, nullptr);
      self->close_poll(p);
    }
    return 0;
  }
  if (p == nullptr) {
    auto owned = std::make_unique<Poll>();
    owned->shard = shard;
    owned->fd = s;
    if (uv_poll_init_socket(self->loop_.uv(), &owned->handle, s) != 0) return -1;
    owned->handle.data = owned.get();
    p = owned.release();
    self->polls_.insert(p);
    g_curl.multi_assign(shard->multi, s, p);
  }
  int events = 0;
  if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) events |= UV_READABLE;
  if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) events |= UV_WRITABLE;
  uv_poll_start(&p->handle, events, &HttpClient::on_poll);
  return 0;
}

void HttpClient::on_poll(uv_poll_t *handle, int status, int events) {
  auto *p = static_cast<Poll *>(handle->data);
  int flags = 0;
  if (status < 0) {
    flags = CURL_CSELECT_ERR;
  } else {
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  }
  p->shard->client->drive(p->shard, p->fd, flags);
}

void HttpClient::close_poll(Poll *p) {
  polls_.erase(p);
  uv_poll_stop(&p->handle);
  uv_close(reinterpret_cast<uv_handle_t *>(&p->handle),
           [](uv_handle_t *h) { std::unique_ptr<Poll> owned(static_cast<Poll *>(h->data)); });
}

void HttpClient::close() {
  if (closing_) return;
  if (shards_.empty()) {
    closing_ = true;  // never started: no handles to close
    return;
  }
  std::vector<uint64_t> ids;
  ids.reserve(transfers_.size());
  for (const auto &[id, t] : transfers_) ids.push_back(id);
  for (uint64_t id : ids) cancel(id);
  closing_ = true;
  // Queued behind the cancels, so it runs once their completions did.
  if (loop_.defer(&HttpClient::on_cleanup, this) != 0) on_cleanup(this);
}

// Easy handles are kept for the next request: curl_easy_init and cleanup
// cost a 5 KiB allocation, the receive buffer and a few dozen frees each, on
// the loop thread, per request.
CURL *HttpClient::take_easy() {
  if (idle_easy_.empty()) return g_curl.easy_init();
  CURL *e = idle_easy_.back();
  idle_easy_.pop_back();
  return e;
}

void HttpClient::recycle_easy(CURL *e) {
  if (idle_easy_.size() >= kIdleEasyMax || shards_.empty()) {
    g_curl.easy_cleanup(e);
    return;
  }
  // Back to the defaults; connections stay in the multi handle's cache.
  g_curl.easy_reset(e);
  idle_easy_.push_back(e);
}

void HttpClient::on_cleanup(void *arg) {
  auto *self = static_cast<HttpClient *>(arg);
  // Whatever is left (a cancel whose defer was refused) ends here.
  while (!self->transfers_.empty()) {
    self->finish(self->transfers_.begin()->second.get(), CG_ECANCELED);
  }
  for (CURL *e : self->idle_easy_) g_curl.easy_cleanup(e);
  self->idle_easy_.clear();
  // curl closes its cached connections here, through on_socket's REMOVE.
  for (const auto &shard : self->shards_) g_curl.multi_cleanup(shard->multi);
  const std::vector<Poll *> left(self->polls_.begin(), self->polls_.end());
  for (Poll *p : left) self->close_poll(p);
  // The shards are freed once their timers have closed.
  for (auto &shard : self->shards_) {
    uv_timer_stop(&shard->timer);
    uv_close(reinterpret_cast<uv_handle_t *>(&shard->timer),
             [](uv_handle_t *h) { std::unique_ptr<Shard> owned(static_cast<Shard *>(h->data)); });
    (void)shard.release();
  }
  self->shards_.clear();
}

}  // namespace cg
