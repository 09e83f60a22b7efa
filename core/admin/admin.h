// The admin listener's routes (default 127.0.0.1:18789) and the probes on
// both listeners:
//   GET /healthz            {"status":"ok"} while the process runs (both listeners)
//   GET /readyz             200 {"ready":true,...}, or 503 with the instances
//                           that are not running and why (both listeners)
//   GET /metrics            Prometheus text format 0.0.4 (admin listener)
//   GET /admin/api/status   version, uptime, listeners, counts (token)
//   GET /admin/api/plugins  every instance: kind, version, ABI, state (token)
//   GET /admin/api/history  the last hour of the charts' samples (token)
//   GET /admin/api/metrics  the same fields over the whole run (token)
//   GET /admin/api/config   the effective config, secrets masked (token)
//   GET /admin/api/logs     ?level=warn&lines=200: the last log lines (token)
//   GET /admin/api/logs/stream  ?level=info: server-sent events, the last
//                           100 lines then each new one (token)
//   GET /admin/api/conversations  ?channel=api: recent conversations (token)
//   POST /admin/api/conversations/reset  {"channel","conversation"} (token)
//   GET /admin/api/session  {"auth","csrf"} for the page, or 401
//   POST /admin/api/login   {"token"} -> a session cookie and its CSRF token
//   POST /admin/api/logout  ends the session
//   POST /admin/api/chat    the "web" channel: the chat API behind admin auth
//   POST /admin/api/reload  re-reads the config file (App::reload) (token)
//   POST /admin/api/send    {"channel","conversationId","text"[,"conversationType",
//                           "format"]}: a message from the bot through a channel
//                           plugin, not in answer to anyone (token)
//   GET /admin/...          the page (core/admin_ui, compiled in); / redirects
//
// Sessions: login sets `cg_admin`, HttpOnly, SameSite=Strict, Path=/, for
// 12 hours, kept in memory (a restart logs everyone out). Every POST but
// login must carry the session's X-CSRF-Token (also without a token, where
// the page gets it from /admin/api/session): another site's page cannot
// read it, so cannot forge the call. Bearer calls need no CSRF token (no
// ambient credential).
//
// Auth for /admin/api/: `Authorization: Bearer <admin.token>` (or the
// page's session cookie), compared in constant time; an address that sends admin.maxLoginFailures
// wrong tokens is answered 429 for admin.lockoutSeconds. Without a token (allowed only on loopback,
// see config_sections.cc) the API is open. The probes and /metrics carry no secrets and need no
// token, so load balancers and Prometheus can reach them.
//
// THREAD: not thread-safe; loop thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "admin/admin_history.h"
#include "config/config_types.h"
#include "net/http_server.h"

namespace cg {

class ConversationsPort;
class Loop;
class MessageSink;
class Metrics;
class PluginInstance;

class AdminApi {
 public:
  AdminApi(const Config &config, Loop &loop, Metrics &metrics,
           const std::vector<std::unique_ptr<PluginInstance>> &plugins, const HttpServer &api,
           ConversationsPort &conversations, MessageSink &sends);
  ~AdminApi();

  // Adds /healthz and /readyz to `server` (the API listener has its own
  // /healthz from the chat API, so `healthz` says whether to add it).
  int install_probes(HttpServer &server, bool healthz);
  // Adds /metrics and /admin/api/* (and the probes) to the admin listener.
  int install(HttpServer &admin);
  // Once the admin listener is bound: without admin.token, warns that the
  // API is open to whoever reaches that address and port (the bound one,
  // which differs from the configured one for port 0).
  void warn_if_open(int bound_port) const;
  // The check a route on the admin listener runs first (the web chat's):
  // true when the request may go on, else it is answered (401, 403, 429).
  // Valid while this AdminApi lives.
  std::function<bool(HttpExchange *, const HttpRequest &)> guard(HttpServer &admin);

  // What POST /admin/api/reload calls (App::reload's contract).
  using ReloadDone = std::function<void(int status, std::string json)>;
  void set_reload(std::function<void(ReloadDone)> reload) { reload_ = std::move(reload); }
  // After a reload applied: a changed admin.token ends every session.
  void on_reload(bool token_changed);

