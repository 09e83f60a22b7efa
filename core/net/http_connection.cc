// One HTTP/1.1 connection: lifetime, timer, reading and parsing. The answer
// side (ordering, serialization, writing) is in http_response.cc.
//
// llhttp is paused at the end of every request head and every message, so
// limits, dispatch and pipelining decisions run outside its callbacks and
// know exact byte positions.
#include "net/http_connection.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>

namespace cg {
namespace {

constexpr uint64_t kMaxLingerMs = 2000;
constexpr size_t kNoLength = HttpConnection::kNoLength;
constexpr HttpHeader kJsonType[] = {{"Content-Type", "application/json"}};

HttpConnection *conn_of(llhttp_t *p) { return static_cast<HttpConnection *>(p->data); }

}  // namespace

std::string_view HttpRequest::header(std::string_view name) const {
  for (const HttpHeader &h : header_views_) {
    if (ascii_iequals(h.name, name)) return h.value;
  }
  return {};
}

// --- Construction and lifetime ---------------------------------------------

HttpConnection::HttpConnection(HttpConnectionOwner &owner, uv_loop_t *loop, bool reject)
    : owner_(owner), reject_(reject) {
  uv_tcp_init(loop, &tcp_);
  uv_timer_init(loop, &timer_);
  uv_timer_init(loop, &send_timer_);
  tcp_.data = this;
  timer_.data = this;
  send_timer_.data = this;
  write_req_.data = this;
  shutdown_req_.data = this;
  open_handles_ = 3;
  llhttp_init(&parser_, HTTP_REQUEST, &parser_settings());
  parser_.data = this;
}

HttpConnection::~HttpConnection() {
  if (leftover_block_ != nullptr) owner_.release_block(leftover_block_);
}

int HttpConnection::start(uv_stream_t *listener) {
  auto *stream = reinterpret_cast<uv_stream_t *>(&tcp_);
  int rc = uv_accept(listener, stream);
  if (rc < 0) return rc;
  // Answers are written whole; waiting for ACKs (Nagle) only adds latency.
  uv_tcp_nodelay(&tcp_, 1);
  sockaddr_storage addr{};
  int len = sizeof addr;
  if (uv_tcp_getpeername(&tcp_, reinterpret_cast<sockaddr *>(&addr), &len) == 0) {
    char ip[64] = {};
    if (addr.ss_family == AF_INET6) {
      uv_ip6_name(reinterpret_cast<sockaddr_in6 *>(&addr), ip, sizeof ip);
    } else {
      uv_ip4_name(reinterpret_cast<sockaddr_in *>(&addr), ip, sizeof ip);
    }
    remote_addr_ = ip;
  }
  const int status = reject_ ? 503 : owner_.admit(*this);
  if (SSL_CTX *ctx = owner_.tls_context(); ctx != nullptr) {
    // Before the handshake no HTTP answer can be sent: a refused TLS
    // connection is closed at once.
    if (status != 0) {
      spdlog::debug("listener '{}': {} from {}: closed before the TLS handshake",
                    owner_.listener_name(), status, remote_addr_);
      close();
      return 0;
    }
    tls_ = std::make_unique<TlsServerSession>(ctx);
    if (!tls_->ok()) {
      owner_.tls_failed(tls_->error());
      close();
      return 0;
    }
  }
  start_reading();
  if (life_ != Life::kOpen) return 0;
  if (status != 0) {
    fail(status, status == 403 ? "address not allowed"
                 : reject_     ? "connection limit reached"
                               : "too many connections from this address");
    return 0;
  }
  // Until its first byte a new connection gets the head timeout, when that
  // is shorter than the idle one: a client that connects and says nothing
  // must not hold a connection slot for a minute.
  const HttpLimits &l = owner_.limits();
  uint64_t ms = l.idle_timeout_ms;
  if (l.header_timeout_ms != 0 && (ms == 0 || l.header_timeout_ms < ms)) ms = l.header_timeout_ms;
  arm(TimerKind::kIdle, ms);
  return 0;
}

void HttpConnection::drain() {
  if (life_ != Life::kOpen) return;
  draining_ = true;
  // A request already arriving, or arriving while an idle connection
  // lingers (HttpServer::stop_accepting), is still served; its answer closes.
  if (queue_.empty() && phase_ == Phase::kIdle && !writing_ && wbuf_.empty()) {
    const uint64_t idle = owner_.limits().idle_timeout_ms;
    arm(TimerKind::kIdle,
        idle != 0 && idle < HttpServer::kDrainLingerMs ? idle : HttpServer::kDrainLingerMs);
    return;
  }
  // Answers are still due: the last of them closes.
  if (phase_ == Phase::kIdle) no_more_requests_ = true;
  advance();
}

void HttpConnection::close() {
  if (life_ == Life::kClosing || life_ == Life::kClosed) return;
  life_ = Life::kClosing;
  if (leftover_block_ != nullptr) {
    owner_.release_block(leftover_block_);
    leftover_block_ = nullptr;
  }
  if (current_) recycle(std::move(current_));
  reading_ = false;
  uv_close(reinterpret_cast<uv_handle_t *>(&tcp_), close_cb);
  uv_close(reinterpret_cast<uv_handle_t *>(&timer_), close_cb);
  uv_close(reinterpret_cast<uv_handle_t *>(&send_timer_), close_cb);
  abort_pending();
}

void HttpConnection::close_cb(uv_handle_t *h) {
  auto *c = static_cast<HttpConnection *>(h->data);
  if (--c->open_handles_ > 0) return;
  c->life_ = Life::kClosed;
  c->owner_.connection_closed(c);  // may free c
}

// After the last answer: stop sending, but keep reading (and discarding) for
// a moment, because closing a socket with unread input makes the kernel send
// a reset that can destroy the answer before the client reads it.
void HttpConnection::begin_linger() {
  if (life_ != Life::kOpen) return;
  life_ = Life::kLingering;
  abort_pending();
  if (leftover_block_ != nullptr) {
    owner_.release_block(leftover_block_);
    leftover_block_ = nullptr;
  }
  if (current_) recycle(std::move(current_));
  phase_ = Phase::kIdle;
  if (tls_) {
    // close_notify first, so the client can tell the end from a cut.
    tls_->shutdown();
    flush();
  }
  int rc = uv_shutdown(&shutdown_req_, reinterpret_cast<uv_stream_t *>(&tcp_), shutdown_cb);
  if (rc < 0) {
    close();
    return;
  }
  start_reading();
  if (life_ != Life::kLingering) return;
  uint64_t ms = owner_.limits().header_timeout_ms;
  arm(TimerKind::kLinger, ms == 0 ? kMaxLingerMs : std::min(ms, kMaxLingerMs));
}

void HttpConnection::shutdown_cb(uv_shutdown_t *req, int status) {
  auto *c = static_cast<HttpConnection *>(req->data);
  if (status < 0 && status != UV_ECANCELED) c->close();
}

void HttpConnection::abort_pending() {
  // Collected first: an abort callback may answer, and so free, its exchange.
  std::vector<std::function<void()>> callbacks;
  for (auto it = queue_.begin(); it != queue_.end();) {
    HttpExchange *ex = it->get();
    if (ex->state == HttpExchange::State::kDone) {
      // Finished but stuck behind an unfinished answer: moot now.
      recycle(std::move(*it));
      it = queue_.erase(it);
      continue;
    }
    if (!ex->aborted) {
      ex->aborted = true;
      if (ex->on_abort) callbacks.push_back(std::exchange(ex->on_abort, nullptr));
    }
    ++it;
  }
  for (auto &cb : callbacks) {
    try {
      cb();
    } catch (const std::exception &e) {
      spdlog::error("listener '{}': abort callback threw: {}", owner_.listener_name(), e.what());
    }
  }
}

// --- Timer -----------------------------------------------------------------

void HttpConnection::arm(TimerKind kind, uint64_t ms) {
  // A limit of 0 means "no limit"; only a resume is meant to fire at once.
  if (kind == TimerKind::kNone || (ms == 0 && kind != TimerKind::kResume)) {
    timer_kind_ = TimerKind::kNone;
    uv_timer_stop(&timer_);
    return;
  }
  timer_kind_ = kind;
  uv_timer_start(&timer_, timer_cb, ms, 0);
}

// Between requests: idle timeout, a deferred resume of parked pipelined
// bytes, or nothing while answers are pending. The head and body timers are
// armed where those phases begin and run until they end.
void HttpConnection::rearm_timer() {
  if (life_ != Life::kOpen || phase_ != Phase::kIdle) return;
  if (leftover_block_ != nullptr && can_parse()) {
    arm(TimerKind::kResume, 0);
  } else if (queue_.empty() && !writing_ && wbuf_.empty()) {
    arm(TimerKind::kIdle, owner_.limits().idle_timeout_ms);
  } else {
    arm(TimerKind::kNone, 0);
  }
}

void HttpConnection::timer_cb(uv_timer_t *t) {
  auto *c = static_cast<HttpConnection *>(t->data);
  TimerKind kind = std::exchange(c->timer_kind_, TimerKind::kNone);
  switch (kind) {
    case TimerKind::kIdle:
    case TimerKind::kLinger:
      c->close();
      break;
    case TimerKind::kHeaders:
      c->fail(408, "timed out reading the request head");
      break;
    case TimerKind::kBody:
      c->fail(408, "timed out reading the request body");
      break;
    case TimerKind::kResume:
      c->resume_parsing();
      break;
    case TimerKind::kNone:
      break;
  }
}

void HttpConnection::send_timer_cb(uv_timer_t *t) {
  auto *c = static_cast<HttpConnection *>(t->data);
  spdlog::debug("listener '{}': {} read no answer bytes for {} ms; closed",
                c->owner_.listener_name(), c->remote_addr_, c->owner_.limits().send_timeout_ms);
  c->close();
}

// --- Reading ---------------------------------------------------------------

void HttpConnection::start_reading() {
  if (reading_ || life_ == Life::kClosing || life_ == Life::kClosed) return;
  int rc = uv_read_start(reinterpret_cast<uv_stream_t *>(&tcp_), alloc_cb, read_cb);
  if (rc < 0) {
    close();
    return;
  }
  reading_ = true;
}

void HttpConnection::stop_reading() {
  if (!reading_) return;
  uv_read_stop(reinterpret_cast<uv_stream_t *>(&tcp_));
  reading_ = false;
}

void HttpConnection::alloc_cb(uv_handle_t *h, size_t, uv_buf_t *buf) {
  auto *c = static_cast<HttpConnection *>(h->data);
  buf->base = c->owner_.acquire_block();
  buf->len = kReadBlockSize;
}

void HttpConnection::read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  auto *c = static_cast<HttpConnection *>(s->data);
  char *block = buf->base;
  if (nread <= 0) {
    if (block != nullptr) c->owner_.release_block(block);
    // EOF or error: the client is gone (or, when lingering, done reading).
    // A half-close counts as gone too, as nginx does: a socket closed for
    // good cannot be told from one shut for writing.
    if (nread < 0) c->close();
    return;
  }
  if (c->life_ != Life::kOpen || c->no_more_requests_) {
    c->owner_.release_block(block);
    return;
  }
  if (c->tls_) {
    c->tls_->feed(std::string_view(block, static_cast<size_t>(nread)));
    c->owner_.release_block(block);
    c->pump_tls();
    return;
  }
  size_t len = static_cast<size_t>(nread);
  size_t used = c->parse(block, len);
  if (used < len && c->life_ == Life::kOpen && !c->no_more_requests_) {
    // Pipeline full: park the rest and stop reading until answers drain.
    c->leftover_block_ = block;
    c->leftover_pos_ = used;
    c->leftover_end_ = len;
    c->stop_reading();
    return;
  }
  c->owner_.release_block(block);
}

