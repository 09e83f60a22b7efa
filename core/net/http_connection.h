// One accepted HTTP/1.1 connection: llhttp parsing, answer ordering for
// pipelined requests, the per-connection timer, and closing. Private to the
// core; the public surface is http_server.h. Implemented in
// http_connection.cc (lifetime, reading, parsing) and http_response.cc
// (answers and writing).
//
// THREAD: loop thread only.
#pragma once

#include <llhttp.h>
#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "net/http_server.h"
#include "net/tls_server.h"

namespace cg {

class HttpConnection;

// A request and its answer in progress. Owned by its connection, which
// outlives every exchange it holds: a closed connection lingers as a zombie
// until the last of its exchanges has been answered.
class HttpExchange {
 public:
  enum class State : uint8_t {
    kFree,       // on the connection's spare list; answering it is a bug
    kPending,    // waiting for the handler
    kStreaming,  // stream_begin done, stream_end not yet
    kDone,       // answer complete (maybe still queued behind earlier ones)
  };

  HttpConnection *conn = nullptr;
  HttpRequest request;
  // Answer bytes held back while an earlier pipelined answer is unfinished.
  std::string out;
  std::function<void()> on_abort;
  std::string_view cors_origin;        // allowed Origin to echo; points into `request`
  bool cors_vary = false;              // the listener does CORS: answers vary by Origin
  const std::string *route = nullptr;  // the matched route's path (interned), for metrics
  State state = State::kFree;
  bool keep_alive = true;    // the request lets the connection be reused
  bool head = false;         // HEAD: the answer has no body
  bool http10 = false;       // HTTP/1.0 client: no chunked encoding
  bool internal = false;     // an error answer made by the server itself
  bool aborted = false;      // the client went away first
  bool close_after = false;  // the answer said Connection: close
};

// What a connection needs from its server (HttpServer::Impl).
class HttpConnectionOwner {
 public:
  virtual std::string_view listener_name() const = 0;
  virtual const HttpLimits &limits() const = 0;
  // A complete request, already queued on its connection, to route.
  virtual void dispatch(HttpExchange *ex) = 0;
  // The connection answered a request itself (400, 408, 413, 431...).
  virtual void answered_internally(int status) = 0;
  // A new connection from `conn.peer()`: 0 to serve it, or the status to
  // answer before closing (403: address not allowed, 503: too many
  // connections from it). An admitted connection may be counted by the
  // owner (conn.counted), to be uncounted in connection_closed.
  virtual int admit(HttpConnection &conn) = 0;
  // The client's address for a request whose head is complete, when it is
  // not the peer's (X-Forwarded-For from a trusted proxy): true with *out
  // set. False leaves the peer's address, and costs no string.
  virtual bool client_address(const HttpRequest &req, std::string *out) const = 0;
  // The allowed Origin of a request to echo in CORS headers, or empty.
  virtual std::string_view allowed_origin(const HttpRequest &req) const = 0;
  // Whether the listener answers CORS at all (then every answer says
  // `Vary: Origin`, also to an origin it refuses, so a cache keys on it).
  virtual bool cors_enabled() const = 0;
  // The listener's TLS context for a new connection, or null for plain HTTP.
  virtual SSL_CTX *tls_context() = 0;
  // A TLS handshake or record failed (the connection is being closed).
  virtual void tls_failed(std::string_view why) = 0;
  // Fixed-size read blocks (HttpConnection::kReadBlockSize bytes).
  virtual char *acquire_block() = 0;
  virtual void release_block(char *block) = 0;
  // Both handles of `conn` are closed. The owner frees `conn` now if it has
  // no exchanges left, else when connection_drained() comes.
  virtual void connection_closed(HttpConnection *conn) = 0;
  // A closed connection's last exchange was answered; the owner frees it.
  virtual void connection_drained(HttpConnection *conn) = 0;

 protected:
  ~HttpConnectionOwner() = default;
};

class HttpConnection {
 public:
  static constexpr size_t kReadBlockSize = size_t{64} * 1024;
  static constexpr size_t kNoLength = static_cast<size_t>(-1);  // "no Content-Length"

  // Initializes the handles; from here on the connection must be closed
  // with close() and freed only after HttpConnectionOwner::connection_closed.
  // A `reject` connection only answers 503 and closes (connection cap).
  HttpConnection(HttpConnectionOwner &owner, uv_loop_t *loop, bool reject);
  ~HttpConnection();
  HttpConnection(const HttpConnection &) = delete;
  HttpConnection &operator=(const HttpConnection &) = delete;

  // Accepts from `listener` and starts reading. On a negative return the
  // caller still has to close().
  int start(uv_stream_t *listener);
  // Graceful stop: no new requests; closes now if idle, otherwise after the
  // in-flight answers (the last one says Connection: close).
  void drain();
  // Closes now. Pending exchanges are aborted and stay valid until answered.
  void close();

  bool rejecting() const { return reject_; }
  const std::string &peer() const { return remote_addr_; }
  bool counted = false;  // in the owner's per-address connection count
  bool handles_closed() const { return life_ == Life::kClosed; }
  size_t pending() const { return queue_.size(); }

