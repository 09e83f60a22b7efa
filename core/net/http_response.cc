// The answer side of one connection: exchanges are recycled per connection,
// answers are serialized into reused strings and leave strictly in request
// order. The exchange at the head of the queue writes straight into the
// connection's write buffer; later ones park their bytes in their own `out`
// until they reach the head.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <utility>

#include "net/http_connection.h"

namespace cg {
namespace {

// Buffers that grew past this are freed on reuse instead of kept, so one
// large upload or answer does not pin memory on an idle keep-alive connection.
constexpr size_t kKeepCapacity = size_t{64} * 1024;
constexpr size_t kMaxSpareExchanges = 4;
// Answer bytes held for a stream beyond this many times max_buffered_bytes
// close the connection.
constexpr size_t kHardBufferFactor = 8;
constexpr size_t kNoLength = HttpConnection::kNoLength;

void clear_keep_small(std::string &s) {
  if (s.capacity() > kKeepCapacity) {
    std::string().swap(s);
  } else {
    s.clear();
  }
}

void append_number(std::string &out, size_t n, int base = 10) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, n, base);
  out.append(buf, end);
}

// Handler headers go on the wire verbatim, so anything that could split a
// line (response splitting) or that the server owns is refused.
bool header_acceptable(const HttpHeader &h) {
  if (h.name.empty()) return false;
  for (char ch : h.name) {
    if (ch <= ' ' || ch == ':' || ch == 0x7f) return false;
  }
  for (char ch : h.value) {
    if (ch == '\r' || ch == '\n' || ch == '\0') return false;
  }
  return !ascii_iequals(h.name, "Content-Length") && !ascii_iequals(h.name, "Transfer-Encoding") &&
         !ascii_iequals(h.name, "Connection") && !ascii_iequals(h.name, "Date");
}

}  // namespace

// --- Exchanges -------------------------------------------------------------

std::unique_ptr<HttpExchange> HttpConnection::acquire_exchange() {
  std::unique_ptr<HttpExchange> ex;
  if (spare_.empty()) {
    ex = std::make_unique<HttpExchange>();
  } else {
    ex = std::move(spare_.back());
    spare_.pop_back();
  }
  ex->conn = this;
  ex->state = HttpExchange::State::kPending;
  return ex;
}

void HttpConnection::reset_exchange(HttpExchange &ex) {
  HttpRequest &r = ex.request;
  r.method_.clear();
  r.path_.clear();
  r.query_.clear();
  clear_keep_small(r.body_);
  r.header_bytes_.clear();
  r.header_views_.clear();
  r.header_offsets_.clear();
  clear_keep_small(ex.out);
  ex.on_abort = nullptr;
  ex.cors_origin = {};
  ex.cors_vary = false;
  ex.route = nullptr;
  ex.state = HttpExchange::State::kFree;
  ex.keep_alive = true;
  ex.head = ex.http10 = ex.internal = ex.aborted = ex.close_after = false;
}

void HttpConnection::recycle(std::unique_ptr<HttpExchange> ex) {
  reset_exchange(*ex);
  if (spare_.size() < kMaxSpareExchanges) spare_.push_back(std::move(ex));
}

void HttpConnection::finish_aborted(HttpExchange *ex) {
  auto it = std::find_if(queue_.begin(), queue_.end(),
                         [ex](const std::unique_ptr<HttpExchange> &e) { return e.get() == ex; });
  if (it != queue_.end()) {
    recycle(std::move(*it));
    queue_.erase(it);
  }
  if (life_ == Life::kClosed && queue_.empty()) owner_.connection_drained(this);  // frees this
}

std::string &HttpConnection::out_for(HttpExchange *ex) {
  return !queue_.empty() && queue_.front().get() == ex ? wbuf_ : ex->out;
}

bool HttpConnection::decide_close(const HttpExchange *ex) const {
  if (!ex->keep_alive) return true;
  // Draining: the last request received gets Connection: close.
  return no_more_requests_ && phase_ == Phase::kIdle && !queue_.empty() &&
         queue_.back().get() == ex;
}

void HttpConnection::append_head(std::string &out, const HttpExchange *ex, int status,
                                 std::span<const HttpHeader> headers, size_t content_length,
                                 bool chunked, bool close) {
  if (status < 100 || status > 999) {
    // A status line needs three digits; a handler bug must not break framing.
    spdlog::error("listener '{}': invalid status {} answered as 500", owner_.listener_name(),
                  status);
    status = 500;
  }
  out.append("HTTP/1.1 ");
  append_number(out, static_cast<size_t>(status));
  out.push_back(' ');
  out.append(http_status_text(status));
  out.append("\r\n");
  if (chunked) {
    out.append("Transfer-Encoding: chunked\r\n");
  } else if (content_length != kNoLength) {
    out.append("Content-Length: ");
    append_number(out, content_length);
    out.append("\r\n");
  }
  out.append(close ? "Connection: close\r\n" : "Connection: keep-alive\r\n");
  out.append("Date: ");
  out.append(http_date_now());
  out.append("\r\n");
  if (!ex->cors_origin.empty()) {
    out.append("Access-Control-Allow-Origin: ");
    out.append(ex->cors_origin);
    out.append("\r\nVary: Origin\r\n");
  } else if (ex->cors_vary) {
    out.append("Vary: Origin\r\n");
  }
  for (const HttpHeader &h : headers) {
    if (!header_acceptable(h)) {
      spdlog::warn("listener '{}': dropped response header '{}' (reserved or invalid)",
                   owner_.listener_name(), h.name);
      continue;
    }
    out.append(h.name);
    out.append(": ");
    out.append(h.value);
    out.append("\r\n");
  }
  out.append("\r\n");
}

