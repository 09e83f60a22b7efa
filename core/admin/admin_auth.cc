// Admin auth: the token (Bearer or the page's session cookie), sessions,
// login and logout, the lockout after wrong tokens, and CSRF checks.
#include <simdjson.h>
#include <spdlog/spdlog.h>

#include <charconv>
#include <ctime>
#include <string>

#include "admin/admin.h"
#include "admin/admin_internal.h"
#include "base/loop.h"

namespace cg {
namespace {

constexpr size_t kMaxTrackedAddresses = 4096;
constexpr size_t kMaxSessions = 64;
constexpr uint64_t kSessionTtlMs = uint64_t{12} * 3600 * 1000;

// Compares a presented value with a secret in time that depends only on
// the secret's length (and the presented length, which the sender knows):
// no early exit reveals how much of a guess was right. Plain code rather
// than OpenSSL's CRYPTO_memcmp: initializing libcrypto costs every process
// some 2.5 MB of memory.
bool secret_equal(std::string_view presented, std::string_view secret) {
  volatile unsigned char diff = presented.size() == secret.size() ? 0 : 1;
  for (size_t i = 0; i < secret.size(); ++i) {
    const unsigned char p = i < presented.size() ? static_cast<unsigned char>(presented[i]) : 0;
    diff = diff | static_cast<unsigned char>(p ^ static_cast<unsigned char>(secret[i]));
  }
  return diff == 0 && !secret.empty();
}

// True when the request names this host by a loopback name or address. An
// admin listener without a token answers only such requests: a web page
// whose DNS name was rebound to 127.0.0.1 sends its own name in Host.
bool loopback_host(const HttpRequest &req) {
  std::string_view host = req.header("Host");
  if (host.starts_with("[")) {
    host = host.substr(0, host.find(']') + 1);
  } else {
    host = host.substr(0, host.find(':'));
  }
  return host == "localhost" || host == "[::1]" || host.starts_with("127.");
}

}  // namespace

bool AdminApi::token_matches(std::string_view presented) const {
  return secret_equal(presented, config_.admin.token);
}

bool AdminApi::locked_out(HttpServer &server, HttpExchange *ex, const std::string &addr) {
  auto it = failures_.find(addr);
  const uint64_t now = loop_.now_ms();
  if (it == failures_.end() || it->second.locked_until_ms <= now) return false;
  const std::string retry = std::to_string((it->second.locked_until_ms - now + 999) / 1000);
  respond_json(server, ex, 429, R"({"error":"too many failed logins; try again later"})",
               {"Retry-After", retry});
  return true;
}

void AdminApi::count_failure(const std::string &addr) {
  const uint64_t now = loop_.now_ms();
  auto it = failures_.find(addr);
  if (it == failures_.end()) {
    if (failures_.size() >= kMaxTrackedAddresses) {
      std::erase_if(failures_, [now](const auto &kv) { return kv.second.locked_until_ms <= now; });
    }
    it = failures_.emplace(addr, Failures{}).first;
  }
  if (++it->second.count >= config_.admin.max_failures) {
    it->second.count = 0;
    it->second.locked_until_ms = now + config_.admin.lockout_seconds * 1000;
    spdlog::warn("listener 'admin': {} wrong admin tokens from {}; locked out for {} s",
                 config_.admin.max_failures, addr, config_.admin.lockout_seconds);
  }
}

AdminApi::Session *AdminApi::session_of(const HttpRequest &req) {
  std::string_view cookies = req.header("Cookie");
  constexpr std::string_view kName = "cg_admin=";
  while (!cookies.empty()) {
    const size_t semi = cookies.find(';');
    std::string_view c = cookies.substr(0, semi);
    while (!c.empty() && c.front() == ' ') c.remove_prefix(1);
    if (c.starts_with(kName)) {
      auto it = sessions_.find(std::string(c.substr(kName.size())));
      if (it == sessions_.end()) return nullptr;
      if (it->second.expires_ms <= loop_.now_ms()) {
        sessions_.erase(it);
        return nullptr;
      }
      return &it->second;
    }
    if (semi == std::string_view::npos) break;
    cookies.remove_prefix(semi + 1);
  }
  return nullptr;
}

bool AdminApi::authorize(HttpServer &server, HttpExchange *ex, const HttpRequest &req,
                         bool state_changing) {
  const std::string_view csrf = req.header("X-CSRF-Token");
  auto csrf_ok = [&csrf](const std::string &want) { return secret_equal(csrf, want); };
  if (config_.admin.token.empty()) {
    if (!loopback_host(req)) {
      respond_json(server, ex, 403,
                   R"({"error":"without admin.token only loopback host names are served"})");
      return false;
    }
    if (state_changing && !csrf_ok(open_csrf_)) {
      respond_json(server, ex, 403, R"({"error":"missing or wrong X-CSRF-Token"})");
      return false;
    }
    return true;
  }
  const std::string addr(req.remote_addr());
  if (locked_out(server, ex, addr)) return false;
  const std::string_view auth = req.header("Authorization");
  constexpr std::string_view kBearer = "Bearer ";
  if (auth.starts_with(kBearer) && auth.size() > kBearer.size()) {
    if (token_matches(auth.substr(kBearer.size()))) {
      failures_.erase(addr);
      return true;
    }
    count_failure(addr);
    respond_json(server, ex, 401, R"({"error":"wrong admin token"})",
                 {"WWW-Authenticate", "Bearer"});
    return false;
  }
  if (const Session *s = session_of(req)) {
    if (state_changing && !csrf_ok(s->csrf)) {
      respond_json(server, ex, 403, R"({"error":"missing or wrong X-CSRF-Token"})");
      return false;
    }
    return true;
  }
  // No credentials at all is not an attack on the token: no count.
  respond_json(server, ex, 401, R"({"error":"admin token required"})",
               {"WWW-Authenticate", "Bearer"});
  return false;
}

void AdminApi::session(HttpServer &server, HttpExchange *ex, const HttpRequest &req) {
  if (config_.admin.token.empty()) {
    if (authorize(server, ex, req)) {
      respond_json(server, ex, 200, "{\"auth\":\"none\",\"csrf\":\"" + open_csrf_ + "\"}");
    }
    return;
  }
  if (const Session *s = session_of(req)) {
    respond_json(server, ex, 200, "{\"auth\":\"token\",\"csrf\":\"" + s->csrf + "\"}");
    return;
  }
  respond_json(server, ex, 401, R"({"error":"not logged in"})");
}

void AdminApi::login(HttpServer &server, HttpExchange *ex, const HttpRequest &req) {
  if (config_.admin.token.empty()) {
    if (authorize(server, ex, req))
      respond_json(server, ex, 200, "{\"csrf\":\"" + open_csrf_ + "\"}");
    return;
  }
  const std::string addr(req.remote_addr());
  if (locked_out(server, ex, addr)) return;
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  std::string_view token;
  if (parser.parse(req.body().data(), req.body().size()).get(doc) != simdjson::SUCCESS ||
      doc["token"].get(token) != simdjson::SUCCESS) {
    respond_json(server, ex, 400, R"({"error":"expected {\"token\": \"...\"}"})");
    return;
  }
  if (!token_matches(token)) {
    count_failure(addr);
    respond_json(server, ex, 401, R"({"error":"wrong admin token"})");
    return;
  }
  failures_.erase(addr);
  const uint64_t now = loop_.now_ms();
  std::erase_if(sessions_, [now](const auto &kv) { return kv.second.expires_ms <= now; });
  if (sessions_.size() >= kMaxSessions) sessions_.erase(sessions_.begin());
  const std::string id = random_hex(32);
  Session &s = sessions_[id];
  s.csrf = random_hex(32);
  s.expires_ms = now + kSessionTtlMs;
  // Secure once the admin listener serves TLS: the browser then never sends
  // the session over plain HTTP.
  const std::string cookie = "cg_admin=" + id + "; Path=/; HttpOnly; SameSite=Strict; Max-Age=" +
                             std::to_string(kSessionTtlMs / 1000) +
                             (server.config().tls.enabled() ? "; Secure" : "");
  respond_json(server, ex, 200, "{\"csrf\":\"" + s.csrf + "\"}", {"Set-Cookie", cookie});
}

void AdminApi::logout(HttpServer &server, HttpExchange *ex, const HttpRequest &req) {
  if (!authorize(server, ex, req, true)) return;
  std::string_view cookies = req.header("Cookie");
  if (const size_t at = cookies.find("cg_admin="); at != std::string_view::npos) {
    std::string_view id = cookies.substr(at + 9);
    id = id.substr(0, id.find(';'));
    sessions_.erase(std::string(id));
  }
  respond_json(server, ex, 200, R"({"loggedOut":true})",
               {"Set-Cookie", "cg_admin=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"});
}

void AdminApi::on_reload(bool token_changed) {
  config_loaded_at_ = static_cast<int64_t>(std::time(nullptr));
  if (!token_changed) return;
  sessions_.clear();
  failures_.clear();
  spdlog::info("listener 'admin': admin.token changed; every admin session ended");
}

namespace {

constexpr std::string_view kStateHeader = "chatgate-admin-state 1\n";

bool from_hex(std::string_view hex, std::string *out) {
  if (hex.size() % 2 != 0) return false;
  auto value = [](char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
  };
  out->clear();
  for (size_t i = 0; i < hex.size(); i += 2) {
    const int hi = value(hex[i]), lo = value(hex[i + 1]);
    if (hi < 0 || lo < 0) return false;
    out->push_back(static_cast<char>(hi * 16 + lo));
  }
  return true;
}

// Splits off the text up to the next `sep` (or all of it).
std::string_view next_field(std::string_view *text, char sep) {
  const size_t at = text->find(sep);
  const std::string_view field = text->substr(0, at);
  *text = at == std::string_view::npos ? std::string_view() : text->substr(at + 1);
  return field;
}

}  // namespace

std::string AdminApi::export_state() const {
  const uint64_t now = loop_.now_ms();
  std::string out(kStateHeader);
  out += "token " + to_hex(config_.admin.token) + "\n";
  out += "open-csrf " + open_csrf_ + "\n";
  for (const auto &[id, s] : sessions_) {
    if (s.expires_ms <= now) continue;
    out += "session " + id + " " + s.csrf + " " + std::to_string(s.expires_ms - now) + "\n";
  }
  return out;
}

size_t AdminApi::import_state(std::string_view text) {
  if (!text.starts_with(kStateHeader)) return 0;
  text.remove_prefix(kStateHeader.size());
  const uint64_t now = loop_.now_ms();
  size_t taken = 0;
  bool token_ok = false;
  while (!text.empty()) {
    std::string_view line = next_field(&text, '\n');
    const std::string_view kind = next_field(&line, ' ');
    if (kind == "token") {
      std::string token;
      token_ok = from_hex(line, &token) && (secret_equal(token, config_.admin.token) ||
                                            (token.empty() && config_.admin.token.empty()));
      if (!token_ok) return 0;  // another token: the sessions end, as at a reload
    } else if (kind == "open-csrf" && token_ok) {
      if (!line.empty()) open_csrf_ = std::string(line);
    } else if (kind == "session" && token_ok && sessions_.size() < kMaxSessions) {
      const std::string_view id = next_field(&line, ' ');
      const std::string_view csrf = next_field(&line, ' ');
      uint64_t left = 0;
      if (id.empty() || csrf.empty() ||
          std::from_chars(line.data(), line.data() + line.size(), left).ec != std::errc() ||
          left > kSessionTtlMs) {
        continue;
      }
      sessions_[std::string(id)] = Session{std::string(csrf), now + left};
      taken++;
    }
  }
  return taken;
}

}  // namespace cg