  // Answer calls, routed here by HttpServer. Each may free the connection
  // (a drained zombie), so callers must not touch it afterwards.
  void respond(HttpExchange *ex, int status, std::span<const HttpHeader> headers,
               std::string_view body);
  void stream_begin(HttpExchange *ex, int status, std::span<const HttpHeader> headers);
  void stream_write(HttpExchange *ex, std::string_view data);
  void stream_end(HttpExchange *ex);

 private:
  enum class Phase : uint8_t { kIdle, kHeaders, kBody };  // of the request being parsed
  enum class Life : uint8_t { kOpen, kLingering, kClosing, kClosed };
  enum class TimerKind : uint8_t { kNone, kIdle, kHeaders, kBody, kResume, kLinger };

  // llhttp callbacks (parser_.data is the connection).
  static const llhttp_settings_t &parser_settings();
  static int on_message_begin(llhttp_t *p);
  static int on_url(llhttp_t *p, const char *at, size_t len);
  static int on_header_field(llhttp_t *p, const char *at, size_t len);
  static int on_header_value(llhttp_t *p, const char *at, size_t len);
  static int on_header_value_complete(llhttp_t *p);
  static int on_headers_complete(llhttp_t *p);
  static int on_body(llhttp_t *p, const char *at, size_t len);
  static int on_message_complete(llhttp_t *p);
  bool header_room(size_t more);

  // libuv callbacks.
  static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
  static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
  static void write_cb(uv_write_t *req, int status);
  static void shutdown_cb(uv_shutdown_t *req, int status);
  static void timer_cb(uv_timer_t *t);
  static void send_timer_cb(uv_timer_t *t);
  static void close_cb(uv_handle_t *h);

  // Parsing.
  size_t parse(const char *data, size_t len);
  bool can_parse() const;
  void headers_done();
  void message_done();
  void resume_parsing();
  // TLS: decrypts what the session holds and parses it, until it needs
  // more ciphertext or the pipeline is full.
  void pump_tls();
  void fail(int status, std::string_view why);

  // Answers and ordering.
  std::unique_ptr<HttpExchange> acquire_exchange();
  void recycle(std::unique_ptr<HttpExchange> ex);
  static void reset_exchange(HttpExchange &ex);
  std::string &out_for(HttpExchange *ex);
  bool decide_close(const HttpExchange *ex) const;
  void append_head(std::string &out, const HttpExchange *ex, int status,
                   std::span<const HttpHeader> headers, size_t content_length, bool chunked,
                   bool close);
  void advance();
  void finish_aborted(HttpExchange *ex);
  void flush();
  void abort_pending();

  // Timer and lifetime.
  void arm(TimerKind kind, uint64_t ms);
  void rearm_timer();
  void begin_linger();
  void start_reading();
  void stop_reading();

  HttpConnectionOwner &owner_;
  uv_tcp_t tcp_{};
  uv_timer_t timer_{};
  uv_timer_t send_timer_{};  // runs while a write is in flight: a reader that stalls is closed
  uv_write_t write_req_{};
  uv_shutdown_t shutdown_req_{};
  llhttp_t parser_{};
  std::unique_ptr<TlsServerSession> tls_;  // null on a plain HTTP listener
  std::string remote_addr_;

  std::unique_ptr<HttpExchange> current_;             // request being parsed
  std::vector<std::unique_ptr<HttpExchange>> queue_;  // answered strictly in this order
  std::vector<std::unique_ptr<HttpExchange>> spare_;  // recycled exchanges
  std::string wbuf_;                                  // next bytes to write
  std::string wbuf_inflight_;                         // bytes uv_write is sending

  // Unparsed pipelined bytes kept while the pipeline is full.
  char *leftover_block_ = nullptr;
  size_t leftover_pos_ = 0;
  size_t leftover_end_ = 0;

  size_t header_raw_ = 0;  // raw bytes of the current request's head so far
  int error_status_ = 0;   // set by a parser callback before it fails the parse
  int open_handles_ = 0;
  Phase phase_ = Phase::kIdle;
  Life life_ = Life::kOpen;
  TimerKind timer_kind_ = TimerKind::kNone;
  bool reject_ = false;
  bool reading_ = false;
  bool writing_ = false;
  bool parsing_ = false;
  bool header_open_ = false;  // a header line's name/value is being received
  bool message_complete_ = false;
  bool draining_ = false;
  bool no_more_requests_ = false;  // parse nothing more; discard what arrives
  bool close_when_flushed_ = false;
};

// Wire helpers (http_status.cc).
// Case-insensitive ASCII comparison, as header names need.
bool ascii_iequals(std::string_view a, std::string_view b);
// "Sun, 06 Nov 1994 08:49:37 GMT" for now, formatted at most once a second.
std::string_view http_date_now();
// A small JSON error body for a status: {"error":"not found"}.
std::string_view http_error_body(int status);

}  // namespace cg