void HttpConnection::respond(HttpExchange *ex, int status, std::span<const HttpHeader> headers,
                             std::string_view body) {
  if (ex->aborted) {
    finish_aborted(ex);
    return;
  }
  ex->state = HttpExchange::State::kDone;
  bool close = decide_close(ex);
  bool bodiless = status < 200 || status == 204 || status == 304;
  std::string &out = out_for(ex);
  append_head(out, ex, status, headers, bodiless ? kNoLength : body.size(), false, close);
  if (!bodiless && !ex->head) out.append(body);
  ex->close_after = close;
  advance();
}

void HttpConnection::stream_begin(HttpExchange *ex, int status,
                                  std::span<const HttpHeader> headers) {
  ex->state = HttpExchange::State::kStreaming;
  if (ex->aborted) return;
  // HTTP/1.0 has no chunked encoding: the body ends where the connection does.
  bool close = decide_close(ex) || ex->http10;
  append_head(out_for(ex), ex, status, headers, kNoLength, !ex->http10, close);
  ex->close_after = close;
  advance();
}

void HttpConnection::stream_write(HttpExchange *ex, std::string_view data) {
  // An empty chunk would be read as the end of the body.
  if (ex->aborted || ex->head || data.empty()) return;
  std::string &out = out_for(ex);
  if (!ex->http10) {
    append_number(out, data.size(), 16);
    out.append("\r\n");
  }
  out.append(data);
  if (!ex->http10) out.append("\r\n");
  if (&out == &wbuf_) flush();
  // A stream to a client that does not read cannot be paused (the model
  // keeps writing): past the hard mark the client is dropped, from the
  // timer rather than here, so no abort callback runs inside this call.
  if (out.size() > kHardBufferFactor * owner_.limits().max_buffered_bytes) {
    uv_timer_start(&send_timer_, send_timer_cb, 0, 0);
  }
}

void HttpConnection::stream_end(HttpExchange *ex) {
  if (ex->aborted) {
    finish_aborted(ex);
    return;
  }
  if (!ex->http10 && !ex->head) out_for(ex).append("0\r\n\r\n");
  ex->state = HttpExchange::State::kDone;
  advance();
}

// Moves finished answers at the head of the queue to the write buffer, in
// order, and decides whether the connection closes after them.
void HttpConnection::advance() {
  if (life_ != Life::kOpen) return;
  while (!queue_.empty()) {
    HttpExchange *head = queue_.front().get();
    if (!head->out.empty()) {
      wbuf_.append(head->out);
      head->out.clear();
    }
    if (head->state != HttpExchange::State::kDone) break;
    bool close = head->close_after;
    recycle(std::move(queue_.front()));
    queue_.erase(queue_.begin());
    if (close) {
      no_more_requests_ = true;
      close_when_flushed_ = true;
      break;
    }
  }
  if (no_more_requests_ && queue_.empty() && phase_ == Phase::kIdle) close_when_flushed_ = true;
  flush();
  if (life_ != Life::kOpen) return;
  if (close_when_flushed_ && !writing_ && wbuf_.empty()) {
    begin_linger();
    return;
  }
  rearm_timer();
}

// --- Writing ---------------------------------------------------------------

// One write in flight at a time; what accumulates meanwhile goes out in the
// next one. The two buffers swap roles, so their capacity is reused.
void HttpConnection::flush() {
  if (writing_ || life_ == Life::kClosing || life_ == Life::kClosed) return;
  if (tls_) {
    // Plaintext waits in wbuf_ until the handshake is done; the session's
    // records (handshake or data) go out as they come.
    if (!wbuf_.empty() && tls_->established()) {
      if (!tls_->write(wbuf_)) {
        owner_.tls_failed(tls_->error());
        close();
        return;
      }
      wbuf_.clear();
    }
    tls_->take_output(&wbuf_inflight_);
    if (wbuf_inflight_.empty()) return;
  } else {
    if (wbuf_.empty()) return;
    wbuf_inflight_.swap(wbuf_);
    wbuf_.clear();
  }
  // Restarted on every completed write: it measures a stall, not a
  // slow but moving download.
  if (const uint64_t ms = owner_.limits().send_timeout_ms; ms != 0) {
    uv_timer_start(&send_timer_, send_timer_cb, ms, 0);
  }
  uv_buf_t buf = uv_buf_init(wbuf_inflight_.data(), static_cast<unsigned>(wbuf_inflight_.size()));
  int rc = uv_write(&write_req_, reinterpret_cast<uv_stream_t *>(&tcp_), &buf, 1, write_cb);
  if (rc < 0) {
    close();
    return;
  }
  writing_ = true;
}

void HttpConnection::write_cb(uv_write_t *req, int status) {
  auto *c = static_cast<HttpConnection *>(req->data);
  c->writing_ = false;
  if (status < 0) {
    c->close();  // a no-op when this is the cancel that close() caused
    return;
  }
  clear_keep_small(c->wbuf_inflight_);
  if (c->life_ != Life::kOpen && c->life_ != Life::kLingering) return;
  uv_timer_stop(&c->send_timer_);
  if (c->life_ != Life::kOpen) return;
  c->flush();
  if (c->life_ != Life::kOpen) return;
  if (!c->writing_ && c->close_when_flushed_) {
    c->begin_linger();
    return;
  }
  c->rearm_timer();
}

}  // namespace cg