  // The admin page's sessions (and the CSRF token of a tokenless admin
  // API), as text for the process a handover starts, so that the page
  // stays logged in across it. The text holds the admin token, which the
  // new process compares with its own: sessions carry over only when the
  // token did not change. OWNERSHIP: the caller keeps it out of logs and
  // files (handover.cc passes it through a pipe).
  std::string export_state() const;
  // Takes the sessions export_state wrote in the process before; returns
  // how many were taken (0 when the token changed or the text is not
  // export_state's).
  size_t import_state(std::string_view text);

 private:
  void readyz(HttpServer &server, HttpExchange *ex);
  void metrics(HttpServer &server, HttpExchange *ex);
  // True when the request may use the admin API; otherwise answers it
  // (401, 403 or 429) and returns false. `state_changing` calls also need
  // the CSRF token unless they came with a Bearer token.
  bool authorize(HttpServer &server, HttpExchange *ex, const HttpRequest &req,
                 bool state_changing = false);
  // Counts a wrong token from `addr`; locks the address out at the limit.
  void count_failure(const std::string &addr);
  // The lockout answer when `addr` is locked out (and true), else false.
  bool locked_out(HttpServer &server, HttpExchange *ex, const std::string &addr);
  bool token_matches(std::string_view presented) const;
  struct Session;
  Session *session_of(const HttpRequest &req);
  void session(HttpServer &server, HttpExchange *ex, const HttpRequest &req);
  void login(HttpServer &server, HttpExchange *ex, const HttpRequest &req);
  void logout(HttpServer &server, HttpExchange *ex, const HttpRequest &req);
  void asset(HttpServer &server, HttpExchange *ex, const HttpRequest &req);
  void logs(HttpServer &server, HttpExchange *ex, const HttpRequest &req);
  void reset_conversation(HttpServer &server, HttpExchange *ex, const HttpRequest &req);
  void logs_stream(HttpServer &server, HttpExchange *ex, const HttpRequest &req);
  void reload(HttpServer &server, HttpExchange *ex, const HttpRequest &req);
  void send(HttpServer &server, HttpExchange *ex, const HttpRequest &req);
  // New log lines arrived (posted by the log ring's watcher): to each tail.
  void push_log_lines();

 public:
  // Ends every live log tail (shutdown: the listener closes after this).
  void end_streams();
  // Shutdown (or a handover) began: /readyz answers 503 from now on, so a
  // load balancer stops sending new work here while the rest drains.
  void set_shutting_down() { shutting_down_ = true; }

 private:
  std::string status() const;
  std::string queue_status() const;   // /admin/api/status's JSON
  std::string plugins() const;  // /admin/api/plugins's JSON
  void update_process_metrics();

  const Config &config_;
  Loop &loop_;
  Metrics &metrics_;
  const std::vector<std::unique_ptr<PluginInstance>> &plugins_;
  const HttpServer &api_;
  uint64_t started_ms_;
  int64_t config_loaded_at_;  // unix seconds: start, or the last reload applied
  bool shutting_down_ = false;
  struct Failures {
    uint32_t count = 0;
    uint64_t locked_until_ms = 0;
  };
  std::unordered_map<std::string, Failures> failures_;  // by client address
  std::unique_ptr<AdminHistory> history_;               // with the admin listener only
  ConversationsPort &conversations_;
  MessageSink &sends_;  // proactive sends only
  struct Session {
    std::string csrf;
    uint64_t expires_ms = 0;
  };
  std::unordered_map<std::string, Session> sessions_;  // by cookie value
  std::string open_csrf_;                              // the CSRF token when no admin.token is set
  struct Tail {
    HttpExchange *ex = nullptr;
    int min_level = 0;
    uint64_t after_seq = 0;
  };
  HttpServer *admin_server_ = nullptr;  // the admin listener, once install() ran
  std::vector<Tail> tails_;             // live /admin/api/logs/stream answers
  std::function<void(ReloadDone)> reload_;
};

}  // namespace cg