void HttpConnection::resume_parsing() {
  if (parsing_ || life_ != Life::kOpen) return;
  if (leftover_block_ != nullptr) {
    if (!no_more_requests_) {
      if (!can_parse()) return;
      leftover_pos_ += parse(leftover_block_ + leftover_pos_, leftover_end_ - leftover_pos_);
      if (life_ != Life::kOpen) return;
      if (leftover_pos_ < leftover_end_ && !no_more_requests_) return;  // full again
    }
    owner_.release_block(leftover_block_);
    leftover_block_ = nullptr;
  }
  if (tls_) {
    // The session may hold decrypted bytes, or records not yet decrypted.
    pump_tls();
    if (life_ != Life::kOpen || leftover_block_ != nullptr) return;
  }
  start_reading();
}

void HttpConnection::pump_tls() {
  while (life_ == Life::kOpen && !no_more_requests_ && leftover_block_ == nullptr) {
    char *plain = owner_.acquire_block();
    const long n = tls_->read(plain, kReadBlockSize);
    if (n <= 0) {
      owner_.release_block(plain);
      if (n == 0) break;
      if (n == -1) {
        owner_.tls_failed(tls_->error());
        if (!tls_->established()) {
          // A refused handshake: OpenSSL has written its fatal alert
          // (protocol_version, say). Send it before closing, so the client
          // learns why rather than seeing the connection cut (RFC 8446 6).
          no_more_requests_ = true;
          close_when_flushed_ = true;
          flush();
          if (life_ == Life::kOpen && !writing_) close();  // no alert to send
          return;
        }
      }
      close();  // a TLS error, or the client's close_notify
      return;
    }
    const auto len = static_cast<size_t>(n);
    const size_t used = parse(plain, len);
    if (used < len && life_ == Life::kOpen && !no_more_requests_) {
      leftover_block_ = plain;
      leftover_pos_ = used;
      leftover_end_ = len;
      stop_reading();
      break;
    }
    owner_.release_block(plain);
  }
  // The handshake's own records, and answers made while parsing.
  flush();
}

