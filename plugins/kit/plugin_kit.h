// What the channel plugins (feishu.so, dingtalk.so) share on top of the C
// host API: timers that a stop runs early, outbound HTTP requests tracked
// for cancel-at-stop, a count of what is still in flight, completions
// deferred to the next loop turn, and header lookup. A static library
// linked into each plugin; nothing here crosses the ABI.
//
// THREAD: loop thread only, as every host call it makes.
#pragma once

#include <chatgate/chatgate.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kit {

// The value of header `name` (any case) among `n` headers, or "".
std::string header_value(const cg_http_header_t *headers, uint32_t n, std::string_view name);
// The same for a request on a route.
inline std::string header_value(const cg_http_request_t *req, std::string_view name) {
  return header_value(req->headers, req->header_count, name);
}

// The config value of `key`, or ""/0/false when it is unset (the schema's
// defaults make that rare).
std::string config_string(const cg_host_api_t *api, const cg_config_t *cfg, const char *key);
// The same, or nullopt when the key is unset: for a key whose absence means
// something other than "" (unsupportedReply: unset is the catalog's text,
// "" is silence).
std::optional<std::string> config_string_if_set(const cg_host_api_t *api, const cg_config_t *cfg,
                                                const char *key);
int64_t config_int(const cg_host_api_t *api, const cg_config_t *cfg, const char *key);
bool config_bool(const cg_host_api_t *api, const cg_config_t *cfg, const char *key);

// True when `text` is exactly a decimal timestamp (in units of `unit_ms`:
// 1000 for seconds, 1 for milliseconds) within `window_ms` of now, either
// side: a signed callback's freshness.
bool timestamp_fresh(std::string_view text, int64_t unit_ms, uint64_t window_ms);

// Calls done(arg, status) on the next loop turn: for completions the ABI
// forbids inside the call that started them. Returns the host's error (its
// loop is closing) without calling done.
int defer_done(const cg_host_api_t *api, cg_host_t *host, cg_done_cb done, void *arg, int status);

class PluginBase {
 public:
  virtual ~PluginBase() = default;

  const cg_host_api_t *api = nullptr;
  cg_host_t *host = nullptr;
  std::string name;  // the instance's, for routes
  uint64_t request_timeout_ms = 10000;
  bool stopping = false;
  size_t in_flight = 0;  // requests and connections whose completion is due

  void log(int level, const std::string &line) const;
  // For a line that can repeat per request or per message: at most one a
  // second per `cause`, with the count held back (the host's log_throttled,
  // ABI 1.4; a plain line from an older host).
  void log_limited(int level, std::string_view cause, const std::string &line) const;

  // What an end user reads for the catalog key `key`, in this instance's
  // language with the operator's override (the host's user_text, ABI 1.8),
  // or `fallback` (English) from an older host or for a key it lacks.
  std::string user_text(std::string_view key, std::string_view fallback) const;
  // The answer to a message type the channel does not read: the instance's
  // unsupportedReply when set ("" is silence), else the catalog's
  // "unsupported".
  std::string unsupported_reply(const std::optional<std::string> &configured) const;

  // Answers a route's exchange with a JSON body.
  void respond_json(cg_http_exchange_t *ex, int status, const std::string &body) const;
  // A callback refused: a 4xx with {"msg": why} and a warn line naming the
  // sender, at most one a second per reason (`why` up to its first ':');
  // the caller routes nothing.
  void refuse_callback(cg_http_exchange_t *ex, int status, const std::string &why,
                       const cg_http_request_t *req) const;

  // Runs fn after ms. At stop, stop_timers runs every pending fn at once:
  // fn must check `stopping`. False when the host refused the timer.
  bool after(uint64_t ms, std::function<void()> fn);

  using HttpFn = std::function<void(int result, const cg_http_client_response_t *resp)>;
  // An HTTP request whose completion (always on a later turn) counts in
  // in_flight and is followed by maybe_stopped(). Returns the host's error,
  // CG_ECLOSED once stopping.
  int http(std::string_view method, const std::string &url,
           const std::vector<std::pair<std::string, std::string>> &headers, std::string_view body,
           HttpFn fn);

  // Hands an inbound message to the router and tells the caller what to
  // answer the platform: taken(true) acknowledges it (the router holds it,
  // or has it already), taken(false) makes the platform deliver it again
  // (the router full, its queue unreachable, shutting down), with a warn
  // line "<why>: <retry>" at most once a second per cause. A message the
  // router can never take is acknowledged, with an error line naming
  // `label`. From ABI 1.5 through emit_message_durable: taken waits for the
  // router's answer, counted in in_flight and followed by maybe_stopped();
  // older hosts: emit_message, taken at once.
  void emit(const cg_message_t &msg, const std::string &label, const std::string &retry,
            std::function<void(bool)> taken);

  // Stop, step 1: cancels every request and runs every timer's fn now.
  void stop_io();

  // Stop, step 2: records the host's done; maybe_stopped calls it once
  // nothing is in flight and can_stop() agrees.
  void begin_stop(cg_done_cb done, void *arg);
  void maybe_stopped();

 protected:
  // Whether the instance has nothing left to finish besides in_flight;
  // it may drop state nothing can complete any more.
  virtual bool can_stop() { return true; }

 private:
  struct HttpCall;
  static void on_http_done(void *arg, int result, const cg_http_client_response_t *resp);
  struct Emit;
  static void on_emitted(void *arg, int status);
  void settle(int status, const std::string &label, const std::string &retry,
              const std::function<void(bool)> &taken) const;

  cg_done_cb stop_done_ = nullptr;
  void *stop_arg_ = nullptr;
  std::set<uint64_t> http_ids_;
  std::map<uint64_t, std::function<void()>> timers_;
};

// A platform credential (Feishu's tenant token, DingTalk's access token)
// fetched on demand and shared: one fetch at a time however many callers
// wait, kept until `refresh_before_s` before it expires (half its life when
// that is shorter), dropped by invalidate() when the platform refuses it.
class TokenCache {
 public:
  // Every waiter of a fetch: status 0 and the token, or a CG_E* and why.
  using Ready = std::function<void(int status, const std::string &token_or_why)>;
  // The end of a fetch, exactly once: status 0 with the token and its life
  // in seconds, or a CG_E* and why.
  using Settle =
      std::function<void(int status, const std::string &token_or_why, int64_t expires_in_s)>;
  // Starts a fetch; returns 0 (settle follows) or an error (it never does).
  using Fetch = std::function<int(const Settle &settle)>;

  TokenCache(PluginBase &owner, int64_t refresh_before_s, Fetch fetch);
  // fn runs at once when a fresh token is at hand, else when the fetch ends.
  void get(Ready fn);
  void invalidate();

 private:
  void settle(int status, const std::string &token_or_why, int64_t expires_in_s);

  PluginBase &owner_;
  int64_t refresh_before_s_;
  Fetch fetch_;
  std::string token_;
  uint64_t expires_ms_ = 0;
  bool fetching_ = false;
  std::vector<Ready> waiters_;
};

}  // namespace kit
