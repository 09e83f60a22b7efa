// Outbound HTTP(S) for plugins: libcurl's multi interface driven by the
// libuv loop (curl_multi_socket_action with a uv_poll_t per socket and a
// uv_timer_t per multi handle), so DNS (curl's threaded resolver), connect, TLS and transfer
// never block the loop thread. Connections are cached and reused by the
// multi handle; HTTP/2 is negotiated over TLS where the server offers it;
// https_proxy / no_proxy come from the environment as curl reads them.
//
// THREAD: not thread-safe; loop thread only.
#pragma once

#include <chatgate/host.h>
#define CURL_DISABLE_TYPECHECK  // calls go through dlsym'd pointers
#include <curl/curl.h>
#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "net/options.h"

namespace cg {

class Loop;

class HttpClient {
 public:
  HttpClient(Loop &loop, HttpClientConfig config);
  ~HttpClient();
  HttpClient(const HttpClient &) = delete;
  HttpClient &operator=(const HttpClient &) = delete;

  // As cg_host_api_t.http_request / http_cancel (see sdk/include/chatgate/host.h).
  int request(const cg_http_client_request_t &req, cg_http_data_cb on_data, cg_http_done_cb done,
              void *arg, uint64_t *request_id);
  int cancel(uint64_t request_id);

  // Cancels every request (their done callbacks get CG_ECANCELED on the
  // next loop turn), then frees curl and closes the handles. Call before
  // Loop::close(), which runs those deferred completions.
  void close();

  size_t active() const { return transfers_.size(); }

  // Initializes curl and the loop handles; request() does it on first use.
  // The app calls it at start when a plugin built for ABI 1.1 or newer is
  // loaded, so the first request does not pay for it on the loop thread.
  void ensure_started();

  struct Transfer;  // internal
  struct Poll;      // internal
  struct Shard;     // internal

 private:
  static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp);
  static int on_timer(CURLM *multi, long timeout_ms, void *userp);
  static void on_uv_timer(uv_timer_t *t);
  static void on_poll(uv_poll_t *p, int status, int events);
  static void on_cancelled(void *arg);
  static void on_cleanup(void *arg);
  void drive(Shard *shard, curl_socket_t s, int flags);
  void collect_done(Shard *shard);
  Shard *pick_shard();
  void finish(Transfer *t, int result);
  void close_poll(Poll *p);
  CURL *take_easy();

 public:
  // A finished transfer's handle, back to the idle pool (internal).
  void recycle_easy(CURL *e);

 private:
  static constexpr size_t kIdleEasyMax = 64;
  std::vector<CURL *> idle_easy_;

  Loop &loop_;
  HttpClientConfig config_;
  // Several multi handles, each with its own connection cache: curl 7.88
  // walks a host's whole connection list on every transfer start and end,
  // which at 1,000 parallel connections to one model server cost a fifth of
  // the loop's time; eight caches make those walks eight times shorter.
  static constexpr size_t kShards = 8;
  std::vector<std::unique_ptr<Shard>> shards_;  // empty until started
  bool closing_ = false;
  bool load_error_logged_ = false;
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, std::unique_ptr<Transfer>> transfers_;
  std::unordered_set<Poll *> polls_;
};

}  // namespace cg