// --- Parsing ---------------------------------------------------------------

const llhttp_settings_t &HttpConnection::parser_settings() {
  static const llhttp_settings_t settings = [] {
    llhttp_settings_t s;
    llhttp_settings_init(&s);
    s.on_message_begin = on_message_begin;
    s.on_url = on_url;
    s.on_header_field = on_header_field;
    s.on_header_value = on_header_value;
    s.on_header_value_complete = on_header_value_complete;
    s.on_headers_complete = on_headers_complete;
    s.on_body = on_body;
    s.on_message_complete = on_message_complete;
    return s;
  }();
  return settings;
}

bool HttpConnection::can_parse() const {
  if (life_ != Life::kOpen || no_more_requests_) return false;
  // A request under way is read to its end (its size is bounded by the
  // limits); pausing it would only let its timer run out.
  if (phase_ != Phase::kIdle) return true;
  // A client that sends requests but does not read the answers would
  // otherwise make the answers pile up here without end.
  if (wbuf_.size() + wbuf_inflight_.size() >= owner_.limits().max_buffered_bytes) return false;
  return queue_.size() < std::max<size_t>(1, owner_.limits().max_pipeline);
}

size_t HttpConnection::parse(const char *data, size_t len) {
  parsing_ = true;
  const char *p = data;
  const char *end = data + len;
  // Runs again after each pause even with nothing left: llhttp finishes a
  // bodiless message only on the call after the head's pause.
  while (can_parse()) {
    llhttp_errno_t err = llhttp_execute(&parser_, p, static_cast<size_t>(end - p));
    const char *stop = err == HPE_OK ? end : llhttp_get_error_pos(&parser_);
    if (stop == nullptr) stop = end;
    if (phase_ == Phase::kHeaders) {
      // Raw bytes, so whitespace padding counts against the limit too.
      header_raw_ += static_cast<size_t>(stop - p);
      if (header_raw_ > owner_.limits().max_header_bytes) error_status_ = 431;
    }
    p = stop;
    if (error_status_ == 431 || (err != HPE_OK && err != HPE_PAUSED)) {
      fail(error_status_ != 0 ? error_status_ : 400, llhttp_get_error_reason(&parser_) != nullptr
                                                         ? llhttp_get_error_reason(&parser_)
                                                         : "malformed request");
      break;
    }
    if (err == HPE_OK) break;
    llhttp_resume(&parser_);
    if (message_complete_) {
      message_complete_ = false;
      message_done();
    } else {
      headers_done();
    }
  }
  parsing_ = false;
  return static_cast<size_t>(p - data);
}

int HttpConnection::on_message_begin(llhttp_t *p) {
  HttpConnection *c = conn_of(p);
  c->current_ = c->acquire_exchange();
  c->current_->request.remote_addr_ = c->remote_addr_;
  c->current_->request.peer_addr_ = c->remote_addr_;
  c->phase_ = Phase::kHeaders;
  c->header_raw_ = 0;
  c->header_open_ = false;
  c->error_status_ = 0;
  c->arm(TimerKind::kHeaders, c->owner_.limits().header_timeout_ms);
  return 0;
}

bool HttpConnection::header_room(size_t more) {
  const HttpRequest &r = current_->request;
  if (r.path_.size() + r.header_bytes_.size() + more <= owner_.limits().max_header_bytes) {
    return true;
  }
  error_status_ = 431;
  return false;
}

int HttpConnection::on_url(llhttp_t *p, const char *at, size_t len) {
  HttpConnection *c = conn_of(p);
  if (!c->header_room(len)) return -1;
  c->current_->request.path_.append(at, len);
  return 0;
}

// Names and values are packed into one string; header_offsets_ holds
// (offset, length) pairs, name then value, turned into views once the head
// is complete and the string no longer grows.
int HttpConnection::on_header_field(llhttp_t *p, const char *at, size_t len) {
  HttpConnection *c = conn_of(p);
  if (c->phase_ != Phase::kHeaders) return 0;  // trailers are ignored
  if (!c->header_room(len)) return -1;
  HttpRequest &r = c->current_->request;
  if (!c->header_open_) {
    c->header_open_ = true;
    r.header_offsets_.emplace_back(r.header_bytes_.size(), 0);
    r.header_offsets_.emplace_back(kNoLength, 0);
  }
  r.header_bytes_.append(at, len);
  r.header_offsets_[r.header_offsets_.size() - 2].second += len;
  return 0;
}

int HttpConnection::on_header_value(llhttp_t *p, const char *at, size_t len) {
  HttpConnection *c = conn_of(p);
  if (c->phase_ != Phase::kHeaders || !c->header_open_) return 0;
  if (!c->header_room(len)) return -1;
  HttpRequest &r = c->current_->request;
  auto &value = r.header_offsets_.back();
  if (value.first == kNoLength) value.first = r.header_bytes_.size();
  r.header_bytes_.append(at, len);
  value.second += len;
  return 0;
}

int HttpConnection::on_header_value_complete(llhttp_t *p) {
  conn_of(p)->header_open_ = false;
  return 0;
}

int HttpConnection::on_headers_complete(llhttp_t *) { return HPE_PAUSED; }

int HttpConnection::on_body(llhttp_t *p, const char *at, size_t len) {
  HttpConnection *c = conn_of(p);
  std::string &body = c->current_->request.body_;
  if (body.size() + len > c->owner_.limits().max_body_bytes) {
    c->error_status_ = 413;
    return -1;
  }
  body.append(at, len);
  return 0;
}

int HttpConnection::on_message_complete(llhttp_t *p) {
  conn_of(p)->message_complete_ = true;
  return HPE_PAUSED;
}

void HttpConnection::headers_done() {
  HttpExchange &ex = *current_;
  HttpRequest &r = ex.request;
  phase_ = Phase::kBody;

  std::string &target = r.path_;
  if (target.starts_with("http://") || target.starts_with("https://")) {
    // Absolute form (proxies): routing only wants the path.
    size_t slash = target.find('/', target.find("//") + 2);
    if (slash == std::string::npos) {
      target.assign("/");
    } else {
      target.erase(0, slash);
    }
  }
  if (size_t hash = target.find('#'); hash != std::string::npos) target.resize(hash);
  if (size_t q = target.find('?'); q != std::string::npos) {
    r.query_.assign(target, q + 1);
    target.resize(q);
  }
  r.method_.assign(llhttp_method_name(static_cast<llhttp_method_t>(parser_.method)));
  for (size_t i = 0; i + 1 < r.header_offsets_.size(); i += 2) {
    auto [name_off, name_len] = r.header_offsets_[i];
    auto [value_off, value_len] = r.header_offsets_[i + 1];
    std::string_view value;
    if (value_off != kNoLength)
      value = std::string_view(r.header_bytes_).substr(value_off, value_len);
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
    r.header_views_.push_back(
        {std::string_view(r.header_bytes_).substr(name_off, name_len), value});
  }

  if (std::string client; owner_.client_address(r, &client)) r.remote_addr_ = std::move(client);
  ex.keep_alive = llhttp_should_keep_alive(&parser_) != 0 && parser_.upgrade == 0;
  ex.http10 = parser_.http_major < 1 || (parser_.http_major == 1 && parser_.http_minor == 0);
  ex.head = parser_.method == HTTP_HEAD;

  const HttpLimits &limits = owner_.limits();
  uint16_t flags = parser_.flags;
  // Request smuggling: llhttp in strict mode already refuses this, but the
  // defence must not depend on a parser flag staying off.
  if ((flags & F_CONTENT_LENGTH) && (flags & F_TRANSFER_ENCODING)) {
    fail(400, "both Content-Length and Transfer-Encoding");
    return;
  }
  if ((flags & F_CONTENT_LENGTH) && parser_.content_length > limits.max_body_bytes) {
    fail(413, "Content-Length over the limit");
    return;
  }
  bool has_body = (flags & F_CHUNKED) || parser_.content_length > 0;
  if (!has_body) return;
  arm(TimerKind::kBody, limits.body_timeout_ms);
  // Only when nothing is ahead of it: an interim answer must not slip in
  // between the bytes of an earlier answer.
  if (queue_.empty() && ascii_iequals(r.header("Expect"), "100-continue")) {
    wbuf_.append("HTTP/1.1 100 Continue\r\n\r\n");
    flush();
  }
}

void HttpConnection::message_done() {
  HttpExchange *ex = current_.get();
  queue_.push_back(std::move(current_));
  phase_ = Phase::kIdle;
  if (!ex->keep_alive || draining_) no_more_requests_ = true;
  rearm_timer();
  owner_.dispatch(ex);
}

void HttpConnection::fail(int status, std::string_view why) {
  if (life_ != Life::kOpen) return;
  spdlog::debug("listener '{}': {} from {}: {}", owner_.listener_name(), status, remote_addr_, why);
  no_more_requests_ = true;
  std::unique_ptr<HttpExchange> ex = current_ ? std::move(current_) : acquire_exchange();
  // Echo CORS only if the head was complete, so a browser can read the error.
  ex->cors_origin =
      phase_ == Phase::kBody ? owner_.allowed_origin(ex->request) : std::string_view();
  ex->cors_vary = phase_ == Phase::kBody && owner_.cors_enabled();
  phase_ = Phase::kIdle;
  ex->internal = true;
  ex->keep_alive = false;
  HttpExchange *raw = ex.get();
  queue_.push_back(std::move(ex));
  owner_.answered_internally(status);
  respond(raw, status, kJsonType, http_error_body(status));
}

}  // namespace cg
